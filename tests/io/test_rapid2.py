"""RAPID2 namelists (YAML + CSV/Parquet tables) and RAPID mode through the main API and the
CLI, against RAPID's published sub-step recursion."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import xarray as xr
from rapid2_files import (
    BASIN,
    DOMAIN,
    DOWN,
    DT,
    DTR,
    STEPS,
    K,
    X,
    expected_basin,
    qext_values,
    qinit_values,
    rapid_recursion,
    write_case,
)

import hydroscale
from hydroscale.cli import main
from hydroscale.io import IOFormatError, guess_engine, open_network
from hydroscale.io.rapid import read_qinit, read_qout, read_rapid_inflow
from hydroscale.io.rapid2 import RAPID2_VERSION, read_rapid2_namelist, read_table
from hydroscale.network import RiverNetwork

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def test_a_rapid2_namelist_with_csv_tables(tmp_path):
    nml = write_case(tmp_path / "case")
    assert RAPID2_VERSION == "2.0.0b2"
    assert guess_engine(nml, "network") == "rapid2"
    case = read_rapid2_namelist(nml)
    np.testing.assert_array_equal(case.network.ids, BASIN)  # bas order; 60 is outside
    # 20, 10 -> 30; 40, 30 -> 50 -> outlet
    np.testing.assert_array_equal(case.network.downstream_ids, [30, 30, 50, 50, 0])
    np.testing.assert_array_equal(case.k_s, [K[r] for r in BASIN])  # looked up by riv
    np.testing.assert_array_equal(case.network.attrs["x"], [X[r] for r in BASIN])
    assert case.dtR_s == DTR and case.dt_s == DT
    rows = [list(DOMAIN).index(r) for r in BASIN]
    np.testing.assert_allclose(case.qext.values, qext_values()[rows])
    np.testing.assert_allclose(case.qinit, qinit_values()[rows])
    assert case.qout_path.endswith("output/Qou_tiny.nc4")
    net = open_network(nml)  # the registry's rapid2 reader
    np.testing.assert_array_equal(net.ids, BASIN)


@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow is not installed: Parquet tables are "
                    "read only with the 'parquet' extra (CSV is tested without it)")
def test_a_rapid2_namelist_with_parquet_tables(tmp_path):
    case = read_rapid2_namelist(write_case(tmp_path / "case", fmt="parquet"))
    np.testing.assert_array_equal(case.network.ids, BASIN)
    np.testing.assert_array_equal(case.k_s, [K[r] for r in BASIN])


@pytest.mark.skipif(HAS_PYARROW, reason="pyarrow is installed: the missing-extra error "
                    "cannot happen")
def test_parquet_without_pyarrow_names_the_extra(tmp_path):
    path = tmp_path / "con.parquet"
    path.write_bytes(b"PAR1....PAR1")
    with pytest.raises(ImportError, match=r"con.parquet: reading Parquet needs pyarrow, which "
                       r"is not installed: pip install 'hydroscale\[parquet\]' \(or pyarrow\), "
                       r"or give the table as CSV with the header riv,dwn"):
        read_table(path, ("riv", "dwn"))


def test_bad_namelists_name_the_key(tmp_path):
    nml = write_case(tmp_path / "case")
    text = nml.read_text()
    nml.write_text(text.replace("IS_dtR: 900", "IS_dtR: 900.5"))
    with pytest.raises(IOFormatError, match=r"nml_tiny.yml \[IS_dtR\]: the routing sub-step "
                       r"must be a positive integer number of seconds, got 900.5"):
        read_rapid2_namelist(nml)
    nml.write_text("\n".join(line for line in text.splitlines() if "kpr_pqt" not in line))
    with pytest.raises(IOFormatError, match=r"\[kpr_pqt\]: missing namelist key\(s\) "
                       r"\['kpr_pqt'\] \(RAPID2 2.0.0b2 needs"):
        read_rapid2_namelist(nml)
    nml.write_text(text)
    (tmp_path / "case" / "input" / "xpr_tiny.csv").write_text("riv,x\n10,0.1\n")
    with pytest.raises(IOFormatError, match=r"xpr_tiny.csv \[xpr\]: missing column\(s\) "
                       r"\['xpr'\]; the table has \['riv', 'x'\]"):
        read_rapid2_namelist(nml)


def test_route_rapid_takes_and_returns_dataarrays(tmp_path):
    case = read_rapid2_namelist(write_case(tmp_path / "case"))
    qout, qfinal = hydroscale.route_rapid(case.network, case.qext, case.k_s, case.x,
                                          dtR=case.dtR_s, qinit=case.qinit)
    ref_out, ref_final = expected_basin()
    assert isinstance(qout, xr.DataArray) and qout.dims == ("reach", "time")
    np.testing.assert_array_equal(qout["reach"].values, BASIN)
    np.testing.assert_array_equal(qout["time"].values, case.qext["time"].values)
    np.testing.assert_allclose(qout.values, ref_out, rtol=1e-9, atol=1e-12)
    assert qfinal.dims == ("reach",)
    np.testing.assert_allclose(qfinal.values, ref_final, rtol=1e-9, atol=1e-12)
    assert qfinal["time"].values == np.datetime64("1970-01-02T00:00")  # 8 x 3 h


def test_read_rapid_inflow_goes_straight_in_in_any_reach_order(tmp_path):
    write_case(tmp_path / "case")
    qext = read_rapid_inflow(tmp_path / "case" / "input" / "Qex_tiny.nc4")  # DOMAIN order
    order = np.array([4, 2, 0, 5, 1, 3])
    net = RiverNetwork.from_arrays(DOMAIN[order], DOWN[order])
    k = np.array([K[r] for r in net.ids])
    x = np.array([X[r] for r in net.ids])
    q0 = read_qinit(tmp_path / "case" / "input" / "Q00_tiny.nc4", net)
    qout, _ = hydroscale.route_rapid(net, qext, k, x, dtR=DTR, qinit=q0)
    np.testing.assert_array_equal(qout["reach"].values, DOMAIN)  # the input's order kept
    ref, _ = rapid_recursion(DOMAIN, DOWN, qext_values(), np.array([K[r] for r in DOMAIN]),
                             np.array([X[r] for r in DOMAIN]), DT, DTR, qinit_values())
    np.testing.assert_allclose(qout.values, ref, rtol=1e-9, atol=1e-12)


def test_route_rapid_numpy_in_numpy_out_torch_in_torch_out():
    net = RiverNetwork.from_arrays(DOMAIN, DOWN)
    k = np.array([K[r] for r in DOMAIN])
    x = np.array([X[r] for r in DOMAIN])
    q = qext_values()
    ref, ref_final = rapid_recursion(DOMAIN, DOWN, q, k, x, DT, DTR, np.zeros(6))
    out, final = hydroscale.route_rapid(net, q, k, x, dt=DT, dtR="15min")
    assert isinstance(out, np.ndarray) and out.shape == (6, STEPS) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final, ref_final, rtol=1e-9, atol=1e-12)
    qt = torch.tensor(q, requires_grad=True)
    out_t, _ = hydroscale.route_rapid(net, qt, torch.tensor(k), torch.tensor(x), dt="3h",
                                      dtR=DTR)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.detach().numpy(), ref, rtol=1e-9, atol=1e-12)
    out_t[4].sum().backward()  # d(outlet's summed Qout) / d qext
    bump = q.copy()
    bump[1, 2] += 1.0  # Qout is linear in qext: the difference is the exact derivative
    moved, _ = rapid_recursion(DOMAIN, DOWN, bump, k, x, DT, DTR, np.zeros(6))
    assert float(qt.grad[1, 2]) == pytest.approx((moved[4] - ref[4]).sum(), rel=1e-9)
    with pytest.raises(ValueError, match=r"dt is required for plain arrays"):
        hydroscale.route_rapid(net, q, k, x)
    with pytest.raises(ValueError, match=r"whole multiple of the routing sub-step"):
        hydroscale.route_rapid(net, q, k, x, dt=DT, dtR=1000)


def test_cli_routes_a_rapid2_namelist_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    nml = write_case(tmp_path / "case")
    monkeypatch.chdir(tmp_path / "case")  # RAPID2's paths are relative to where it runs
    assert main(["route", str(nml)]) == 0
    assert "RAPID mode done" in capsys.readouterr().out
    qout = read_qout(tmp_path / "case" / "output" / "Qou_tiny.nc4")
    ref_out, ref_final = expected_basin()
    np.testing.assert_array_equal(qout["reach"].values, BASIN)
    np.testing.assert_allclose(qout.values, ref_out, rtol=1e-6)  # Qout is float32
    final = read_qinit(tmp_path / "case" / "output" / "Qfi_tiny.nc4")
    np.testing.assert_allclose(final, ref_final, rtol=1e-12)
    assert main(["route", str(nml)]) == 1  # outputs exist
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["route", str(nml), "--overwrite"]) == 0
    assert main(["route", str(nml), "--steps", "3"]) == 2
    assert "is a RAPID2 namelist: it runs as it is" in capsys.readouterr().err


def test_the_cli_routes_rapid_network_with_its_inflow_through_the_route_workflow(tmp_path,
                                                                                 capsys):
    """``--network rapid:NAMELIST`` (the basin, with k and x as attributes) and ``--forcing
    rapid_inflow:Qex``: hydroscale's own Muskingum (not RAPID mode) against the oracle."""
    from hydroscale.io import open_output
    from hydroscale.routing import route_oracle

    nml = write_case(tmp_path / "case")
    qex = tmp_path / "case" / "input" / "Qex_tiny.nc4"
    out = tmp_path / "run"
    code = main(["route", "--network", f"rapid:{nml}", "--forcing", f"rapid_inflow:{qex}",
                 "--param", "k={attribute: k, units: seconds}", "--param", "x={attribute: x}",
                 "--engine", "oracle", "--set", "routing.dtype=float64", "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    q = open_output(out / "discharge.zarr")
    np.testing.assert_array_equal(q["reach"].values, BASIN)
    case = read_rapid2_namelist(nml)
    params = np.stack([case.k_s / DT, case.x], axis=1)  # k in routing steps
    inflow = case.qext.values.astype(np.float32).astype(np.float64)  # forcing is float32
    ref = np.asarray(route_oracle(case.network, inflow, "muskingum", params))
    np.testing.assert_allclose(q.values, ref, rtol=1e-6)  # the store holds float32

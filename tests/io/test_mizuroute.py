"""mizuRoute cases read with no hand edits: NTOPO + HRU runoff (mm/s, mm/d) + control file,
the network and the CatchmentInterpolator in one call, outlets as mizuRoute writes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mizuroute_files import (
    AREA_M2,
    HRU,
    RUNOFF,
    SEG,
    expected_inflow,
    write_case,
    write_ntopo,
    write_runoff,
)

from hydroscale.io import IOFormatError, guess_engine, open_network, open_series
from hydroscale.io.mizuroute import read_mizuroute
from hydroscale.models import mizuroute_inputs
from hydroscale.network import NetworkError, RiverNetwork
from hydroscale.routing import route_oracle

OUTLET_WARNING = (r"1 reaches drain to 1 Tosegment ids that are not reaches of the file and "
                  r"are outlets here: reaches \[106\] -> \[999\]")


def test_the_network_from_a_control_file_or_the_ntopo_alone(tmp_path):
    control = write_case(tmp_path / "case")
    assert guess_engine(control, "network") == "mizuroute"
    with pytest.warns(UserWarning, match=OUTLET_WARNING):
        net = open_network(control)
    np.testing.assert_array_equal(net.ids, SEG)
    # -9999, 0 and an id not in the file are outlets
    np.testing.assert_array_equal(net.downstream, [2, 2, 3, -1, -1, -1])
    np.testing.assert_array_equal(net.attrs["length"], np.full(6, 5000.0))
    ntopo = tmp_path / "case" / "ancillary_data" / "ntopo.nc"
    assert guess_engine(ntopo, "network") == "mizuroute"  # test-case names, found as aliases
    with pytest.warns(UserWarning, match=OUTLET_WARNING):
        again = open_network(ntopo)
    np.testing.assert_array_equal(again.downstream, net.downstream)


def test_lateral_inflow_is_hru_runoff_times_area(tmp_path):
    control = write_case(tmp_path / "case")
    assert guess_engine(control, "series") == "mizuroute_runoff"
    with pytest.warns(UserWarning):
        q = open_series(control)
    np.testing.assert_allclose(q.values, expected_inflow(), rtol=1e-12)
    # e.g. reach 101: HRUs 1 (2 km2) and 6 (1 km2): 2e6 * 1e-6 + 1e6 * 3e-6 = 5 m3/s on day 1
    assert q.sel(reach=101).values[0] == pytest.approx(5.0)
    np.testing.assert_array_equal(q["time"].values, np.arange("1950-01-01", "1950-01-04",
                                                              dtype="datetime64[D]"))
    assert q.attrs["units"] == "m3 s-1" and q.attrs["interval_s"] == 86400


def test_network_and_catchment_interpolator_in_one_call(tmp_path):
    control = write_case(tmp_path / "case")
    with pytest.warns(UserWarning):
        case = mizuroute_inputs(control)
    np.testing.assert_array_equal(case.network.ids, SEG)
    assert case.interval_s == 86400
    # the HRUs that drain into a reach (HRU 7 drains nowhere), with their areas in km2
    np.testing.assert_array_equal(case.hru_ids, [1, 2, 3, 4, 5, 6, 8])
    np.testing.assert_allclose(case.interpolator.cell_coverage_km2(),
                               AREA_M2[[0, 1, 2, 3, 4, 5, 7]] / 1e6)
    # depth per step in mm: mm/s x 86400 s
    np.testing.assert_allclose(case.depth.numpy(), RUNOFF[[0, 1, 2, 3, 4, 5, 7]] * 86400)
    r = case.interpolator(case.depth)
    np.testing.assert_allclose(r.numpy(), expected_inflow(), rtol=1e-12)
    # and routed: with pure_lag(0) the outlet 104 carries everything upstream of it at once
    q = np.asarray(route_oracle(case.network, r.numpy(), "pure_lag", torch.zeros(6, 1)))
    e = expected_inflow()
    np.testing.assert_allclose(q[3], e[:4].sum(0), rtol=1e-12)


def test_runoff_in_mm_per_day_stamped_at_interval_ends_through_a_name_mapping(tmp_path):
    ntopo = write_ntopo(tmp_path / "ntopo.nc")
    runoff = write_runoff(tmp_path / "ro.nc", units="mm/d", factor=1 / 86400)
    names = {"qsim": "RUNOFF", "ro_time_stamp": "end"}
    with pytest.warns(UserWarning):
        case = read_mizuroute(ntopo, runoff, names=names)
    np.testing.assert_allclose(case.lateral_inflow().values, expected_inflow(), rtol=1e-12)
    # time stamps mark the interval ends: the starts are one day earlier
    assert case.runoff["time"].values[0] == np.datetime64("1949-12-31")
    with pytest.warns(UserWarning):
        q = open_series(runoff, engine="mizuroute_runoff", ntopo=ntopo, names={"qsim": "RUNOFF"})
    np.testing.assert_allclose(q.values, expected_inflow(), rtol=1e-12)


def test_bad_mizuroute_files_name_the_file_variable_and_fix(tmp_path):
    ntopo = write_ntopo(tmp_path / "ntopo.nc", Tosegment=None)
    with pytest.raises(IOFormatError, match=r"ntopo.nc \[downSegId\]: missing variable "
                       r"'downSegId' \(downSegId\); the file has .*name it with the control "
                       r"file's <varname_downSegId> or names=\{'downSegId': 'NAME'\}"):
        read_mizuroute(ntopo)
    good = write_ntopo(tmp_path / "good.nc")
    ro = write_runoff(tmp_path / "ro.nc", units="kg")
    with pytest.warns(UserWarning), pytest.raises(
            IOFormatError, match=r"ro.nc \[RUNOFF\]: runoff units 'kg' are not a depth per "
            r"time: expected DEPTH/TIME"):
        read_mizuroute(good, ro, names={"qsim": "RUNOFF"})
    few = write_runoff(tmp_path / "few.nc", order=[0, 1, 2])
    with pytest.warns(UserWarning), pytest.raises(
            IOFormatError, match=r"few.nc \[hru\]: HRUs of the river network missing from the "
                                 r"runoff: \[4, 5, 6, 8\]"):
        read_mizuroute(good, few, names={"qsim": "RUNOFF"})
    with pytest.raises(IOFormatError, match=r"needs its river network for the HRU areas: pass "
                       r"ntopo="):
        open_series(ro, engine="mizuroute_runoff")
    control = write_case(tmp_path / "case")
    control.write_text(control.read_text().replace("<is_remap>          F",
                                                   "<is_remap>          T"))
    with pytest.raises(IOFormatError, match=r"\[is_remap\]: runoff remapped .* not read here"):
        read_mizuroute(control)


def test_from_arrays_names_the_outlet_markers_it_accepts():
    net = RiverNetwork.from_arrays(SEG[:4], [103, 103, 104, -9999])
    np.testing.assert_array_equal(net.downstream, [2, 2, 3, -1])
    with pytest.raises(NetworkError, match=r"reaches \[104\] -> downstream \[999\]; add those "
                       r"reaches, or mark outlets: a downstream id counts as an outlet when it "
                       r"is negative \(-1, -9999, ...\) or one of outlet_values=\(0,\)"):
        RiverNetwork.from_arrays(SEG[:4], [103, 103, 104, 999])
    net = RiverNetwork.from_arrays(SEG[:4], [103, 103, 104, 999], outlet_values=(0, 999))
    assert net.outlets.tolist() == [3]
    assert HRU.size == 8


def test_the_cli_routes_a_mizuroute_case(tmp_path, capsys):
    from hydroscale.cli import main
    from hydroscale.io import open_output

    control = write_case(tmp_path / "case")
    out = tmp_path / "run"
    code = main(["route", "--network", f"mizuroute:{control}", "--forcing",
                 f"mizuroute_runoff:{control}", "--irf", "pure_lag", "--param", "delay=0",
                 "--engine", "oracle", "--set", "routing.dtype=float64", "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    q = open_output(out / "discharge.zarr")
    np.testing.assert_array_equal(q["reach"].values, SEG)
    e = expected_inflow()
    # pure_lag(0): each reach's discharge is its inflow plus everything upstream of it
    np.testing.assert_allclose(q.sel(reach=104).values, e[:4].sum(0), rtol=1e-12)
    np.testing.assert_allclose(q.sel(reach=106).values, e[5], rtol=1e-12)
    # the runoff file alone: the HRU areas come from the workflow's mizuRoute network
    runoff = tmp_path / "case" / "input" / "runoff.nc"
    ntopo = tmp_path / "case" / "ancillary_data" / "ntopo.nc"
    code = main(["route", "--network", f"mizuroute:{ntopo}", "--forcing",
                 f"mizuroute_runoff:{runoff}", "--irf", "pure_lag", "--param", "delay=0",
                 "--engine", "oracle", "--set", "routing.dtype=float64", "--out",
                 str(tmp_path / "run2"), "--no-progress"])
    assert code == 1  # the runoff variable is RUNOFF, not mizuRoute's default name
    assert "runoff.nc [runoff]: missing runoff variable; the file has ['RUNOFF', 'hru', " \
           "'time']: name it with <vname_qsim> or names={'qsim': 'NAME'}" in \
           capsys.readouterr().err
    code = main(["route", "--network", f"mizuroute:{ntopo}", "--forcing",
                 f"mizuroute_runoff:{runoff}", "--set", "forcing.options={names: {qsim: RUNOFF, "
                 "units_qsim: mm/s}}", "--irf", "pure_lag", "--param", "delay=0", "--engine",
                 "oracle", "--set", "routing.dtype=float64", "--out", str(tmp_path / "run2"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    q2 = open_output(tmp_path / "run2" / "discharge.zarr")
    np.testing.assert_allclose(q2.values, q.values, rtol=1e-12)

"""Route workflows continued from restart states (routing.initial_state, output.final_state):
the same discharge as one run, bit for bit on aligned time chunks, and the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml
from workflow_cases import small_route

from hydroscale.io import ingest, open_output
from hydroscale.io.rapid import read_qout
from hydroscale.routing import RestartMismatchError, RouteState, route_oracle
from hydroscale.workflows import build_inputs, run_route, workflow_from_mapping

T, T1 = 20, 10  # the split falls on a time chunk boundary (time_chunk 5)


@pytest.fixture(scope="module")
def forcing(tmp_path_factory):
    """The tiny workflow's synthetic runoff (150 reaches x 20 days) as three forcing stores:
    all steps, the first T1 and the last T - T1."""
    root = tmp_path_factory.mktemp("forcing")
    cfg = workflow_from_mapping(small_route(root / "x", forcing={"steps": T}))
    inputs = build_inputs(cfg)
    r = inputs.forcing.read_all(0, T)
    da = xr.DataArray(r, {"reach": inputs.network.ids, "time": inputs.forcing.time},
                      ("reach", "time"), attrs={"units": "m3 s-1"})
    paths = {}
    for name, sl in (("all", slice(0, T)), ("first", slice(0, T1)), ("last", slice(T1, T))):
        paths[name] = root / f"{name}.zarr"
        ingest(da.isel(time=sl), paths[name], network=inputs.network, chunks=(64, 5))
    return paths, r.astype(np.float64), inputs


def _run(tmp_path, name, store, **routing_output):
    routing = {k: v for k, v in routing_output.items() if k in ("initial_state", "initial",
                                                                 "substeps")}
    output = {k: v for k, v in routing_output.items() if k in ("final_state", "format")}
    wf = small_route(tmp_path / name, forcing={"source": "zarr", "path": str(store),
                                               "steps": None},
                     routing=routing, output=output)
    cfg = workflow_from_mapping(wf)
    res = run_route(cfg)
    return res, open_output(res.store, build_inputs(cfg).network)


def test_continued_run_equals_one_run_bit_for_bit(tmp_path, forcing):
    paths, r, inputs = forcing
    one, q_one = _run(tmp_path, "one", paths["all"], final_state=str(tmp_path / "one.npz"))
    a, q_a = _run(tmp_path, "a", paths["first"], final_state=str(tmp_path / "a"))
    assert a.summary["final_state"] == str(tmp_path / "a.npz")
    b, q_b = _run(tmp_path, "b", paths["last"], initial_state=str(tmp_path / "a.npz"),
                  final_state=str(tmp_path / "b.npz"))
    # the store holds routing.dtype (float64) and the two halves are the one run, bit for bit
    assert q_one.dtype == np.float64
    np.testing.assert_array_equal(np.concatenate([q_a.values, q_b.values], 1), q_one.values)
    np.testing.assert_array_equal(q_b["time"].values, inputs.forcing.time[T1:])
    # and so is the state each ends with (several clusters: inlet transfer histories too)
    s_one, s_b = RouteState.load(tmp_path / "one.npz"), RouteState.load(tmp_path / "b.npz")
    assert s_one.router.inflow_hist.shape[1] > 0
    for x, y in ((s_one.router.runoff_hist, s_b.router.runoff_hist),
                 (s_one.router.inflow_hist, s_b.router.inflow_hist)):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert s_b.steps == s_one.steps == T and s_b.fingerprint == s_one.fingerprint
    assert s_b.time == np.datetime64(inputs.forcing.time[-1] + np.timedelta64(1, "D"), "s")
    # the one run is the float64 oracle's (to the kernel window's 1e-6)
    want = route_oracle(inputs.network, r, "linear_storage", inputs.params, substeps=2).numpy()
    np.testing.assert_allclose(q_one.values, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_steady_start_is_carried_by_the_state(tmp_path, forcing):
    paths, r, inputs = forcing
    _, q_one = _run(tmp_path, "one", paths["all"], initial="steady")
    _run(tmp_path, "a", paths["first"], initial="steady", final_state=str(tmp_path / "a.npz"))
    _, q_b = _run(tmp_path, "b", paths["last"], initial_state=str(tmp_path / "a.npz"))
    # the continuation subtracts the first run's first-step inflow and adds its discharge
    s = RouteState.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(s.inflow_offset[0], r[:, 0])
    want = route_oracle(inputs.network, r - r[:, :1], "linear_storage", inputs.params,
                        substeps=2).numpy() + s.discharge_offset[0][:, None]
    np.testing.assert_allclose(q_b.values, want[:, T1:], rtol=0,
                               atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(q_b.values, q_one.values[:, T1:], rtol=1e-12, atol=0)


def test_mismatched_state_file_is_refused(tmp_path, forcing):
    paths, _, _ = forcing
    _run(tmp_path, "a", paths["first"], final_state=str(tmp_path / "a.npz"))
    with pytest.raises(RestartMismatchError, match=r"a.npz' was written by another routing "
                                                   r"\(substeps: state 2, this run 1"):
        _run(tmp_path, "b", paths["last"], initial_state=str(tmp_path / "a.npz"), substeps=1)
    with pytest.raises(RestartMismatchError, match=r"ends at 2000-01-11T00:00:00 .* this "
                                                   r"run's first step starts at 2000-01-01"):
        _run(tmp_path, "c", paths["all"], initial_state=str(tmp_path / "a.npz"))
    with pytest.raises(FileNotFoundError, match=r"nope.npz' does not exist"):
        _run(tmp_path, "d", paths["last"], initial_state=str(tmp_path / "nope.npz"))


def test_restart_keys_cross_checked(tmp_path):
    wf = small_route(tmp_path, routing={"initial_state": "s.npz", "initial": "steady",
                                        "engine": "oracle"},
                     output={"final_state": "f.npz"})
    with pytest.raises(ValueError) as err:
        workflow_from_mapping(wf)
    text = str(err.value)
    assert "the oracle engine carries no state" in text
    assert "routing.initial_state and routing.initial 'steady'" in text


def test_cli_format_and_state_flags(tmp_path, forcing, capsys):
    from hydroscale.cli import EXIT_OK, main

    paths, r, inputs = forcing
    wf = tmp_path / "tiny.yaml"
    wf.write_text(yaml.safe_dump(small_route(tmp_path / "unused")))
    common = [str(wf), "--no-progress", "--set", "forcing.steps=null"]
    assert main(["route", *common, "--forcing", str(paths["first"]), "--out",
                 str(tmp_path / "a"), "--format", "netcdf",
                 "--final-state", str(tmp_path / "a.npz")]) == EXIT_OK
    assert main(["route", *common, "--forcing", str(paths["last"]), "--out",
                 str(tmp_path / "b"), "--format", "rapid",
                 "--initial-state", str(tmp_path / "a.npz")]) == EXIT_OK
    capsys.readouterr()
    a = xr.open_dataset(tmp_path / "a" / "discharge.nc").load()
    assert a["discharge"].attrs["units"] == "m3 s-1" and a["discharge"].dtype == np.float64
    np.testing.assert_array_equal(a["time"].values, inputs.forcing.time[:T1])
    b = read_qout(tmp_path / "b" / "discharge.nc", inputs.network)  # RAPID Qout, float32
    np.testing.assert_array_equal(a["reach"].values, inputs.network.ids)
    both = np.concatenate([a["discharge"].values, b.values.astype(np.float64)], 1)
    want = route_oracle(inputs.network, r, "linear_storage", inputs.params, substeps=2).numpy()
    np.testing.assert_allclose(both, want, rtol=0, atol=2e-6 * np.abs(want).max())

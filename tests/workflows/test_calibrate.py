"""The calibrate workflow: twin observations, training, outputs, resume, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from workflow_cases import small_calibrate

from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle
from hydroscale.workflows import (
    WorkflowError,
    build_inputs,
    build_params,
    run_calibrate,
    twin_gauges,
    workflow_from_mapping,
)
from hydroscale.workflows._calibrate import _per_step_means


def test_twin_calibration_outputs_and_loss_decrease(tmp_path):
    cfg = workflow_from_mapping(small_calibrate(tmp_path / "c"))
    s = run_calibrate(cfg)
    assert s["iterations"] == 4 and s["gauges"] == 5 and s["engine"] == "levels"
    hist = json.loads((tmp_path / "c" / "history.json").read_text())
    assert len(hist["loss"]) == 4 and hist["loss"][-1] < hist["loss"][0]
    assert s["loss"]["last"] == hist["loss"][-1]
    lr = cfg["calibration"]["lr"]  # nobody steered: one rate, no actions, ended by itself
    assert hist["lr"] == [lr] * 4 and hist["actions"] == [] and s["ended"] == "done"
    assert s["lr"] == {"first": lr, "last": lr} and s["actions"] == 0
    assert len(hist["val_loss"]) == 4
    with np.load(tmp_path / "c" / "parameters.npz") as z:
        inputs = build_inputs(cfg)
        assert z["reach"].tolist() == inputs.network.ids.tolist()
        assert z["names"].tolist() == ["tau"] and z["values"].shape == (80, 1)
        assert 0.2 <= z["values"].min() and z["values"].max() <= 4.0
    assert (tmp_path / "c" / "hydrographs.png").stat().st_size > 10_000
    assert list((tmp_path / "c" / "checkpoints").glob("calibration-*.pt"))
    err = s["param_rel_error_median"]["tau"]
    truth = build_params({"irf": "linear_storage", "params": cfg["observations"]["truth"]},
                         inputs.network, 86400.0)
    assert err["first_guess"] == pytest.approx(float(((1.0 - truth) / truth).abs().median()))


def test_twin_observations_are_the_oracle_at_the_gauges(tmp_path, monkeypatch):
    import hydroscale.calibration as cal_mod

    seen = {}
    real = cal_mod.Calibrator

    def spy(network, runoff, observations, model, **kw):
        seen["obs"] = observations
        return real(network, runoff, observations, model, **kw)

    monkeypatch.setattr(cal_mod, "Calibrator", spy)
    cfg = workflow_from_mapping(small_calibrate(tmp_path / "c",
                                                calibration={"iterations": 1}))
    run_calibrate(cfg)
    inputs = build_inputs(cfg)
    truth = build_params({"irf": "linear_storage", "params": cfg["observations"]["truth"]},
                         inputs.network, 86400.0)
    q = np.asarray(route_oracle(inputs.network, inputs.forcing.read_all(0, 24).astype(np.float64),
                                "linear_storage", truth))
    g = twin_gauges(inputs.network, 5)
    obs = seen["obs"]
    assert obs.ids.tolist() == inputs.network.ids[g].tolist()
    np.testing.assert_allclose(obs.values, q[g], rtol=1e-12)


def test_resume_continues_the_same_trajectory(tmp_path):
    straight = run_calibrate(workflow_from_mapping(small_calibrate(tmp_path / "a")))
    run_calibrate(workflow_from_mapping(small_calibrate(tmp_path / "b",
                                                        calibration={"iterations": 2})))
    resumed = run_calibrate(workflow_from_mapping(small_calibrate(
        tmp_path / "b", calibration={"iterations": 4, "resume": True})))
    assert resumed["iterations"] == 4 and resumed["resumed_from"].endswith("00000002.pt")
    with np.load(tmp_path / "a" / "parameters.npz") as a, \
            np.load(tmp_path / "b" / "parameters.npz") as b:
        np.testing.assert_allclose(b["values"], a["values"], rtol=1e-12)
    assert resumed["loss"]["last"] == pytest.approx(straight["loss"]["last"], rel=1e-12)


def test_twin_gauges_outlets_first():
    net = continental_forest(400, seed=3)
    g = twin_gauges(net, 6)
    size = np.bincount(net.basin, minlength=net.n_reaches)
    n_out = min(6, net.outlets.size)
    assert sorted(size[g[:n_out]].tolist(), reverse=True) == \
        sorted(size[net.outlets].tolist(), reverse=True)[:n_out]
    assert np.unique(g).size == g.size


def test_per_step_means_hand_computed():
    t = np.array(["2021-01-01T00:00", "2021-01-01T00:30", "2021-01-01T01:15",
                  "2021-01-01T03:00"], dtype="datetime64[ns]")
    obs = xr.DataArray([[1.0, 3.0, np.nan, 9.0], [2.0, np.nan, 4.0, 5.0]],
                       {"reach": [1, 2], "time": t}, ("reach", "time"))
    starts = np.array(["2021-01-01T00:00", "2021-01-01T01:00", "2021-01-01T02:00"],
                      dtype="datetime64[ns]")
    got = _per_step_means(obs, starts, 3600.0)
    np.testing.assert_array_equal(got, [[2.0, np.nan, np.nan], [2.0, 4.0, np.nan]])


@pytest.mark.parametrize("change, expected", [
    ({"observations": {"truth": None}}, "observations.truth: required"),
    ({"observations": {"source": "file"}}, "observations.path: required"),
    ({"model": {"bounds": {"k": [1, 2]}}}, "model.bounds: IRF 'linear_storage' takes ['tau']; "
                                            "unknown ['k']"),
    ({"model": {"bounds": {"tau": [2, 1]}}}, "bounds of 'tau': expected [low, high] with low < "
                                             "high"),
    ({"model": {"kind": "mlp"}}, "model.attributes: required with model.kind 'mlp'"),
    ({"calibration": {"loss": "rmse"}}, "calibration.loss: expected one of 'nse', 'kge', "
                                        "'vnmse'"),
    ({"observations": {"source": "lower_colorado"}}, "needs network.source 'lower_colorado'"),
])
def test_invalid_calibrate_workflows(tmp_path, change, expected):
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(small_calibrate(tmp_path, **change))
    assert expected in str(err.value)


def test_file_observations_must_share_the_time_axis(tmp_path):
    csv = tmp_path / "obs.csv"
    csv.write_text("time,1\n2000-01-01,1.0\n2000-01-02,2.0\n")
    wf = small_calibrate(tmp_path / "c", observations={"source": "file", "path": str(csv),
                                                       "truth": None})
    with pytest.raises(ValueError, match="has 2 steps, the forcing 24"):
        run_calibrate(workflow_from_mapping(wf))


def test_cluster_needs_a_multi_device_engine(tmp_path):
    wf = small_calibrate(tmp_path / "c")
    wf["cluster"] = "local-cpu"
    with pytest.raises(WorkflowError, match="routing.engine 'levels' is single-device"):
        workflow_from_mapping(wf)


def test_calibrate_command_on_a_cluster(tmp_path, capsys):
    """`hydroscale calibrate --cluster CONFIG`: the distributed gradient on two workers
    prints the calibration page's URL and follows the single-device trajectory."""
    import yaml
    from distributed import LocalCluster

    from hydroscale.cli import EXIT_OK, main

    one = run_calibrate(workflow_from_mapping(small_calibrate(tmp_path / "one")))
    wf = small_calibrate(tmp_path / "c", routing={"engine": "auto"})
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(wf))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as lc:
        cluster = tmp_path / "cluster.yaml"
        cluster.write_text(yaml.safe_dump({"kind": "scheduler",
                                           "address": lc.scheduler_address}))
        assert main(["calibrate", str(path), "--cluster", str(cluster),
                     "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "calibration page: http://" in out and "/calibration" in out
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["engine"] == "distributed" and s["device"] == "2 workers"
    assert s["dashboard"].endswith("/calibration")
    hist = json.loads((tmp_path / "c" / "history.json").read_text())
    want = json.loads((tmp_path / "one" / "history.json").read_text())
    np.testing.assert_allclose(hist["loss"], want["loss"], rtol=1e-6)
    with np.load(tmp_path / "c" / "parameters.npz") as a, \
            np.load(tmp_path / "one" / "parameters.npz") as b:
        np.testing.assert_allclose(a["values"], b["values"], rtol=1e-6)
    assert s["nse_median"]["last"] == pytest.approx(one["nse_median"]["last"], rel=1e-6)

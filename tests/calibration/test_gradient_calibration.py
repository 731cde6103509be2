"""The distributed calibrator over iterations on a 2-worker CPU LocalCluster: checkpoint and
resume reproduce the trajectory, and a worker killed mid-iteration is recovered from the
per-iteration snapshots without changing the trajectory."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from hydroscale.calibration import (
    DISTRIBUTED_CHECKPOINT_FORMAT,
    DistributedCalibrator,
    GaugeObservations,
    latest_checkpoint,
)
from hydroscale.models import FreeParameters
from hydroscale.routing import route_oracle

T = 24
BOUNDS = {"k": (0.2, 1.5), "x": (0.0, 0.45)}
RESTART_TIMEOUT = 300.0  # seconds for a killed worker to be back (a busy machine): generous


@pytest.fixture(scope="module")
def twin(forest):
    net, params, _ = forest
    rng = np.random.default_rng(5)
    runoff = rng.uniform(0.0, 5.0, (net.n_reaches, T))
    q = route_oracle(net, runoff, "muskingum", params, allow_unstable=True).numpy()
    gauges = np.sort(rng.choice(net.n_reaches, 20, replace=False))
    return runoff, GaugeObservations(net.ids[gauges], q[gauges])


def _calibrator(client, forest, twin, ckdir, **kw):
    net, _, part = forest
    runoff, obs = twin
    model = FreeParameters("muskingum", net, BOUNDS, dtype=torch.float64)
    return DistributedCalibrator(client, net, runoff, obs, model, partition=part, window=T,
                                 warmup=2, lr=0.05, gauge_fraction=0.6, seed=7,
                                 checkpoint_dir=ckdir, checkpoint_every=2,
                                 dtype=torch.float64, allow_unstable=True, **kw)


def test_checkpoint_resume_reproduces_the_trajectory(client, forest, twin, tmp_path,
                                                     one_torch_thread):
    with _calibrator(client, forest, twin, tmp_path / "a") as full:
        full.run(4)
        want = full.update_model()().detach().numpy()
    with _calibrator(client, forest, twin, tmp_path / "b") as part:
        part.run(3)  # checkpoints at 2 and at the end (3)
    ck = tmp_path / "b" / "calibration-00000002.pt"
    # the client's file and the workers' files hold tensors and plain containers only
    state = torch.load(ck, weights_only=True)
    assert state["format"] == DISTRIBUTED_CHECKPOINT_FORMAT and state["iteration"] == 2
    files = sorted((tmp_path / "b" / "calibration-00000002.workers").glob("worker-*.pt"))
    assert len(files) == 2
    w = torch.load(files[1], weights_only=True)
    assert w["iteration"] == 2 and w["optimizer"]["state"][0]["step"] == 2
    with _calibrator(client, forest, twin, tmp_path / "b") as resumed:
        torch.manual_seed(999)  # restored by the checkpoint
        assert resumed.load_checkpoint(ck) == 2
        resumed.run(4)
        got = resumed.update_model()().detach().numpy()
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert latest_checkpoint(tmp_path / "b").name == "calibration-00000004.pt"


@pytest.mark.usefixtures("whole_cluster")  # both workers before and after (tests/conftest.py)
def test_worker_killed_mid_iteration_is_recovered(client, forest, twin, tmp_path,
                                                  one_torch_thread):
    """Kill worker 1 (SIGKILL to its process) during the backward waves of iteration 3: the
    iteration is redone from the snapshot of iteration 2 on the restarted worker, and the
    trajectory equals the undisturbed one."""
    with _calibrator(client, forest, twin, tmp_path / "calm") as calm:
        calm.run(4)
        want = calm.update_model()().detach().numpy()
    with _calibrator(client, forest, twin, tmp_path / "killed",
                     engine_options={"worker_timeout": RESTART_TIMEOUT}) as cal:
        killed = []
        pids = client.run(os.getpid)

        def kill(ev):
            if (ev["kind"] == "progress" and ev["iteration"] == 3 and ev["phase"] == "backward"
                    and ev["wave"] >= 1 and not killed):
                victim = cal.engine.addrs[1]
                killed.append(victim)
                os.kill(pids[victim], signal.SIGKILL)

        cal.add_listener(kill)
        cal.run(4)
        got = cal.update_model()().detach().numpy()
        assert killed and killed[0] not in cal.engine.addrs  # restarted under a new address
        assert cal.engine.recoveries == 1
    np.testing.assert_array_equal(cal.history["loss"], calm.history["loss"])
    np.testing.assert_array_equal(got, want)

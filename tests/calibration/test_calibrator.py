"""LevelRouter against the float64 oracle (values and gradients); the Calibrator: twin
experiment on 5k reaches, checkpoint-resume reproducing the trajectory, stop, engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.calibration import Calibrator, GaugeObservations, LevelRouter, latest_checkpoint
from hydroscale.models import FreeParameters
from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle


def _upstream_counts(net) -> np.ndarray:
    up = np.ones(net.n_reaches)
    down = net.downstream
    for i in net.topo_order:
        if down[i] >= 0:
            up[down[i]] += up[i]
    return up


@pytest.mark.parametrize("irf,p0,f", [("muskingum", [1.2, 0.2], 1), ("muskingum", [1.2, 0.2], 3),
                                      ("linear_storage", [2.0], 2)])
def test_level_router_matches_oracle(irf, p0, f):
    net = continental_forest(300, seed=2)
    g = torch.Generator().manual_seed(0)
    r = torch.rand(2, 300, 40, dtype=torch.float64, generator=g)
    p = torch.tensor([p0], dtype=torch.float64) * (0.5 + torch.rand(300, 1, generator=g,
                                                                     dtype=torch.float64))
    router = LevelRouter(net, irf=irf, substeps=f, window=40, allow_unstable=True)
    q = router(r, p)
    want = route_oracle(net, r, irf, p, substeps=f, allow_unstable=True)
    np.testing.assert_allclose(q.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    # 40 steps of a kernel of 40 steps: the window truncates nothing that reaches the output
    assert router.truncated_mass.shape == (300,)


def test_level_router_gradient_matches_oracle_autograd():
    net = continental_forest(120, seed=5)
    g = torch.Generator().manual_seed(1)
    r = torch.rand(1, 120, 30, dtype=torch.float64, generator=g)
    p0 = torch.stack([1 + torch.rand(120, generator=g, dtype=torch.float64),
                      0.1 + 0.2 * torch.rand(120, generator=g, dtype=torch.float64)], -1)
    w = torch.rand(1, 120, 30, dtype=torch.float64, generator=g)
    grads = []
    for fn in (lambda p: LevelRouter(net, irf="muskingum", window=30, allow_unstable=True)(r, p),
               lambda p: route_oracle(net, r, "muskingum", p, allow_unstable=True)):
        p = p0.clone().requires_grad_(True)
        (fn(p) * w).sum().backward()
        grads.append(p.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def _twin(n: int, t: int, n_gauges: int, seed: int = 0):
    """A network, runoff, true Muskingum parameters and oracle observations at gauges."""
    net = continental_forest(n, seed=3 + seed)
    rng = np.random.default_rng(seed)
    true = np.stack([rng.uniform(0.5, 2.0, n), rng.uniform(0.05, 0.3, n)], -1)
    runoff = rng.uniform(0.0, 1.0, (n, t))
    cand = np.flatnonzero(_upstream_counts(net) >= 20)
    gauges = rng.choice(cand, n_gauges, replace=False)
    q = route_oracle(net, runoff, "muskingum", true, allow_unstable=True).numpy()
    return net, runoff, true, GaugeObservations(net.ids[gauges], q[gauges])


def test_twin_experiment_reaches_nse_099_at_every_gauge(one_torch_thread):
    """5k reaches, 30 gauges, observations from the float64 oracle with the true parameters;
    the calibration starts from the middle of the bounds (NSE < 0 at the worst gauge)."""
    net, runoff, _, obs = _twin(5000, 100, 30)
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
    cal = Calibrator(net, runoff, obs, model, engine="levels",
                     warmup=16, lr=0.1, allow_unstable=True)
    hist = cal.run(300, target_nse=0.99)
    assert hist["nse_min"][0] < 0.5  # the start is far off
    assert cal.iteration <= 300
    # NSE of the final parameters, recomputed independently with the oracle
    params = model().detach().double()
    q = route_oracle(net, runoff, "muskingum", params, allow_unstable=True)
    g = obs.index_in(net)
    from hydroscale.calibration import nse

    final = nse(q[g, 16:], torch.as_tensor(obs.values[:, 16:]))
    assert final.shape == (30,)
    assert float(final.min()) >= 0.99


def test_checkpoint_resume_reproduces_the_trajectory(tmp_path):
    net, runoff, _, obs = _twin(400, 40, 8, seed=1)

    def make(ckdir):
        model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
        return Calibrator(net, runoff, obs, model, engine="levels",
                          warmup=8, lr=0.05, gauge_fraction=0.5, seed=7, checkpoint_dir=ckdir,
                          checkpoint_every=3, allow_unstable=True)

    full = make(tmp_path / "a")
    full.run(8)
    part = make(tmp_path / "b")
    part.run(5)  # checkpoints at 3 and 5 (the final one)
    resumed = make(tmp_path / "b")
    assert resumed.load_checkpoint(tmp_path / "b" / "calibration-00000003.pt") == 3
    torch.manual_seed(12345)  # the global RNG state is restored by the checkpoint anyway
    resumed.load_checkpoint(tmp_path / "b" / "calibration-00000003.pt")
    resumed.run(8)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(resumed.model().detach().numpy(), full.model().detach().numpy(),
                               rtol=1e-6, atol=1e-7)
    assert latest_checkpoint(tmp_path / "a").name == "calibration-00000008.pt"
    # the checkpoint holds tensors and plain containers only
    state = torch.load(latest_checkpoint(tmp_path / "a"), weights_only=True)
    assert state["iteration"] == 8 and set(state["rng"]) >= {"torch", "generator"}


def test_stop_from_a_listener_and_engines_agree(tmp_path, one_torch_thread):
    """The level-by-level and the block-sparse engines give the same trajectory; "auto" picks
    the registry's choice for the device."""
    from hydroscale.routing import select_engine

    net, runoff, _, obs = _twin(150, 30, 4, seed=2)
    losses = {}
    for engine in ("levels", "torch", "auto"):
        model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
        opts = {"window": 30, "max_reaches": 64} if engine == "torch" else {"window": 30}
        cal = Calibrator(net, runoff, obs, model, engine=engine, engine_options=opts,
                         checkpoint_dir=tmp_path / engine, allow_unstable=True)
        cal.add_listener(lambda ev, c=cal: ev["kind"] == "iteration" and ev["iteration"] >= 2
                         and c.control.stop())
        cal.run(50)
        assert cal.iteration == 2
        assert latest_checkpoint(tmp_path / engine).name == "calibration-00000002.pt"
        losses[engine] = cal.history["loss"]
        if engine == "auto":
            assert cal.engine_name == select_engine("cpu").name
    np.testing.assert_allclose(losses["torch"], losses["levels"], rtol=1e-4)
    np.testing.assert_allclose(losses["auto"], losses["levels"], rtol=1e-4)


def test_records_train_and_validation_metrics_of_the_routed_parameters(one_torch_thread):
    """The record of iteration i holds the metrics of the parameters routed in iteration i
    (before its update), on the training and validation periods after warm-up."""
    from hydroscale.calibration import Period, kge, nse

    net, runoff, _, obs = _twin(200, 40, 5, seed=4)
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)},
                           dtype=torch.float64)
    cal = Calibrator(net, runoff, obs, model, engine="levels", engine_options={"window": 40},
                     loss="kge", warmup=4, train=Period(0, 25), validation=Period(25, None),
                     dtype=torch.float64, allow_unstable=True)
    p0 = model().detach().clone()
    cal.run(2)
    q = route_oracle(net, runoff, "muskingum", p0, allow_unstable=True)[obs.index_in(net)]
    o = torch.as_tensor(obs.values)
    tr_nse, tr_kge = nse(q[:, 4:25], o[:, 4:25]), kge(q[:, 4:25], o[:, 4:25])
    va_nse = nse(q[:, 29:], o[:, 29:])
    assert cal.history["nse_median"][0] == pytest.approx(float(tr_nse.median()), rel=1e-9)
    assert cal.history["kge_median"][0] == pytest.approx(float(tr_kge.median()), rel=1e-9)
    assert cal.history["val_nse_median"][0] == pytest.approx(float(va_nse.median()), rel=1e-9)
    assert cal.history["loss"][0] == pytest.approx(float((1 - tr_kge).mean()), rel=1e-9)
    assert cal.history["loss"][1] < cal.history["loss"][0]


def test_one_device_calibrator_plans_and_refuses(monkeypatch):
    """The Calibrator's memory plan counts its router's kernels and the network's forward
    graph; with too little memory it refuses before the first iteration."""
    from hydroscale.routing import MEMORY_ENV_VAR, RunTooLargeError
    from hydroscale.routing._run_plan import SLACK

    net = continental_forest(60, seed=1)
    t = 16
    runoff = torch.rand(net.n_reaches, t, generator=torch.Generator().manual_seed(0))
    obs = GaugeObservations(net.ids[:3], np.random.default_rng(0).uniform(1, 2, (3, t)))

    def make(**kw):
        model = FreeParameters("muskingum", net, {"k": (0.3, 0.8), "x": (0.1, 0.3)},
                               dtype=torch.float64)
        return Calibrator(net, runoff, obs, model, substeps=2, window=t, engine="torch",
                          engine_options={"max_reaches": 16}, dtype=torch.float64, **kw)

    cal = make(memory_limit="1GB")
    plan, w = cal.memory_plan, cal.memory_plan.workers[0]
    assert plan.strategy == "keep+no-remat" and plan.engine == "torch" and plan.fits
    assert (w.limit, w.limit_source) == (10**9, "memory_limit")
    r = cal.router
    assert r.window == t and w.kernels == r.kernel_rows() * t * 8  # float64 taps
    # the network's runoff and discharge kept for the backward, and its transfer buffer
    assert w.forward_graphs == (2 * net.n_reaches + 2 * r.clusters.n_exits) * t * 8
    assert w.work >= net.n_reaches * t * 8 + 4 * net.n_reaches * 2 * 8
    assert "worker" in plan.table() and "keep+no-remat" in plan.table()
    monkeypatch.setenv(MEMORY_ENV_VAR, str(int(w.peak * SLACK)))
    with pytest.raises(RunTooLargeError, match=rf"calibration on cpu does not fit.*needs "
                       rf"{w.peak / 1e9:.3g} GB.*{MEMORY_ENV_VAR}=.*--cluster.*routing.window"
                       rf".*memory_limit"):
        make()

"""The distributed gradient on a 2-worker CPU LocalCluster against single-device autograd
through the float64 oracle: per-reach parameters, runoff, a shared AttributeMLP, and one
optimiser step of the distributed calibrator against the single-device Calibrator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.calibration import (
    Calibrator,
    DistributedCalibrator,
    DistributedGradient,
    GaugeObservations,
    TensorSource,
)
from hydroscale.calibration.losses import gauge_loss
from hydroscale.models import AttributeMLP, FreeParameters
from hydroscale.network import RiverNetwork
from hydroscale.routing import route_oracle
from hydroscale.routing._run_plan import SLACK

T = 30
F = 2  # sub-steps: the transfer buffers cross groups at sub-step resolution
WARMUP = 3
BOUNDS = {"k": (0.2, 1.5), "x": (0.0, 0.45)}


@pytest.fixture(scope="module")
def twin(forest):
    """Runoff, oracle observations at 25 gauges spread over the groups, a first guess."""
    net, params, _ = forest
    rng = np.random.default_rng(3)
    runoff = rng.uniform(0.0, 5.0, (net.n_reaches, T))
    q = route_oracle(net, runoff, "muskingum", params, substeps=F, allow_unstable=True).numpy()
    gauges = np.sort(rng.choice(net.n_reaches, 25, replace=False))
    obs = GaugeObservations(net.ids[gauges], q[gauges])
    start = np.clip(params * rng.uniform(0.7, 1.3, params.shape), [0.25, 0.01], [1.4, 0.44])
    return runoff, obs, start


def _oracle_loss(net, runoff, obs, params, loss="nse"):
    q = route_oracle(net, runoff, "muskingum", params, substeps=F, allow_unstable=True)
    g = torch.as_tensor(obs.index_in(net))
    return gauge_loss(loss, q[:, g], torch.as_tensor(obs.values), WARMUP)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("loss, how", [
    # rematerialised forward, kernel graph kept through the iteration
    ("nse", {"rematerialise": True, "kernel_graph": "keep"}),
    ("vnmse", {"rematerialise": False, "kernel_graph": "recompute"}),
])
def test_gradient_equals_single_device_autograd(client, forest, twin, loss, how,
                                                one_torch_thread):
    """d loss / d (raw per-reach parameters) and d loss / d runoff, across both workers."""
    net, _, part = forest
    runoff, obs, start = twin
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with DistributedGradient(client, net, part, model, obs, TensorSource(runoff, trainable=True),
                             substeps=F, window=T, loss=loss, warmup=WARMUP,
                             dtype=torch.float64, allow_unstable=True, snapshot_dir=False,
                             **how) as dg:
        plan = dg.plan
        assert plan.cross_worker_exits() > 0 and plan.n_waves >= 3
        # the wave-run keywords reach the runtime and its memory plan keeps them
        assert (dg.memory_plan.rematerialise, dg.memory_plan.kernel_graph) == \
            (how["rematerialise"], how["kernel_graph"]) and dg.memory_plan.chosen == "given"
        assert len({int(w) for w in plan.group_worker[plan.group_of[obs.index_in(net)]]}) == 2
        got = dg.gradient()
        half = np.arange(len(obs)) % 2 == 0
        half_loss = [dg.loss(half), dg.loss(~half)]  # forward passes, no step in between
    ref = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    r = torch.tensor(runoff[None], requires_grad=True)
    want = _oracle_loss(net, r, obs, ref(), loss)
    want.backward()
    assert got["loss"] == pytest.approx(want.item(), rel=1e-10)
    for sel, value in zip((half, ~half), half_loss):
        sub = obs.subset(obs.ids[sel])
        assert value == pytest.approx(_oracle_loss(net, runoff[None], sub, ref(), loss).item(),
                                      rel=1e-10)
    assert _rel(got["model"]["raw"], ref.raw.grad) < 1e-5
    assert _rel(got["runoff"], r.grad) < 1e-5
    # reaches upstream of no gauge get no gradient, both ways
    assert np.array_equal(got["model"]["raw"].numpy() == 0, ref.raw.grad.numpy() == 0)


def test_memory_plan_strategies_give_the_same_gradient(client, forest, twin, one_torch_thread):
    """With memory to spare the plan keeps every graph (keep + no rematerialisation); a
    memory_limit that only the leanest strategy fits makes it aggregate again and route again
    in the backward (recompute + rematerialise): the same loss and gradients.  The plan is
    returned in the reports beside the measured peaks.  (Groups of at most 16 reaches: many
    per worker, so that keeping all their kernel graphs costs more than recomputing one.)"""
    net, _, part = forest
    runoff, obs, start = twin
    got, plans = [], []
    limit = None
    for _ in range(2):
        model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
        with DistributedGradient(client, net, part, model, obs,
                                 TensorSource(runoff, trainable=True), substeps=F, window=T,
                                 warmup=WARMUP, dtype=torch.float64, allow_unstable=True,
                                 snapshot_dir=False, memory_limit=limit,
                                 batch_reaches=16) as dg:
            plan = dg.memory_plan
            res = dg.iterate(training=True, step=False)
            assert res["planned_peak_bytes"] == plan.peaks() and res["strategy"] == \
                plan.strategy and len(res["peak_bytes"]) == 2
            got.append(dg.gradient())
            plans.append(plan)
        if limit is None:  # the second run: just enough for the leanest strategy
            assert plan.strategy == "keep+no-remat" and plan.chosen == "auto"
            need = max(w.peaks["recompute+remat"] for w in plan.workers)
            limit = int(need / SLACK) + 1
            for name in ("keep+no-remat", "recompute+no-remat", "keep+remat"):
                assert any(w.peaks[name] > limit * SLACK for w in plan.workers), name
    assert plans[1].strategy == "recompute+remat" and plans[1].chosen == "auto"
    assert [w.limit for w in plans[1].workers] == [limit] * 2
    (a, b) = got
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    assert _rel(b["model"]["raw"], a["model"]["raw"]) <= 1e-6
    assert _rel(b["runoff"], a["runoff"]) <= 1e-6
    assert np.abs(a["model"]["raw"].numpy()).max() > 0  # a real gradient


def test_unknown_keyword_is_refused_before_the_cluster_is_used(forest, twin):
    """Routing, calibration and wave-run keywords share **keywords; a misspelt one names all
    three lists (no client is touched: None stands in for it)."""
    net, _, part = forest
    runoff, obs, start = twin
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['kernel_grap'\]: routing "
                                        r"options are .*'substeps'.*, calibration options "
                                        r".*'warmup'.*, and \[.*'kernel_graph'.*\]"):
        DistributedGradient(None, net, part, model, obs, runoff, kernel_grap="keep")


def test_windows_gradient_equals_single_device(client, forest, twin, one_torch_thread):
    """A batch of training windows cut from one series (each from a zero state, loss after
    its warm-up), as the hybrid pipelines train: loss and gradient of the oracle."""
    net, _, part = forest
    runoff, obs, start = twin
    starts, length = np.array([0, 5, 11]), 18
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with DistributedGradient(client, net, part, model, obs, runoff, substeps=F, window=T,
                             warmup=WARMUP, dtype=torch.float64, allow_unstable=True,
                             snapshot_dir=False) as dg:
        dg.iterate(training=False, step=False)  # a whole-period pass first: nothing sticks
        res = dg.iterate(training=False, step=False, windows=(starts, length),
                         keep_sims=True)
        got = dg.gradient(windows=(starts, length))
        whole = dg.gradient()["model"]["raw"]  # the whole period again
    idx = starts[:, None] + np.arange(length)
    ref = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    r = torch.as_tensor(runoff[:, idx]).permute(1, 0, 2)  # [B, N, L]
    q = route_oracle(net, r, "muskingum", ref(), substeps=F, allow_unstable=True)
    g = torch.as_tensor(obs.index_in(net))
    o = torch.as_tensor(obs.values[:, idx]).permute(1, 0, 2)
    loss = gauge_loss("nse", q[:, g], o, WARMUP)
    loss.backward()
    assert res["loss"] == pytest.approx(loss.item(), rel=1e-10)
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(res["sims"], q[:, g].detach().numpy(), rtol=1e-9, atol=1e-9)
    assert _rel(got["model"]["raw"], ref.raw.grad) < 1e-5
    ref_full = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    _oracle_loss(net, runoff[None], obs, ref_full()).backward()
    assert _rel(whole, ref_full.raw.grad) < 1e-5


class ScaledRunoff:
    """A differentiable runoff source (the protocol of ``hydroscale.distributed``):
    ``runoff = exp(s) * base`` with one tensor ``s`` shared by all workers."""

    differentiable = True

    def __init__(self, base, s0):
        self.base = torch.as_tensor(base)[None]
        self.s0 = float(s0)
        self.blocks = {}

    def for_worker(self, plan, worker):
        out = ScaledRunoff(torch.zeros(1, 0), self.s0)
        for g in plan.groups_of_worker(worker).tolist():
            a, b = plan.rows[g]
            out.blocks[g] = self.base[:, torch.as_tensor(plan.order[a:b])]
        return out

    def open(self, ctx):
        self.s = torch.nn.Parameter(torch.tensor(self.s0, dtype=ctx.dtype, device=ctx.device))
        self.blocks = {g: x.to(ctx.device, ctx.dtype) for g, x in self.blocks.items()}

    def _runoff(self, group):
        return self.s.exp() * self.blocks[group]

    def read(self, group, reaches):
        with torch.no_grad():
            return self._runoff(group)

    def backward(self, group, reaches, grad):
        self._runoff(group).backward(grad)

    def parameters(self):
        return {"shared": [self.s], "local": []}


def test_differentiable_source_gets_its_gradient(client, forest, twin, one_torch_thread):
    """A source's shared tensor receives the gradient summed over the groups of both workers,
    and both workers step it alike (the loss after one step is the single-device one)."""
    net, _, part = forest
    runoff, obs, start = twin
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with DistributedGradient(client, net, part, model, obs, ScaledRunoff(runoff, 0.2),
                             substeps=F, window=T, warmup=WARMUP, dtype=torch.float64,
                             allow_unstable=True, lr=0.05, snapshot_dir=False) as dg:
        got = dg.gradient()
        dg.iterate()
        after = dg.loss()
    ref = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    s = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([ref.raw, s], lr=0.05)
    loss = _oracle_loss(net, s.exp() * torch.as_tensor(runoff[None]), obs, ref())
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-10)
    assert got["source"][0].item() == pytest.approx(s.grad.item(), rel=1e-8)
    opt.step()
    with torch.no_grad():
        want = _oracle_loss(net, s.exp() * torch.as_tensor(runoff[None]), obs, ref())
    assert after == pytest.approx(want.item(), rel=1e-8)


def _mlp(net):
    rng = np.random.default_rng(9)
    attrs = {**net.attrs, "slope": rng.uniform(0.0, 1.0, net.n_reaches)}
    net2 = RiverNetwork(net.ids, net.downstream, attrs)
    return AttributeMLP("muskingum", net2, ("length", "slope"), hidden=(8,), log=("length",),
                        bounds=BOUNDS, seed=4, dtype=torch.float64)


def test_shared_mlp_gradient_and_step(client, forest, twin, one_torch_thread):
    """An AttributeMLP is replicated: its gradients are tree-summed over the workers, and
    every worker takes the same Adam step (= the single-device step)."""
    net, _, part = forest
    runoff, obs, _ = twin
    model = _mlp(net)
    with DistributedGradient(client, net, part, model, obs, runoff, substeps=F, window=T,
                             warmup=WARMUP, dtype=torch.float64, allow_unstable=True, lr=0.01,
                             snapshot_dir=False) as dg:
        got = dg.gradient()
        dg.iterate()
        dg.iterate()
        stepped = dg.update_model(_mlp(net))
    ref = _mlp(net)
    loss = _oracle_loss(net, runoff[None], obs, ref())
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-10)
    for name, p in ref.named_parameters():
        assert _rel(got["model"][name], p.grad) < 1e-5, name
    opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        _oracle_loss(net, runoff[None], obs, ref()).backward()
        opt.step()
    for (name, p), q in zip(ref.named_parameters(), stepped.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-9, err_msg=name)


def test_steps_equal_single_device_calibrator(client, forest, twin, one_torch_thread):
    """Two iterations of the distributed calibrator = two of the single-device Calibrator:
    losses, metrics and parameters (Adam over each worker's rows of the raw tensor)."""
    net, _, part = forest
    runoff, obs, start = twin
    kw = dict(substeps=F, loss="vnmse", warmup=WARMUP, train=slice(0, 24),
              validation=slice(24, None), lr=0.05, dtype=torch.float64, allow_unstable=True)
    ref_model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    ref = Calibrator(net, runoff, obs, ref_model, engine="levels", engine_options={"window": T},
                     **kw)
    ref.run(2)
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with DistributedCalibrator(client, net, runoff, obs, model, partition=part, window=T,
                               **kw) as cal:
        events = []
        cal.add_listener(events.append)
        cal.run(2)
        events = list(events)  # what the run emitted (simulate() reports its waves too)
        cal.update_model()
        sims = cal.simulate()
    np.testing.assert_allclose(cal.history["loss"], ref.history["loss"], rtol=1e-9)
    for key in ("nse_median", "kge_median", "val_nse_median"):
        np.testing.assert_allclose(cal.history[key], ref.history[key], rtol=1e-9)
    np.testing.assert_allclose(model().detach().numpy(), ref_model().detach().numpy(),
                               rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        want = ref.simulate().numpy()
    np.testing.assert_allclose(sims.numpy(), want, rtol=1e-9, atol=1e-9)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("iteration") == 2
    waves = [e for e in events if e["kind"] == "progress"]
    n = cal.engine.plan.n_waves
    assert {(e["phase"], e["wave"]) for e in waves} >= {("forward", n), ("backward", n)}
    rec = [e for e in events if e["kind"] == "iteration"][-1]
    assert [m["peak_bytes"] for m in rec["worker_memory"]] == [0, 0]  # CPU workers

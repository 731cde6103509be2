"""The three hybrid pipelines on a 2-worker CPU LocalCluster against the same pipeline on one
device: the loss before and after one Adam step, and the stepped parameters (routing and the
replicated LSTM), on a partition with groups and gauges on both workers and transfers between
them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.calibration import RunoffModelSource, pull_runoff_model
from hydroscale.calibration.pipelines import (
    RoutingStage,
    Windows,
    learned_routing,
    routing_calibration,
    runoff_routing,
    synthetic_twin,
)
from hydroscale.models import AttributeMLP, FreeParameters
from hydroscale.models.runoff import LSTMRunoff
from hydroscale.partition import partition_network

BOUNDS = {"tau": (0.1, 5.0)}
T_TRAIN, WARMUP = 90, 20
LR = 0.05


@pytest.fixture(scope="module")
def twin():
    return synthetic_twin(60, 120, grid=(4, 4), n_gauges=10, basin_cap=30, seed=2)


@pytest.fixture(scope="module")
def partition(twin):
    return partition_network(twin.network, max_reaches=6, min_reaches=2, n_workers=2)


def _pipeline(twin, kind: str, partition):
    """A fresh float64 pipeline of ``kind`` (identical weights on every call), routed on one
    device as ONE cluster: the windows are exact for every parameter within the bounds (fitted
    at their corners), so the runtime's groups give the same discharge to rounding."""
    net = twin.network
    stage = RoutingStage(net, irf="linear_storage", dtype=torch.float64,
                         interpolator=twin.interpolator if kind == "runoff" else None)
    windows = Windows(T_TRAIN - WARMUP, warmup=WARMUP)
    if kind == "routing":
        pm = FreeParameters("linear_storage", net, BOUNDS, dtype=torch.float64,
                            init={"tau": np.linspace(0.4, 2.5, net.n_reaches)})
        return routing_calibration(stage, pm, twin.lateral, twin.observations, windows=windows,
                                   scale_period=(WARMUP, T_TRAIN))
    pm = AttributeMLP("linear_storage", net, ("length", "slope"), hidden=(8,), bounds=BOUNDS,
                      seed=4, dtype=torch.float64)
    if kind == "learned":
        return learned_routing(stage, pm, twin.lateral, twin.observations, windows=windows,
                               scale_period=(WARMUP, T_TRAIN))
    torch.manual_seed(7)
    lstm = LSTMRunoff(2, 2, hidden=6, output_scale=float(twin.depth.mean()), precip_col=0).double()
    lstm.fit_normalisation(twin.forcings, twin.static)
    return runoff_routing(stage, pm, lstm, twin.forcings, twin.observations, static=twin.static,
                          windows=windows, scale_period=(WARMUP, T_TRAIN))


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().ravel() for p in module.parameters()])


@pytest.mark.parametrize("kind", ["routing", "learned", "runoff"])
def test_distributed_pipeline_equals_single_device(client, twin, partition, kind,
                                                   one_torch_thread):
    one = _pipeline(twin, kind, partition)
    before = float(one.window_loss([0]).detach())
    one.fit(1, train_period=(0, T_TRAIN), batch=1, lr=LR)  # the single window starting at 0
    after = float(one.window_loss([0]).detach())
    assert after < before  # the step did something

    pipe = _pipeline(twin, kind, partition)
    cal = pipe.distributed(client, train=(0, T_TRAIN), partition=partition, lr=LR)
    try:
        plan = cal.engine.plan
        gauge_workers = plan.group_worker[plan.group_of[twin.observations.index_in(
            twin.network)]]
        assert set(gauge_workers.tolist()) == {0, 1} and plan.cross_worker_exits() > 0
        rec = cal.step()
        assert rec["loss"] == pytest.approx(before, rel=1e-10)
        assert cal.engine.loss() == pytest.approx(after, rel=1e-5)
        # the stepped weights: routing model (sliced or replicated) and the LSTM replica
        torch.testing.assert_close(_flat(cal.update_model()), _flat(one.param_model),
                                   rtol=1e-8, atol=1e-10)
        if kind == "runoff":
            lstm = pull_runoff_model(cal, _pipeline(twin, kind, partition).runoff_model)
            torch.testing.assert_close(_flat(lstm), _flat(one.runoff_model), rtol=1e-8,
                                       atol=1e-10)
            assert not torch.equal(_flat(lstm), _flat(pipe.runoff_model))  # it was trained
    finally:
        cal.close()


def test_runoff_source_ships_each_worker_its_own_cells(twin, partition):
    """for_worker: a worker's part holds the cells feeding its reaches only and one
    interpolator per group of its own, whose inflow is the full interpolation's rows."""
    from hydroscale.distributed._plan import plan_waves

    lstm = LSTMRunoff(2, 2, hidden=4).double()
    src = RunoffModelSource(lstm, twin.interpolator, twin.forcings, twin.static)
    plan = plan_waves(twin.network, partition)
    depth = torch.as_tensor(twin.depth[None, :, :30])
    interp = twin.interpolator
    full = interp(depth)
    n_cells = []
    for w in range(2):
        part = src.for_worker(plan, w)
        groups = plan.groups_of_worker(w)
        assert sorted(part._groups) == groups.tolist()
        reaches = np.concatenate([plan.order[a:b] for a, b in plan.rows[groups]])
        cells = np.unique(interp.cell[np.isin(interp.reach, reaches)])
        assert part.forcings.shape[0] == cells.size < interp.n_cells
        np.testing.assert_array_equal(part.forcings.numpy(), twin.forcings[cells])
        for g in groups.tolist():
            sub, idx = part._groups[g]
            r = plan.order[plan.rows[g, 0] : plan.rows[g, 1]]
            np.testing.assert_array_equal(sub.reach_index, r)
            got = sub(depth[:, cells[idx.numpy()]])
            torch.testing.assert_close(got, full[:, r], rtol=1e-14, atol=0)
        n_cells.append(cells.size)
    assert sum(n_cells) >= interp.n_cells  # cells on a worker boundary are on both
    with pytest.raises(ValueError, match="dropout"):
        RunoffModelSource(LSTMRunoff(2, 2, layers=2, dropout=0.5), interp, twin.forcings,
                          twin.static)
    with pytest.raises(ValueError, match=r"static must be \[C=16, S=2\]"):
        RunoffModelSource(lstm, interp, twin.forcings, None)

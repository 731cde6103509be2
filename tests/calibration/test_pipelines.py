"""Hybrid pipelines on a tiny synthetic twin: each trains on CPU and lowers the validation loss
by at least half; the cluster-staged routing path equals the whole-network path (loss, gradients
and one optimiser step); the routing stage matches the float64 oracle."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hydroscale.calibration import GaugeObservations, gauge_loss
from hydroscale.calibration.pipelines import (
    RoutingStage,
    Windows,
    learned_routing,
    routing_calibration,
    runoff_routing,
    split_by_basin,
    synthetic_twin,
)
from hydroscale.models import AttributeMLP, FreeParameters
from hydroscale.models.runoff import LSTMRunoff
from hydroscale.partition import partition_network

BOUNDS = {"tau": (0.1, 5.0)}
K = 32  # warm-up of the training windows (days)


@pytest.fixture(scope="module")
def twin():
    return synthetic_twin(40, 600, grid=(4, 4), n_gauges=8, basin_cap=15, seed=1)


@pytest.fixture(scope="module")
def cluster_of(twin):
    return partition_network(twin.network, max_reaches=8).cluster_of


def _stage(twin, cluster_of, **kw):
    """The routing stage with its default window: exact for every parameter within the
    parameter model's bounds (fitted at their corners by the pipeline)."""
    return RoutingStage(twin.network, irf="linear_storage", cluster_of=cluster_of, **kw)


def test_twin_is_consistent(twin):
    # truth discharge at the outlets carries the runoff volume (minus what is still in the
    # reaches' storage at the end): closed-form check of the mass balance, 1e-3 of the total
    net = twin.network
    inflow = twin.lateral.sum()
    out = twin.discharge[net.outlets].sum()
    assert out == pytest.approx(inflow, rel=2e-2)
    assert len(np.unique(net.basin[twin.observations.index_in(net)])) >= 4


def test_routing_stage_matches_oracle(twin, cluster_of):
    stage = _stage(twin, cluster_of, dtype=torch.float64)
    q = stage(torch.as_tensor(twin.lateral)[None], torch.as_tensor(twin.params))[0].numpy()
    err = np.linalg.norm(q - twin.discharge) / np.linalg.norm(twin.discharge)
    assert err < 1e-6  # exact: the window leaves at most 1e-6 of any path out (checked)
    assert stage.window <= 600


def test_routing_calibration_halves_validation_loss(twin, cluster_of):
    torch.manual_seed(0)
    pm = FreeParameters("linear_storage", twin.network, BOUNDS, init={"tau": 2.5})
    pipe = routing_calibration(_stage(twin, cluster_of), pm, twin.lateral, twin.observations,
                               windows=Windows(48, warmup=K, stride=4))
    val = (400, 600)
    before = pipe.evaluate(val)["loss"]
    pipe.fit(20, train_period=(0, 400), batch=4, lr=0.1)
    after = pipe.evaluate(val)
    assert after["loss"] < 0.5 * before
    assert np.all(after["nse"] > 0.8)
    # the calibrated tau moved towards the truth at the gauged reaches
    rows = twin.observations.index_in(twin.network)
    err0 = np.abs(2.5 - twin.params[rows, 0]).mean()
    err1 = np.abs(pm().detach().numpy()[rows, 0] - twin.params[rows, 0]).mean()
    assert err1 < err0


def test_learned_routing_generalises_to_unseen_basins(twin, cluster_of):
    torch.manual_seed(0)
    train, held = split_by_basin(twin.network, twin.observations, 0.4, seed=3)
    basins = twin.network.basin
    assert not set(basins[train.index_in(twin.network)]) & set(basins[held.index_in(
        twin.network)])
    pm = AttributeMLP("linear_storage", twin.network, ("length", "slope"), hidden=(16,),
                      bounds=BOUNDS, seed=3)
    with torch.no_grad():  # start far from the truth: every tau near the upper bound
        pm.net[-1].bias.fill_(3.0)
    pipe = learned_routing(_stage(twin, cluster_of), pm, twin.lateral, train,
                           windows=Windows(48, warmup=K, stride=4))
    val = (400, 600)
    before = pipe.evaluate(val, held)["loss"]
    hist = pipe.fit(20, train_period=(0, 400), batch=4, lr=0.05, validate=(val, held), every=10)
    after = pipe.evaluate(val, held)["loss"]
    assert after < 0.5 * before
    assert hist.validation[-1] == pytest.approx(after, rel=1e-6)


def test_runoff_routing_halves_validation_loss(twin, cluster_of):
    torch.manual_seed(0)
    pm = FreeParameters("linear_storage", twin.network, BOUNDS, init={"tau": 1.0})
    lstm = LSTMRunoff(2, 2, hidden=16, output_scale=float(twin.depth.mean()))
    lstm.fit_normalisation(twin.forcings, twin.static)
    stage = _stage(twin, cluster_of, interpolator=twin.interpolator)
    pipe = runoff_routing(stage, pm, lstm, twin.forcings, twin.observations, static=twin.static,
                          windows=Windows(40, warmup=60, stride=5))
    val = (400, 600)
    before = pipe.evaluate(val)["loss"]
    pipe.fit(25, train_period=(0, 400), batch=4, lr=0.03)
    after = pipe.evaluate(val)["loss"]
    assert after < 0.5 * before


@pytest.mark.parametrize("with_runoff", [False, True])
def test_cluster_staged_path_equals_whole_network(twin, cluster_of, with_runoff):
    """The per-cluster path the distributed runtime runs (two 'workers', each router holding
    only its clusters, per-cluster interpolator subsets, transfer buffers between clusters)
    gives the whole-network loss and gradients, and the same loss after one Adam step."""
    torch.manual_seed(0)
    n_clusters = int(cluster_of.max()) + 1
    worker_of = np.arange(n_clusters) % 2
    interp = twin.interpolator if with_runoff else None
    pm = FreeParameters("linear_storage", twin.network, BOUNDS,
                        init={"tau": np.linspace(0.5, 3.0, twin.network.n_reaches)})
    windows = Windows(30, warmup=K, stride=7)

    def build(staged: bool):
        stage = _stage(twin, cluster_of, staged=staged, worker_of=worker_of,
                       interpolator=interp, dtype=torch.float64)
        p = copy.deepcopy(pm).double()
        if with_runoff:
            torch.manual_seed(1)
            lstm = LSTMRunoff(2, 2, hidden=8, output_scale=1.0).double()
            lstm.fit_normalisation(twin.forcings, twin.static)
            return runoff_routing(stage, p, lstm, twin.forcings, twin.observations,
                                  static=twin.static, windows=windows)
        return routing_calibration(stage, p, twin.lateral, twin.observations, windows=windows)

    whole, staged = build(False), build(True)
    assert len(staged.routing.routers) == 2
    starts = [0, 70]
    losses, grads = [], []
    for pipe in (whole, staged):
        loss = pipe.window_loss(starts)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.ravel() for p in pipe.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-10)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-8, atol=1e-12)
    after = []
    for pipe in (whole, staged):
        pipe.fit(1, train_period=(0, 400), batch=2, lr=0.05, seed=4)
        after.append(float(pipe.window_loss(starts).detach()))
    assert after[1] == pytest.approx(after[0], rel=1e-5)
    assert after[0] != pytest.approx(losses[0], rel=1e-6)  # the step changed something


@pytest.mark.parametrize("loss", ["vnmse", "nse"])
def test_gauge_normalised_loss_hand_computed(twin, cluster_of, loss):
    """normalise="gauge": each gauge's mean squared error over the loss steps divided by its
    observed variance over scale_period ((σ + 0.1)² for vnmse, σ² for nse), NaN observations
    ignored, averaged over gauges and windows; "window" is calibration.gauge_loss."""
    obs = twin.observations
    values = obs.values.copy()
    values[1, 100:180] = np.nan  # a gap inside the scale period and a window
    values[3, :] = np.nan  # a gauge without any observation: left out
    gauges = GaugeObservations(obs.ids, values)
    pm = FreeParameters("linear_storage", twin.network, BOUNDS, init={"tau": 1.3})
    windows = Windows(30, warmup=10, stride=3)
    pipe = routing_calibration(_stage(twin, cluster_of, dtype=torch.float64), pm, twin.lateral,
                               gauges, windows=windows, loss=loss, scale_period=(50, 400))
    assert pipe.normalise == "gauge"
    starts = [90, 140, 300]
    got = float(pipe.window_loss(starts).detach())
    with torch.no_grad():
        q = pipe.simulate(starts, windows.total).numpy()[:, gauges.index_in(twin.network)]
    per = []
    for b, s in enumerate(starts):
        for g in range(len(gauges)):
            o = values[g, s + 10 : s + 40]
            ok = np.isfinite(o)
            ref = values[g, 50:400]
            ref = ref[np.isfinite(ref)]
            if not ok.any() or ref.size < 2:
                continue
            sd = np.sqrt(np.mean((ref - ref.mean()) ** 2))
            scale = (sd + 0.1) ** 2 if loss == "vnmse" else sd ** 2
            per.append(np.mean((q[b, g, 10:][ok] - o[ok]) ** 2) / scale)
    assert len(per) == 3 * (len(gauges) - 1) - 2  # gauge 1: no observation in 2 windows
    assert got == pytest.approx(np.mean(per), rel=1e-10)
    # the per-window normalisation is the loss of calibration.losses
    win = routing_calibration(pipe.routing, pm, twin.lateral, gauges, windows=windows,
                              loss=loss, normalise="window")
    idx = np.asarray(starts)[:, None] + np.arange(windows.total)
    want = gauge_loss(loss, torch.as_tensor(q), values[:, idx].transpose(1, 0, 2), 10)
    assert float(win.window_loss(starts).detach()) == pytest.approx(float(want), rel=1e-10)
    with pytest.raises(ValueError, match="normalise must be"):
        routing_calibration(pipe.routing, pm, twin.lateral, gauges, windows=windows,
                            loss="kge", normalise="gauge")


def test_pipeline_errors(twin, cluster_of):
    pm = FreeParameters("linear_storage", twin.network, BOUNDS)
    stage = _stage(twin, cluster_of)
    with pytest.raises(ValueError, match="either lateral inflow"):
        routing_calibration(stage, pm, None, twin.observations, windows=Windows(10))
    short = GaugeObservations(twin.observations.ids, twin.observations.values[:, :50])
    with pytest.raises(ValueError, match="50 steps"):
        routing_calibration(stage, pm, twin.lateral, short, windows=Windows(10))
    with pytest.raises(ValueError, match="shorter than one window"):
        Windows(100, warmup=50).starts((0, 120))
    with pytest.raises(ValueError, match="interpolator"):
        runoff_routing(stage, pm, LSTMRunoff(2, 2), twin.forcings, twin.observations,
                       windows=Windows(10), static=twin.static)

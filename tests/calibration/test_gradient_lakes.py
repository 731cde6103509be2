"""The distributed gradient through level-pool lakes on the 2-worker CPU cluster against
single-device autograd through LakeRouter (float64): per-reach parameters upstream of lakes
and the lakes' weir coefficients (issue 29)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.calibration import DistributedGradient, GaugeObservations
from hydroscale.calibration.losses import gauge_loss
from hydroscale.models import FreeParameters
from hydroscale.routing import LEVEL_POOL_PARAMS, LakeLayout, LakeRouter

T = 30
F = 2
WARMUP = 3
DT = 3600.0
BOUNDS = {"k": (0.2, 1.5), "x": (0.0, 0.45)}
WC = LEVEL_POOL_PARAMS.index("weir_coefficient")


def _router(net, lakes, engine="torch"):
    kw = {} if engine == "oracle" else {"window": T}
    return LakeRouter(net, lakes, irf="muskingum", substeps=F, dt=DT, engine=engine,
                      dtype=torch.float64, allow_unstable=True, **kw)


def test_gradient_through_lakes_equals_single_device(client, forest, forest_lakes,
                                                     one_torch_thread):
    net, params, part = forest
    lakes = forest_lakes
    lay = LakeLayout.build(net, lakes)
    rng = np.random.default_rng(5)
    runoff = rng.uniform(0.0, 5.0, (net.n_reaches, T))
    obs_q = _router(net, lakes, "oracle")(torch.tensor(runoff[None]), torch.tensor(params))[0]
    # gauges: the reaches below every lake, and some others
    below = lay.lake_down[lay.lake_down >= 0]
    gauges = np.unique(np.r_[below, rng.choice(net.n_reaches, 15, replace=False)])
    obs = GaugeObservations(net.ids[gauges], obs_q.numpy()[gauges])
    start = np.clip(params * rng.uniform(0.7, 1.3, params.shape), [0.25, 0.01], [1.4, 0.44])
    model = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    with DistributedGradient(client, net, part, model, obs, runoff, substeps=F, window=T,
                             loss="nse", warmup=WARMUP, dtype=torch.float64,
                             allow_unstable=True, snapshot_dir=False, lakes=lakes, dt=DT,
                             train_lakes=("weir_coefficient",)) as dg:
        assert dg.plan.group_lake.sum() >= 2 and dg.plan.cross_worker_exits() > 0
        got = dg.gradient()
    ref = FreeParameters("muskingum", net, BOUNDS, init=start, dtype=torch.float64)
    lp = torch.tensor(lakes.params, requires_grad=True)
    q = _router(net, lakes)(torch.tensor(runoff[None]), ref(), lake_params=lp)
    g = torch.as_tensor(obs.index_in(net))
    want = gauge_loss("nse", q[:, g], torch.as_tensor(obs.values), WARMUP)
    want.backward()
    assert got["loss"] == pytest.approx(want.item(), rel=1e-10)
    gr, wr = got["model"]["raw"].numpy(), ref.raw.grad.numpy()
    assert np.abs(gr - wr).max() <= 1e-6 * np.abs(wr).max()
    # a routing parameter upstream of a lake gets its gradient through the lake
    upstream = np.flatnonzero(np.isin(net.downstream, lay.outlet)
                              | np.isin(net.downstream, np.flatnonzero(lay.reach_lake >= 0)))
    upstream = upstream[lay.reach_lake[upstream] < 0]
    assert np.abs(wr[upstream]).max() > 0
    gw, ww = got["lakes"][:, 0].numpy(), lp.grad[:, WC].numpy()
    assert np.abs(ww).max() > 0
    assert np.abs(gw - ww).max() <= 1e-6 * np.abs(ww).max()

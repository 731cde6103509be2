"""The lean paths of the path-kernel aggregation (what keeps a 100k-reach CPU route under its
memory figure) give the numbers of the full ones."""

from __future__ import annotations

import numpy as np
import torch
from _engine_cases import random_clusters, random_forest

from hydroscale.irf import get_irf, irf_kernel
from hydroscale.routing import RivTreeCluster, StagedRouter
from hydroscale.routing import _aggregation as agg


def _router(window: int) -> tuple[StagedRouter, torch.Tensor]:
    net = random_forest([12, 3, 20], seed=4)
    cs = RivTreeCluster(net, random_clusters(net, 0.2, 0.5, seed=5))
    rng = np.random.default_rng(6)
    p = torch.tensor(np.stack([rng.uniform(0.3, 1.5, net.n_reaches),
                               rng.uniform(0.1, 0.3, net.n_reaches)], 1))
    router = StagedRouter(cs, irf="muskingum", substeps=3, window=window, dtype=torch.float64,
                          backend="torch", allow_unstable=True, window_tolerance=1e-6)
    return router, p


def _aggregate(router: StagedRouter, p: torch.Tensor, window: int, **kw) -> agg.PathKernels:
    return agg.aggregate(router.plan, router._device_hops(), router.spec, p, 3, window,
                         dtype=torch.float64, **kw)


def test_step_only_aggregation_gives_the_step_kernels_and_truncation():
    router, p = _router(12)
    full = _aggregate(router, p, 12)
    lean = _aggregate(router, p, 12, step_only=True)
    assert full.u_reach.shape[0] > 0 and full.r_exit.shape[0] > 0  # the case has both kinds
    assert torch.equal(lean.r_reach, full.r_reach)
    assert torch.equal(lean.truncated, full.truncated)
    assert lean.r_exit.shape[0] == lean.u_reach.shape[0] == lean.u_exit.shape[0] == 0


def test_fitted_window_in_row_blocks_equals_one_block(monkeypatch):
    router, p = _router(48)
    pk = _aggregate(router, p, 48, step_only=True)
    whole = agg.fitted_window(pk, 1e-4)
    assert 2 < whole < 48
    monkeypatch.setattr(agg, "_FIT_ROWS", 7)  # many blocks, a short last one
    assert pk.r_reach.shape[0] % 7 != 0
    assert agg.fitted_window(pk, 1e-4) == whole


def test_reach_mass_moments_equal_the_kernel_sums(monkeypatch):
    spec = get_irf("muskingum")
    rng = np.random.default_rng(8)
    p = torch.tensor(np.stack([rng.uniform(0.3, 3.0, 50), rng.uniform(0.0, 0.4, 50)], 1))
    monkeypatch.setattr(agg, "_MASS_BLOCK", 64 * 7)  # 7 reaches per block
    got = agg.reach_mass(spec, p, 64, 2)
    h = irf_kernel(spec, p, 64, 2, allow_unstable=True)
    t = torch.arange(64, dtype=torch.float64)
    m = h.sum(-1)
    mean = (h * t).sum(-1) / m
    var = (h * t * t).sum(-1) / m - mean**2
    assert torch.allclose(got, torch.stack([m, mean, var], -1), rtol=1e-10, atol=1e-12)

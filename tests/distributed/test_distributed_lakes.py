"""Routing with level-pool lakes on the 2-worker CPU cluster against one device (issue 29):
the plan cut at the lakes, lake groups stepped one task per (group, time chunk) with their
elevation carried between chunks, outputs equal to :class:`~hydroscale.routing.LakeRouter`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.distributed import DistributedRouter, plan_waves, route_distributed
from hydroscale.io import SyntheticForcing, hash_uniform, open_output
from hydroscale.routing import LakeLayout, LakeRouter

SUBSTEPS = 3
T = 40
CHUNK = 16  # 3 time chunks
DT = 3600.0


def test_plan_cut_at_lakes(forest, forest_lakes):
    net, _, part = forest
    lakes = forest_lakes
    plan = plan_waves(net, part, lakes=lakes)
    lay = LakeLayout.build(net, lakes)
    assert lay.n_stages >= 2 and plan.group_lake.any()
    in_lake = lay.reach_lake >= 0
    # lake groups hold lakes only; every lake lies in one group, on its outlet's worker
    assert np.array_equal(plan.group_lake[plan.group_of], in_lake)
    for j in range(lakes.n_lakes):
        g = np.unique(plan.group_of[lay.reach_lake == j])
        assert g.size == 1
        out_c = part.cluster_of[lay.outlet[j]]
        assert plan.group_worker[g[0]] == part.worker[out_c]
    assert all(u < g for g in range(plan.n_groups) for u in plan.upstream[g])


def test_route_with_lakes_equals_one_device(client, forest, forest_lakes, tmp_path):
    net, params, part = forest
    lakes = forest_lakes
    forcing = SyntheticForcing(T, seed=4, scale=2.0, interval_s=DT)
    kw = dict(irf="muskingum", substeps=SUBSTEPS, dtype=torch.float64, allow_unstable=True,
              window=T)
    out = tmp_path / "lakes.zarr"
    s = route_distributed(client, net, part, forcing, str(out), params, time_chunk=CHUNK,
                          lakes=lakes, **kw)
    assert s.chunks == 3 and s.workers == 2 and s.plan["lake_groups"] >= 2
    assert s.plan["cross_worker_exits"] > 0
    got = open_output(str(out), net).values
    r = (hash_uniform(torch.arange(net.n_reaches), 0, T, 4) * 2.0).double()
    ref = LakeRouter(net, lakes, dt=DT, **kw)(r[None], torch.tensor(params))[0].numpy()
    assert np.abs(got - ref).max() <= 1e-9 * np.abs(ref).max()
    lay = LakeLayout.build(net, lakes)
    j = lay.outlet[0]  # the lakes act: their outflow is not their inflow passed on
    assert np.abs(got[j] - got[lay.lake_down[0]]).max() > 0
    assert s.checksum == pytest.approx(ref.sum(), rel=1e-9)


def test_lakes_need_dt_and_refuse_a_baseline(client, forest, forest_lakes):
    net, params, part = forest
    lakes = forest_lakes
    with pytest.raises(ValueError, match="needs dt"):
        DistributedRouter(client, net, part, params, irf="muskingum", lakes=lakes)
    with DistributedRouter(client, net, part, params, irf="muskingum", lakes=lakes, dt=DT,
                           allow_unstable=True) as dr:
        with pytest.raises(ValueError, match="baseline"):
            dr.route(SyntheticForcing(8, interval_s=DT), None, 8,
                     baseline=np.ones(net.n_reaches))

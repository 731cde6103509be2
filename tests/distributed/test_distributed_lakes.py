"""Routing with level-pool lakes on the 2-worker CPU cluster against one device (issue 29):
the plan cut at the lakes, lake groups stepped one task per (group, time chunk) with their
elevation carried between chunks, outputs equal to :class:`~hydroscale.routing.LakeRouter`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import hydroscale
from hydroscale.distributed import DistributedRouter, plan_waves, route_distributed
from hydroscale.io import SyntheticForcing, hash_uniform, ingest, open_output
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
    router = LakeRouter(net, lakes, dt=DT, **kw)
    ref = router(r[None], torch.tensor(params))[0].numpy()
    assert np.abs(got - ref).max() <= 1e-9 * np.abs(ref).max()
    # the lakes' levels after the last chunk, read back from the lake groups
    np.testing.assert_allclose(s.lake_elevation_end, router.last_lakes["elevation_end"][0],
                               rtol=1e-12)
    # and their inflow and outflow volumes over the run, as one device counts them
    for key in ("inflow", "outflow"):
        np.testing.assert_allclose(getattr(s, f"lake_{key}_m3"),
                                   router.last_lakes[f"{key}_volume"][0], rtol=1e-9)
    lay = LakeLayout.build(net, lakes)
    j = lay.outlet[0]  # the lakes act: their outflow is not their inflow passed on
    assert np.abs(got[j] - got[lay.lake_down[0]]).max() > 0
    assert s.checksum == pytest.approx(ref.sum(), rel=1e-9)


def test_lakes_need_dt(client, forest, forest_lakes):
    net, params, part = forest
    with pytest.raises(ValueError, match="needs dt"):
        DistributedRouter(client, net, part, params, irf="muskingum", lakes=forest_lakes)


def test_warm_start_with_lakes_equals_one_device(client, forest, forest_lakes, tmp_path):
    """A steady start from discharge q0 (the forcing r - r*, q0 as the baseline): the lakes
    start at the level releasing q0 with their feeders' q0 added; equal to LakeRouter's
    warm start (offsets)."""
    net, params, part = forest
    lakes = forest_lakes
    lay = LakeLayout.build(net, lakes)
    rng = np.random.default_rng(8)
    r = rng.uniform(0.5, 3.0, (net.n_reaches, T))
    q0 = np.asarray(hydroscale.accumulate(net, np.full(net.n_reaches, 1.5)), np.float64)
    r_star = lay.steady_inflow(net, q0)
    kw = dict(irf="muskingum", substeps=SUBSTEPS, dtype=torch.float64, allow_unstable=True,
              window=T)
    router = LakeRouter(net, lakes, dt=DT, **kw)
    off = router.steady_offsets(torch.tensor(q0)[None])
    np.testing.assert_allclose(off[0][0].numpy(), r_star, rtol=0, atol=1e-12)
    ref = router(torch.tensor(r)[None], torch.tensor(params), offsets=off)[0].numpy()
    times = np.datetime64("2010-03-01") + np.arange(T).astype("timedelta64[h]")
    da = xr.DataArray(r - r_star[:, None], {"reach": net.ids, "time": times},
                      ("reach", "time"))
    ingest(da, tmp_path / "forcing.zarr", network=net, chunks=(64, 8))
    out = tmp_path / "warm.zarr"
    route_distributed(client, net, part, str(tmp_path / "forcing.zarr"), str(out), params,
                      time_chunk=CHUNK, lakes=lakes, baseline=q0, **kw)
    got = open_output(str(out), net).values
    # the forcing store holds float32: r - r* rounded (~1e-8 relative)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    assert np.abs(got[lay.outlet] - q0[lay.outlet, None]).max() > 1e-3  # the lakes act


def test_interrupted_run_with_lakes_resumes_bit_for_bit(client, forest, forest_lakes,
                                                        tmp_path):
    """A run with lakes cut short by a forcing failure in its last chunk, then resumed: its
    finished chunks are reused, or routed again from the state saved after the chunk before
    them where later groups need their buffers (the lake groups from their saved elevations
    and volumes), and the store, the lakes' end levels and their volumes equal an
    undisturbed run's."""
    from hydroscale.io import IOFormatError, RunProgress

    net, params, part = forest
    kw = dict(irf="muskingum", substeps=SUBSTEPS, dtype=torch.float64, allow_unstable=True,
              window=T, time_chunk=CHUNK, lakes=forest_lakes)

    def run(out, **fail):
        forcing = SyntheticForcing(T, seed=4, scale=2.0, interval_s=DT, **fail)
        return route_distributed(client, net, part, forcing, str(out), params, **kw)

    ref = run(tmp_path / "ref.zarr")
    out = tmp_path / "resumed.zarr"
    fail = 2 * CHUNK + 3
    with pytest.raises(RuntimeError, match=f"forcing unavailable from step {fail}"):
        run(out, fail_at=fail)  # chunks 0 and 1 finish, chunk 2 fails
    with pytest.raises(IOFormatError, match="incomplete"):
        open_output(str(out), net)
    # (how far each group got before the pass stopped depends on the machine's timing)
    done = RunProgress(str(out)).done()
    assert done and max(k for _, k in done) <= 1
    lake_groups = np.flatnonzero(plan_waves(net, part, lakes=forest_lakes).group_lake)
    assert any(g in lake_groups for g, _ in done)  # some lake group saved its state
    s = run(out)
    # each group restarts from the state saved after its last finished chunk (a chunk whose
    # buffers later groups need may be routed again, from the state saved before it)
    assert s.reused_tasks > 0 and s.reused_tasks + s.recomputed_tasks >= len(done)
    assert np.array_equal(open_output(str(out), net).values,
                          open_output(str(tmp_path / "ref.zarr"), net).values)
    assert np.array_equal(np.asarray(s.lake_elevation_end), np.asarray(ref.lake_elevation_end))
    # the volumes since the run began, carried through the saved state
    np.testing.assert_allclose(s.lake_inflow_m3, ref.lake_inflow_m3, rtol=1e-12)
    np.testing.assert_allclose(s.lake_outflow_m3, ref.lake_outflow_m3, rtol=1e-12)

"""Distributed routing on a 2-worker CPU LocalCluster against the single-device StagedRouter
(same partition, same window) and the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from hydroscale.distributed import DistributedRouter, io_floor, plan_waves, route_distributed
from hydroscale.io import SyntheticForcing, hash_uniform, ingest, open_output
from hydroscale.routing import RivTreeCluster, StagedRouter, route_oracle

SUBSTEPS = 3  # sub-steps per routing step: transfers cross at sub-step resolution
T = 42
CHUNK = 16  # 3 time chunks: 16 + 16 + 10


def _runoff(net, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 5.0, (net.n_reaches, T)).astype(np.float32)


def _times():
    return np.datetime64("2010-03-01") + np.arange(T).astype("timedelta64[D]")


def _staged(net, part, r, params, window, dtype=torch.float64):
    sr = StagedRouter(RivTreeCluster(net, part.cluster_of), irf="muskingum", substeps=SUBSTEPS,
                      window=window, dtype=dtype, allow_unstable=True)
    with torch.no_grad():
        return sr(torch.as_tensor(r[None], dtype=dtype), torch.tensor(params))[0].double().numpy()


@pytest.fixture(scope="module")
def stores(forest, tmp_path_factory):
    net, params, part = forest
    plan = plan_waves(net, part)
    r = _runoff(net)
    da = xr.DataArray(r, {"reach": net.ids, "time": _times()}, ("reach", "time"))
    root = tmp_path_factory.mktemp("zarr")
    in_plan = root / "forcing_plan.zarr"
    in_net = root / "forcing_net.zarr"
    ingest(da, in_plan, network=net, reach_order=plan.reach_ids, chunks=(64, 8))
    ingest(da, in_net, network=net, chunks=(64, 8))  # network order: rows gathered
    return root, r, plan, in_plan, in_net


def test_plan_groups_are_wave_worker_sets(forest):
    net, _, part = forest
    plan = plan_waves(net, part)
    g_of_c = plan.group_of
    # every cluster lies in exactly one group, with the group's wave and worker
    for c in range(part.n_clusters):
        gs = np.unique(g_of_c[part.cluster_of == c])
        assert gs.size == 1
        assert plan.group_wave[gs[0]] == part.wave[c]
        assert plan.group_worker[gs[0]] == part.worker[c]
    # upstream groups = the groups of the partition's transfer edges
    want = {(int(plan.group_of[s]), int(plan.group_of[d]))
            for s, d in zip(part.src_reach, part.dst_reach)}
    got = {(int(u), g) for g in range(plan.n_groups) for u in plan.upstream[g]}
    assert got == want
    assert all(u < g for u, g in got)
    assert plan.cross_worker_exits() == part.cross_worker_edges() > 0


@pytest.mark.parametrize("placement", ["partition", "basins"])
def test_plan_units_cover_groups_in_dependency_order(forest, placement):
    net, _, part = forest
    plan = plan_waves(net, part, placement=placement)
    units = plan.units()
    flat = np.concatenate(units)
    assert np.array_equal(np.sort(flat), np.arange(plan.n_groups))  # each group once
    unit_of = np.empty(plan.n_groups, np.int64)
    for i, u in enumerate(units):
        unit_of[u] = i
        assert np.unique(plan.group_worker[u]).size == 1 and np.all(np.diff(u) > 0)
        for g in u[1:]:  # only a unit's first group takes other workers' input
            assert np.all(plan.group_worker[plan.upstream[g]] == plan.group_worker[u[0]])
    for g in range(plan.n_groups):  # every input comes from the same or an earlier unit
        assert np.all(unit_of[plan.upstream[g]] <= unit_of[g])
    if placement == "basins":
        assert len(units) == plan.n_workers  # one task per worker and chunk
    else:
        assert plan.n_workers < len(units) < plan.n_groups


def test_fused_and_unfused_passes_are_identical(client, forest):
    net, params, part = forest
    forcing = SyntheticForcing(T, seed=2, scale=2.0)
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           allow_unstable=True, dtype=torch.float64) as dr:
        assert dr.plan.cross_worker_exits() > 0
        fused = dr.route(forcing, None, CHUNK)
        single = dr.route(forcing, None, CHUNK, fuse=False)
    assert fused.tasks == single.tasks == fused.groups * fused.chunks
    assert fused.checksum == single.checksum


@pytest.mark.parametrize("order", ["plan", "network"])
def test_equals_staged_router_float64(client, forest, stores, order):
    net, params, part = forest
    root, r, plan, in_plan, in_net = stores
    out = root / f"out64_{order}.zarr"
    s = route_distributed(client, net, part, str(in_plan if order == "plan" else in_net), str(out),
                          params, time_chunk=CHUNK, irf="muskingum", substeps=SUBSTEPS,
                          dtype=torch.float64, allow_unstable=True)
    assert s.chunks == 3 and s.workers == 2 and s.plan["cross_worker_exits"] > 0
    got = open_output(str(out), net)
    assert got.dtype == np.float64  # the store holds the run's dtype
    ref = _staged(net, part, r, params, s.window)
    rel = np.abs(got.values - ref).max() / np.abs(ref).max()
    assert rel <= 1e-12
    assert s.checksum == pytest.approx(ref.sum(), rel=1e-12)


def test_params_in_every_form_route_takes(client, forest):
    """A mapping of a reach-labelled DataArray (shuffled) and a [N] array, as hydroscale.route
    takes it, routes the same as the [N, P] table."""
    net, params, part = forest
    forcing = SyntheticForcing(T, seed=2, scale=2.0)
    perm = np.random.default_rng(4).permutation(net.n_reaches)
    k = xr.DataArray(params[perm, 0], {"feature_id": net.ids[perm]}, ("feature_id",))
    forms = {"k": k, "x": params[:, 1].tolist()}
    sums = [route_distributed(client, net, part, forcing, None, p, time_chunk=CHUNK,
                              irf="muskingum", substeps=SUBSTEPS, dtype=torch.float64,
                              allow_unstable=True).checksum
            for p in (params, forms)]
    assert sums[0] == sums[1] and sums[0] > 0
    with pytest.raises(ValueError, match=r"params\['k'\] must be a scalar or \[N = "):
        route_distributed(client, net, part, forcing, None, {"k": params[:5, 0], "x": 0.2},
                          time_chunk=CHUNK, irf="muskingum", substeps=SUBSTEPS)


def test_equals_staged_router_float32_and_oracle(client, forest, stores):
    net, params, part = forest
    root, r, plan, in_plan, _ = stores
    out = root / "out32.zarr"
    s = route_distributed(client, net, part, str(in_plan), str(out), params, time_chunk=CHUNK,
                          irf="muskingum", substeps=SUBSTEPS, allow_unstable=True)
    got = open_output(str(out), net).values.astype(np.float64)
    ref32 = _staged(net, part, r, params, s.window, torch.float32)
    assert np.linalg.norm(got - ref32) / np.linalg.norm(ref32) <= 1e-6
    oracle = route_oracle(net, r.astype(np.float64), "muskingum", params, substeps=SUBSTEPS,
                          allow_unstable=True)
    oracle = np.asarray(oracle)
    # exact up to float32 and the reported truncated mass of the window
    assert np.linalg.norm(got - oracle) / np.linalg.norm(oracle) <= 1e-5 + s.max_truncated_mass


def test_basin_placement_equals_staged_router(client, forest):
    net, params, part = forest
    forcing = SyntheticForcing(T, seed=2, scale=2.0)
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           allow_unstable=True, dtype=torch.float64, placement="basins") as dr:
        assert dr.plan.cross_worker_exits() == 0
        per = np.diff(dr.plan.rows, axis=1).ravel()
        loads = [int(per[dr.plan.group_worker == w].sum()) for w in range(2)]
        assert max(loads) - min(loads) <= np.bincount(np.unique(
            net.basin, return_inverse=True)[1]).max()
        s = dr.route(forcing, None, CHUNK)
    r = (hash_uniform(torch.arange(net.n_reaches), 0, T, 2) * 2.0).numpy()
    ref = _staged(net, part, r, params, s.window)  # routed by the partition's clusters
    assert s.checksum == pytest.approx(ref.sum(), rel=1e-12)


def test_output_metadata(client, forest, stores):
    net, params, part = forest
    root, _, plan, in_plan, _ = stores
    out = root / "out_meta.zarr"
    s = route_distributed(client, net, part, str(in_plan), str(out), params, time_chunk=CHUNK,
                          irf="muskingum", substeps=SUBSTEPS, allow_unstable=True,
                          run_metadata={"user": "ci"})
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["hydroscale_store"] == "output"
    assert g.attrs["units"] == "m3 s-1"
    assert np.array_equal(g["reach"][:], plan.reach_ids)
    assert sorted(g["reach"][:].tolist()) == sorted(net.ids.tolist())
    t = np.datetime64("1970-01-01T00:00:00", "s") + g["time"][:].astype("timedelta64[s]")
    assert np.array_equal(t.astype("datetime64[D]"), _times())
    assert g.attrs["interval_s"] == 86400
    run = g.attrs["run"]
    assert run["irf"] == "muskingum" and run["substeps"] == SUBSTEPS
    assert run["window"] == s.window and run["time_chunk"] == CHUNK
    assert run["partition"]["workers"] == 2 and run["user"] == "ci"
    da = open_output(str(out), net)
    assert da.dims == ("reach", "time") and np.array_equal(da["reach"].values, net.ids)


def test_synthetic_forcing_reused_router_and_io_floor(client, forest, tmp_path):
    net, params, part = forest
    forcing = SyntheticForcing(T, seed=9, scale=3.0)
    # small batches: (wave, worker) sets split into several groups, several routers per worker
    with DistributedRouter(client, net, part, params, irf="muskingum", substeps=SUBSTEPS,
                           allow_unstable=True, dtype=torch.float64, batch_reaches=40) as dr:
        assert dr.plan.n_groups > plan_waves(net, part, max_group_reaches=None).n_groups
        assert sum(w["routers"] for w in dr.worker_setup) > 2
        for w in dr.worker_setup:  # where each worker's set-up went
            assert set(w["phases_s"]) == {"cache", "routers", "window"}
            agg = w["aggregate_phases_s"]
            assert agg["first_batch"] > 0 and agg["other_batches"] >= 0
            assert agg["first_batch"] + agg["other_batches"] == pytest.approx(w["aggregate_s"])
        a = dr.route(forcing, None, CHUNK)
        b = dr.route(forcing, None, 20)  # second pass: state reset, other chunking
    r = (hash_uniform(torch.arange(net.n_reaches), 0, T, 9) * 3.0).numpy()
    ref = _staged(net, part, r, params, a.window)
    assert a.checksum == pytest.approx(ref.sum(), rel=1e-12)
    assert b.checksum == pytest.approx(ref.sum(), rel=1e-12)
    floor = io_floor(client, net, part, forcing, str(tmp_path / "floor.zarr"), CHUNK)
    # float32 blocks: rows summed over time in float32 (the checksum reads a block once)
    assert floor.checksum == pytest.approx(float(r.astype(np.float64).sum()), rel=1e-6)
    copied = open_output(str(tmp_path / "floor.zarr"), net).values
    assert np.array_equal(copied, r)


def test_worker_count_must_match(client, forest):
    from hydroscale.partition import partition_network

    net, params, _ = forest
    part3 = partition_network(net, max_reaches=24, min_reaches=4, n_workers=3)
    with pytest.raises(ValueError, match="n_workers=2"):
        route_distributed(client, net, part3, SyntheticForcing(T), None, params, time_chunk=CHUNK,
                          irf="muskingum", substeps=SUBSTEPS, allow_unstable=True)


def test_array_forcing_is_refused(client, forest):
    net, params, part = forest
    with pytest.raises(TypeError, match="ingest"):
        route_distributed(client, net, part, np.zeros((net.n_reaches, T)), None, params,
                          time_chunk=CHUNK, irf="muskingum", substeps=SUBSTEPS)


def test_irf_in_place_of_params_is_refused(client, forest):
    """The IRF is a routing option (irf=...), not a positional argument before params."""
    net, params, part = forest
    with pytest.raises(TypeError, match=r"params must be \[N, P\] parameters or a callable, got "
                                        r"the string 'muskingum'; an IRF is given as "
                                        r"irf='muskingum'"):
        route_distributed(client, net, part, SyntheticForcing(T), None, "muskingum")
    with DistributedRouter(client, net, part, params[:, :1], irf="linear_storage", substeps=2,
                           allow_unstable=True) as dr:
        assert (dr.options.irf_name, dr.options.substeps, dr.irf) == ("linear_storage", 2,
                                                                       "linear_storage")

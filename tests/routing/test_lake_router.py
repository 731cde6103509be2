"""Routing with lakes (LakeRouter) against an independent float64 oracle written here: the
reaches in topological order, each linear reach by a plain Muskingum recursion at sub-step
resolution, each lake by the plain-Python level-pool reference when its outlet comes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _engine_cases import random_forest
from _lake_reference import ref_route

import hydroscale
from hydroscale.kernels import triton_available
from hydroscale.network import RiverNetwork
from hydroscale.routing import (
    LEVEL_POOL_PARAMS,
    LakeError,
    LakeLayout,
    LakeRouter,
    Lakes,
    RivTreeCluster,
)

DT = 3600.0


def muskingum_substeps(inflow: np.ndarray, k: float, x: float, f: int) -> np.ndarray:
    """Plain Muskingum recursion at dt = 1/f step (k in steps) of sub-step mean inflow."""
    dt = 1.0 / f
    den = 2 * k * (1 - x) + dt
    c0, c1, c2 = (dt - 2 * k * x) / den, (dt + 2 * k * x) / den, (2 * k * (1 - x) - dt) / den
    q = np.zeros_like(inflow)
    prev_i = prev_q = 0.0
    for t, i in enumerate(inflow):
        q[t] = c0 * i + c1 * prev_i + c2 * prev_q
        prev_i, prev_q = i, q[t]
    return q


def oracle_with_lakes(net: RiverNetwork, runoff: np.ndarray, k: np.ndarray, x: np.ndarray,
                      lakes: Lakes, f: int, h0: np.ndarray | None = None) -> np.ndarray:
    """[N, T] runoff -> [N, T] discharge (lake reaches: their lake's outflow)."""
    n, t = runoff.shape
    idx = net.index_of(lakes.reach_ids)
    lake_of = np.full(n, -1)
    lake_of[idx] = lakes.lake_of
    inflow = np.repeat(runoff, f, axis=1).astype(np.float64)  # sub-step inflow
    lake_in = np.zeros((lakes.n_lakes, t * f))
    for j in range(n):
        if lake_of[j] >= 0:
            lake_in[lake_of[j]] += inflow[j]
    q = np.zeros((n, t * f))
    out_of_lake = {}
    start = lakes.initial_elevation() if h0 is None else h0
    down = net.downstream
    for j in net.topo_order:
        lk = lake_of[j]
        d = down[j]
        if lk < 0:
            q[j] = muskingum_substeps(inflow[j], k[j], x[j], f)
        elif d < 0 or lake_of[d] != lk:  # the outlet: every inflow of the lake is known
            params = dict(zip(LEVEL_POOL_PARAMS, lakes.params[lk]))
            out, _ = ref_route(list(lake_in[lk]), params, DT / f, float(start[lk]))
            out_of_lake[lk] = np.asarray(out)
            q[j] = out_of_lake[lk]
        else:
            continue  # inside a lake: nothing leaves here
        if d >= 0:
            if lake_of[d] >= 0 and lake_of[d] != lk:
                lake_in[lake_of[d]] += q[j]
            elif lake_of[d] < 0:
                inflow[d] += q[j]
    for j in range(n):
        if lake_of[j] >= 0:
            q[j] = out_of_lake[lake_of[j]]
    return q.reshape(n, t, f).mean(-1)


def lake_params(rng: np.random.Generator, n: int) -> np.ndarray:
    cols = dict(area=rng.uniform(1e5, 4e5, n), max_elevation=np.full(n, 12.0),
                weir_elevation=np.full(n, 10.5), weir_coefficient=rng.uniform(0.4, 1.5, n),
                weir_length=rng.uniform(5.0, 20.0, n), dam_length=np.full(n, 10.0),
                orifice_elevation=np.full(n, 5.0), orifice_coefficient=rng.uniform(0.1, 0.6, n),
                orifice_area=np.ones(n))
    return np.stack([cols[c] for c in LEVEL_POOL_PARAMS], axis=1)


def lakes_on(net: RiverNetwork, seed: int) -> Lakes:
    """Three lakes: A (a reach and one of its upstream reaches), B downstream of A (the reach
    A drains into, and the next one: lake -> lake), C elsewhere, downstream of B if it can."""
    rng = np.random.default_rng(seed)
    down = net.downstream
    up_count = np.bincount(down[down >= 0], minlength=net.n_reaches)
    cand = [j for j in net.topo_order if up_count[j] >= 1 and down[j] >= 0
            and down[down[j]] >= 0 and down[down[down[j]]] >= 0]
    a = int(cand[rng.integers(0, max(1, len(cand) // 3))])
    ups = np.flatnonzero(down == a)
    lake_a = [a, int(ups[0])]
    lake_b = [int(down[a]), int(down[down[a]])]
    taken = set(lake_a + lake_b)
    c = int(down[lake_b[-1]])  # downstream of B, one reach between them when it can
    c = int(down[c]) if down[c] >= 0 else c
    lake_c = [c] if c not in taken else [int(j) for j in net.topo_order
                                         if int(j) not in taken][:1]
    members = {901: net.ids[lake_a], 902: net.ids[lake_b], 903: net.ids[lake_c]}
    return Lakes.from_members(members, lake_params(rng, 3), rng.uniform(0.5, 0.9, 3))


def muskingum(net: RiverNetwork, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return rng.uniform(0.7, 1.5, net.n_reaches), rng.uniform(0.02, 0.1, net.n_reaches)


def lake_case(seed: int, runoff_seed: int, shape: tuple[int, int], low: float = 0.0):
    """A two-tree forest with :func:`lakes_on` lakes: ``(net, lakes, k, x, p [N, 2], runoff
    [B, N, T])`` (runoff U(low, 3) m3/s, ``shape = (B, T)``)."""
    net = random_forest([14, 9], seed)
    lakes = lakes_on(net, seed)
    k, x = muskingum(net, seed)
    rng = np.random.default_rng(runoff_seed)
    runoff = torch.tensor(rng.uniform(low, 3.0, (shape[0], net.n_reaches, shape[1])))
    return net, lakes, k, x, torch.tensor(np.stack([k, x], 1)), runoff


@pytest.mark.parametrize("engine", ["oracle", "torch"])
@pytest.mark.parametrize("seed,f", [(0, 1), (1, 2), (2, 3)])
def test_matches_oracle(engine, seed, f):
    net = random_forest([14, 9], seed)
    lakes = lakes_on(net, seed)
    k, x = muskingum(net, seed)
    rng = np.random.default_rng(seed + 7)
    t = 30
    runoff = rng.uniform(0.0, 3.0, (net.n_reaches, t)) * (1 + 4 * (np.arange(t) < 6))
    router = LakeRouter(net, lakes, irf="muskingum", substeps=f, dt=DT, engine=engine,
                        dtype=torch.float64, window_tolerance=1e-12)
    layout = router.layout
    assert layout.n_stages >= 2  # B is downstream of A
    q = router(torch.tensor(runoff)[None], torch.tensor(np.stack([k, x], 1)))
    ref = oracle_with_lakes(net, runoff, k, x, lakes, f)
    np.testing.assert_allclose(q[0].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())
    # lakes really act: the outflow of lake A differs from its inflow's pass-through
    vin = router.last_lakes["inflow_volume"][0]
    vout = router.last_lakes["outflow_volume"][0]
    area = torch.tensor(lakes.param("area"))
    dh = router.last_lakes["elevation_end"][0] - router.last_lakes["elevation_start"][0]
    torch.testing.assert_close(vin - vout, area * dh, rtol=1e-6, atol=1e-6 * float(vin.max()))
    assert float((vin - vout).abs().max()) > 1e-3 * float(vin.max())


def test_chunks_carry_lake_state():
    net = random_forest([12, 6], 4)
    lakes = lakes_on(net, 4)
    k, x = muskingum(net, 4)
    rng = np.random.default_rng(5)
    runoff = torch.tensor(rng.uniform(0.0, 3.0, (2, net.n_reaches, 24)))
    p = torch.tensor(np.stack([k, x], 1))
    kw = dict(irf="muskingum", substeps=2, dt=DT, dtype=torch.float64, window_tolerance=1e-12)
    whole = LakeRouter(net, lakes, **kw)(runoff, p)
    router = LakeRouter(net, lakes, **kw)
    qa, st = router(runoff[..., :10], p, return_state=True)
    qb, st = router(runoff[..., 10:], p, state=st, return_state=True)
    assert st.steps == 24
    torch.testing.assert_close(torch.cat([qa, qb], -1), whole, rtol=1e-9, atol=1e-9)
    ref = oracle_with_lakes(net, runoff[1].numpy(), k, x, lakes, 2)
    np.testing.assert_allclose(whole[1].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())


@pytest.mark.parametrize("engine", ["oracle", "torch"])
def test_gradients_through_lakes(engine):
    """d(loss at the outlet below the lakes) / d(k upstream of lake A, weir coefficients):
    autograd equals central finite differences."""
    net = random_forest([10], 6, shuffle=False)
    lakes = lakes_on(net, 6)
    k, x = muskingum(net, 6)
    rng = np.random.default_rng(8)
    runoff = torch.tensor(rng.uniform(0.0, 3.0, (1, net.n_reaches, 16)))
    router = LakeRouter(net, lakes, irf="muskingum", substeps=2, dt=DT, engine=engine,
                        dtype=torch.float64, window_tolerance=1e-12)
    outlet = int(net.outlets[0])
    w = torch.linspace(0.5, 1.5, 16, dtype=torch.float64)
    wc_col = LEVEL_POOL_PARAMS.index("weir_coefficient")

    def loss(kk: torch.Tensor, wc: torch.Tensor) -> torch.Tensor:
        p = torch.stack([kk, torch.tensor(x)], 1)
        lp = torch.tensor(lakes.params).clone()
        lp[:, wc_col] = wc
        return (router(runoff, p, lake_params=lp)[0, outlet] * w).sum()

    k0 = torch.tensor(k, requires_grad=True)
    wc0 = torch.tensor(lakes.param("weir_coefficient"), requires_grad=True)
    val = loss(k0, wc0)
    gk, gw = torch.autograd.grad(val, (k0, wc0))
    # k of a reach upstream of lake A, and every weir coefficient
    lake_a = int(net.index_of(lakes.reach_ids[lakes.lake_of == 0])[0])
    upstream = [j for j in range(net.n_reaches) if net.downstream[j] == lake_a
                and j not in net.index_of(lakes.reach_ids)]
    checks = [("k", j) for j in upstream[:1]] + [("wc", i) for i in range(lakes.n_lakes)]
    assert checks
    for what, i in checks:
        h = 1e-6
        kp, km = k0.detach().clone(), k0.detach().clone()
        wp, wm = wc0.detach().clone(), wc0.detach().clone()
        (kp if what == "k" else wp)[i] += h
        (km if what == "k" else wm)[i] -= h
        fd = float(loss(kp, wp) - loss(km, wm)) / (2 * h)
        got = float(gk[i] if what == "k" else gw[i])
        assert got == pytest.approx(fd, rel=1e-5, abs=1e-7 * abs(float(val.detach()))), (what, i)
    assert any(abs(float(g)) > 0 for g in gw)


def test_layout_errors_name_the_lakes():
    net = RiverNetwork.from_arrays([1, 2, 3, 4, 5], [3, 3, 5, 5, 0])
    p = lake_params(np.random.default_rng(0), 1)
    with pytest.raises(LakeError, match=r"lakes \[7\].*more than one reach"):
        LakeLayout.build(net, Lakes.from_members({7: [1, 2]}, p, [0.5]))
    with pytest.raises(LakeError, match=r"lakes \[7\].*not in the network: \[99\]"):
        LakeLayout.build(net, Lakes.from_members({7: [3, 99]}, p, [0.5]))
    with pytest.raises(LakeError, match="lakes without reaches"):
        Lakes(np.array([7, 8]), np.array([3]), np.array([0]), np.repeat(p, 2, 0), [0.5, 0.5])
    bad = p.copy()
    bad[0, 1] = np.nan
    with pytest.raises(LakeError, match=r"lakes \[7\] miss level-pool parameters "
                                        r"\['max_elevation'\]"):
        Lakes.from_members({7: [3]}, bad, [0.5])
    lay = LakeLayout.build(net, Lakes.from_members({7: [1, 2, 3]}, p, [0.5]))
    assert net.ids[lay.outlet].tolist() == [3] and net.ids[lay.lake_down].tolist() == [5]
    assert lay.reach_stage.tolist() == [1, 1, 1, 0, 1]


def test_synthetic_lakes_are_two_connected_reaches():
    """Lakes.synthetic: about ``fraction`` of the reaches in two-reach lakes (a reach and one
    reach draining into it), no reach in two lakes, valid NWM parameters, reproducible."""
    from hydroscale.network import continental_forest

    net = continental_forest(5000, seed=4)
    lakes = Lakes.synthetic(net, 0.02, seed=1)
    assert lakes.n_lakes == 50 and lakes.reach_ids.size == 100
    assert np.unique(lakes.reach_ids).size == 100
    pos = net.index_of(lakes.reach_ids).reshape(-1, 2)
    assert (net.downstream[pos[:, 1]] == pos[:, 0]).all()  # the second drains into the first
    assert ((lakes.ifd >= 0.6) & (lakes.ifd <= 0.9)).all()
    assert (lakes.param("weir_elevation") < lakes.param("max_elevation")).all()
    LakeLayout.build(net, lakes)  # a layout the router accepts
    again = Lakes.synthetic(net, 0.02, seed=1)
    assert np.array_equal(again.reach_ids, lakes.reach_ids)
    assert not np.array_equal(Lakes.synthetic(net, 0.02, seed=2).reach_ids, lakes.reach_ids)


@pytest.mark.parametrize("seed,f", [(3, 3), (5, 2)])
def test_block_sparse_path_cuts_one_cluster_at_the_lakes(seed, f):
    """A partition with the whole network in one cluster (lakes in its middle): each lake
    becomes its own node cluster, the linear reaches are routed at the routing step with f
    channels at exits and inlets only, and the result equals the oracle."""
    net = random_forest([16, 7], seed)
    lakes = lakes_on(net, seed)
    k, x = muskingum(net, seed)
    rng = np.random.default_rng(seed + 11)
    runoff = rng.uniform(0.0, 3.0, (net.n_reaches, 20)) * (1 + 3 * (np.arange(20) < 5))
    router = LakeRouter(net, lakes, irf="muskingum", substeps=f, dt=DT, engine="torch",
                        dtype=torch.float64, window_tolerance=1e-12,
                        partition=lambda sub: np.zeros(sub.n_reaches, np.int64))
    sr, cs = router.router, router.clusters
    assert sr.f == f and not router.stages  # one router at step resolution, no stage path
    lake_idx = net.index_of(lakes.reach_ids)
    for j in range(lakes.n_lakes):  # each lake is exactly one cluster
        mem = lake_idx[lakes.lake_of == j]
        c = np.unique(cs.cluster_of[mem])
        assert c.size == 1 and np.array_equal(np.sort(cs.cluster_reaches(int(c[0]))),
                                              np.sort(mem))
    # the only exits: the reaches draining into a lake and the lakes' outlets (a tributary
    # joining below a lake stays with the reaches it joins)
    lay = router.layout
    down = net.downstream
    feeders = [j for j in range(net.n_reaches) if lay.reach_lake[j] < 0 and down[j] >= 0
               and lay.reach_lake[down[j]] >= 0]
    assert cs.n_exits == len(feeders) + int((lay.lake_down >= 0).sum())
    # the lakes of a stage share one wave, after the last cluster feeding any of them; the
    # other clusters sit at their longest-path levels (waiting only for what feeds them);
    # within a wave the linear clusters come first: one fused level-pool loop per stage
    lake_c = np.unique(cs.cluster_of[lake_idx])
    assert np.unique(cs.wave_of[lake_c]).size == router.n_stages
    src = np.flatnonzero(down >= 0)
    src = src[cs.cluster_of[src] != cs.cluster_of[down[src]]]
    pred = [cs.wave_of[cs.cluster_of[src[cs.cluster_of[down[src]] == c]]]
            for c in range(cs.n_clusters)]
    asap = np.array([p.max() + 1 if p.size else 0 for p in pred])
    linear = np.setdiff1d(np.arange(cs.n_clusters), lake_c)
    np.testing.assert_array_equal(cs.wave_of[linear], asap[linear])
    c_stage = np.array([lay.lake_stage[lay.reach_lake[cs.cluster_reaches(int(c))[0]]]
                        for c in lake_c])
    for st in range(1, router.n_stages + 1):
        assert np.unique(cs.wave_of[lake_c[c_stage == st]]).size == 1
        assert cs.wave_of[lake_c[c_stage == st]][0] == asap[lake_c[c_stage == st]].max()
    assert sum(node for node, _ in sr._schedule()) == router.n_stages
    q = router(torch.tensor(runoff)[None], torch.tensor(np.stack([k, x], 1)))
    ref = oracle_with_lakes(net, runoff, k, x, lakes, f)
    np.testing.assert_allclose(q[0].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())
    # the lake loop in pieces of time (its float64 inflow bounded) gives the same
    router.nodes.max_elements = 7 * f  # a few steps per piece
    q2 = router(torch.tensor(runoff)[None], torch.tensor(np.stack([k, x], 1)))
    torch.testing.assert_close(q2, q, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="in no later wave"):
        RivTreeCluster(net, cs.cluster_of, np.zeros(cs.n_clusters, np.int64))


def test_stage_waves_wait_only_for_what_feeds_them():
    """Two basins, every reach its own cluster (indices):

        A: 0 -> L1(1) -> 2 -> 3 -> 4 -> 5          (a long main stem below a stage-1 lake)
        B: 6 -> L2(7) -> 8 -> L3(9) -> 10           (a stage-2 lake below a stage-1 lake)

    Lakes L1, L2 (stage 1) share wave 1; L3 (stage 2) runs at wave 3, right after reach 8
    (wave 2), not after A's main stem (waves 2-5); reach 10 at wave 4.  Within a wave the
    linear clusters come first, so each stage is one node run (one fused loop), and the
    routing equals the oracle's."""
    down = np.array([1, 2, 3, 4, 5, -1, 7, 8, 9, 10, -1])
    net = RiverNetwork(np.arange(1, 12), down)
    rng = np.random.default_rng(4)
    lakes = Lakes.from_members({1: [2], 2: [8], 3: [10]}, lake_params(rng, 3),
                               rng.uniform(0.5, 0.9, 3))
    router = LakeRouter(net, lakes, irf="muskingum", substeps=2, dt=DT, engine="torch",
                        dtype=torch.float64, window_tolerance=1e-12,
                        partition=lambda sub: np.arange(sub.n_reaches))
    cs = router.clusters
    wave = cs.wave_of[cs.cluster_of]
    np.testing.assert_array_equal(wave, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4])
    assert router.n_stages == 2
    # waves 0-5: {0, 6}, {L1, L2}, {2, 8}, {3} then {L3}, {4, 10}, {5}
    assert [node for node, _ in router.router._schedule()] == [
        False, True, False, False, True, False, False]
    k, x = muskingum(net, 4)
    runoff = rng.uniform(0.0, 3.0, (net.n_reaches, 12))
    q = router(torch.tensor(runoff)[None], torch.tensor(np.stack([k, x], 1)))
    ref = oracle_with_lakes(net, runoff, k, x, lakes, 2)
    np.testing.assert_allclose(q[0].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())


def test_warm_start_block_sparse_equals_stage_path():
    """A warm start (steady offsets) with unsteady runoff: the one-router path (offset-free
    discharge across stages, the feeders' start discharge added to the lakes' inflow) gives
    what the stage path of the oracle engine gives, also across two time chunks."""
    net, lakes, k, x, p, runoff = lake_case(2, 21, (1, 18), low=0.5)
    kw = dict(irf="muskingum", substeps=2, dt=DT, dtype=torch.float64, window_tolerance=1e-12)
    # a start discharge: the accumulated runoff of 2 m3/s per reach
    q0 = torch.tensor(np.asarray(hydroscale.accumulate(net, np.full(net.n_reaches, 2.0))))[None]
    ref_router = LakeRouter(net, lakes, engine="oracle", **kw)
    ref = ref_router(runoff, p, offsets=ref_router.steady_offsets(q0))
    router = LakeRouter(net, lakes, engine="torch", **kw)
    off = router.steady_offsets(q0)
    torch.testing.assert_close(router(runoff, p, offsets=off), ref, rtol=1e-9, atol=1e-9)
    qa, st = router(runoff[..., :7], p, offsets=off, return_state=True)
    qb, _ = router(runoff[..., 7:], p, offsets=off, state=st, return_state=True)
    torch.testing.assert_close(torch.cat([qa, qb], -1), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") != "1" or not triton_available(),
                    reason="the Triton engine on CPU runs only under TRITON_INTERPRET=1")
def test_triton_engine_and_lake_loop_match_oracle(monkeypatch):
    """The triton engine with the lakes' Triton loop (every kernel backend Triton) against
    the oracle, on CPU through the interpreter."""
    monkeypatch.setenv("HYDROSCALE_KERNEL_BACKEND", "triton")
    net = random_forest([9, 6], 7)
    lakes = lakes_on(net, 7)
    k, x = muskingum(net, 7)
    runoff = np.random.default_rng(9).uniform(0.0, 3.0, (net.n_reaches, 10))
    router = LakeRouter(net, lakes, irf="muskingum", substeps=2, dt=DT, engine="triton",
                        dtype=torch.float64, window_tolerance=1e-12)
    q = router(torch.tensor(runoff)[None], torch.tensor(np.stack([k, x], 1)))
    ref = oracle_with_lakes(net, runoff, k, x, lakes, 2)
    np.testing.assert_allclose(q[0].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())

    def grads() -> list[torch.Tensor]:  # through the lakes' adjoint kernel, or torch's loop
        kk = torch.tensor(k, requires_grad=True)
        lp = torch.tensor(lakes.params, requires_grad=True)
        out = router(torch.tensor(runoff)[None], torch.stack([kk, torch.tensor(x)], 1),
                     lake_params=lp)
        out[0, int(net.outlets[0])].sum().backward()
        return [kk.grad, lp.grad]

    got = grads()
    monkeypatch.setenv("HYDROSCALE_KERNEL_BACKEND", "torch")
    for a, b in zip(got, grads()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert float(got[1].abs().max()) > 0

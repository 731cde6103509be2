"""The block-sparse engine (RivTreeCluster, path kernels, StagedRouter, LTIRouter) against the
float64 oracle router."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from _engine_cases import random_clusters, random_forest

from hydroscale.kernels import triton_available
from hydroscale.network import RiverNetwork
from hydroscale.routing import (
    LevelRouter,
    LTIRouter,
    RivTreeCluster,
    RouterState,
    RoutingOptions,
    StagedRouter,
    WindowTruncationError,
    get_engine,
    route_oracle,
    select_engine,
)

N_T = 30
# Tests of the engine's mechanics (chunks, per-cluster steps, backends, gradients) use short
# windows on purpose (small kernels): both sides of each comparison share the truncation, so
# they accept it; routing with such a window is otherwise refused (test_short_window_*).
SHORT = {"window_tolerance": math.inf}


def _params(irf: str, n: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.uniform
    return {
        "muskingum": lambda: np.stack([u(0.3, 0.8, n), u(0.05, 0.3, n)], 1),
        "linear_storage": lambda: u(0.2, 0.8, (n, 1)),
        "nash_cascade": lambda: np.stack([u(0.1, 0.4, n), u(1.0, 3.0, n)], 1),
        "pure_lag": lambda: u(0.0, 0.9, (n, 1)),
        "hayami": lambda: np.stack([u(1e4, 3e4, n), u(1e7, 3e7, n), u(4e4, 8e4, n)], 1),
    }[irf]()


@pytest.fixture(scope="module")
def forest() -> RiverNetwork:
    return random_forest([12, 3, 20, 0], seed=1)


@pytest.fixture(scope="module")
def clusters(forest) -> RivTreeCluster:
    cs = RivTreeCluster(forest, random_clusters(forest, 0.25, 0.5, seed=2))
    assert cs.n_clusters > 3 and cs.n_exits > 3 and cs.n_waves > 2
    assert np.bincount(cs.exit_inlet[cs.exit_inlet >= 0]).max() > 1  # inlets fed by 2 exits
    return cs


def _rel(q: torch.Tensor, q0: torch.Tensor) -> float:
    return float((q - q0).norm() / q0.norm())


# ----------------------------------------------------------------------------- structure
def test_transfer_tables_on_hand_made_tree(small_tree):
    # ids 6 3 1 9 4 2 5 ; 1,2 -> 3 -> 5 -> 6 ; 4 -> 5 ; 9 alone
    idx = {int(i): k for k, i in enumerate(small_tree.ids)}
    cl = np.zeros(7, dtype=np.int64)
    for rid, c in {1: 0, 2: 0, 3: 0, 4: 1, 9: 1, 5: 2, 6: 2}.items():
        cl[idx[rid]] = c
    cs = RivTreeCluster(small_tree, cl)
    assert (cs.n_clusters, cs.n_waves, cs.n_exits, cs.n_inlets) == (3, 2, 2, 1)
    assert sorted(small_tree.ids[cs.exit_reach].tolist()) == [3, 4]
    assert small_tree.ids[cs.inlet_reach].tolist() == [5]
    assert cs.wave_of.tolist() == [0, 0, 1]
    t = cs[2]
    assert sorted(t.ids.tolist()) == [5, 6] and t.n_inlets == 1 and t.n_exits == 0
    assert sorted(small_tree.ids[t.inlet_from[0][:, 1]].tolist()) == [3, 4]
    down_ids = [t.ids[d] if d >= 0 else 0 for d in t.downstream]
    assert dict(zip(t.ids.tolist(), down_ids)) == {5: 6, 6: 0}
    t0 = cs[0]
    assert t0.exit_to[:, 0].tolist() == [2] and small_tree.ids[t0.exit_to[0, 1]] == 5


def test_cluster_of_errors_name_reaches(small_tree):
    idx = {int(i): k for k, i in enumerate(small_tree.ids)}
    cl = np.zeros(7, dtype=np.int64)
    cl[idx[6]] = 0
    cl[[idx[r] for r in (1, 2, 3, 4, 5, 9)]] = 1  # 5 (cluster 1) drains into 6 (cluster 0)
    with pytest.raises(ValueError, match=r"upstream clusters have smaller ids.*\[5\]"):
        RivTreeCluster(small_tree, cl)
    with pytest.raises(ValueError, match="without gaps"):
        RivTreeCluster(small_tree, np.where(np.arange(7) < 3, 0, 2))
    with pytest.raises(ValueError, match=r"must be \[N=7\]"):
        RivTreeCluster(small_tree, np.zeros(6, dtype=np.int64))


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "irf, substeps",
    [("muskingum", 1), ("muskingum", 3), ("linear_storage", 2), ("nash_cascade", 1),
     ("pure_lag", 2), ("hayami", 1)],
)
def test_partitioned_equals_oracle(forest, clusters, irf, substeps):
    rng = np.random.default_rng(3)
    p = torch.tensor(_params(irf, forest.n_reaches, rng))
    r = torch.rand(2, forest.n_reaches, N_T, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(4))
    q0 = route_oracle(forest, r, irf, p, substeps=substeps, allow_unstable=True)
    router = StagedRouter(clusters, irf=irf, substeps=substeps, window=N_T, dtype=torch.float64,
                          backend="torch", allow_unstable=True)
    q = router(r, p)
    assert q.shape == q0.shape and q.dtype == torch.float64
    # the window covers the whole series here, so only the tail beyond it is dropped
    assert np.nanmax(router.truncated_mass) < 1e-9
    assert _rel(q, q0) < 1e-10


def test_partitioned_equals_whole_network(forest, clusters):
    rng = np.random.default_rng(5)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    kw = dict(substeps=4, window=N_T, dtype=torch.float64, backend="torch", allow_unstable=True)
    q_part = StagedRouter(clusters, irf="muskingum", **kw)(r, p)
    q_whole = LTIRouter(forest, irf="muskingum", **kw)(r, p)  # one cluster, no transfers
    q0 = route_oracle(forest, r, "muskingum", p, substeps=4, allow_unstable=True)
    small = StagedRouter(clusters, irf="muskingum", max_batch_reaches=8, **kw)  # waves split
    assert len(small._batches()) > clusters.n_waves
    assert _rel(small(r, p), q_part) < 1e-13
    assert _rel(q_part, q_whole) < 1e-10
    assert _rel(q_whole, q0) < 1e-10


def test_truncated_mass_reported_and_bounds_the_error(forest):
    cs = RivTreeCluster.by_basin(forest)
    rng = np.random.default_rng(6)
    p = torch.tensor(rng.uniform(1.0, 2.0, (forest.n_reaches, 1)))  # slow linear stores
    r = torch.ones(1, forest.n_reaches, N_T, dtype=torch.float64)
    q0 = route_oracle(forest, r, "linear_storage", p)
    with pytest.raises(WindowTruncationError, match=r"window of 4 steps of a 30-step run "
                                                     r"cuts off more than window_tolerance"):
        StagedRouter(cs, irf="linear_storage", window=4, dtype=torch.float64, backend="torch")(r, p)
    short = StagedRouter(cs, irf="linear_storage", window=4, dtype=torch.float64, backend="torch",
                         **SHORT)
    long = StagedRouter(cs, irf="linear_storage", window=N_T, dtype=torch.float64, backend="torch")
    q_short, q_long = short(r, p), long(r, p)
    m_short, m_long = short.truncated_mass, long.truncated_mass
    assert m_short.shape == (cs.n_clusters,) and m_short.max() > 0.5
    assert np.all(m_long <= m_short + 1e-15) and m_long.min() < 1e-6
    # with unit inflow the discharge deficit of a reach is at most the mass its paths lose
    deficit = (q0 - q_short)[0, :, -1]
    assert torch.all(deficit >= -1e-12)
    n_up = torch.tensor(_n_upstream(forest), dtype=torch.float64)
    assert torch.all(deficit <= torch.tensor(m_short[cs.cluster_of]) * n_up + 1e-12)
    assert _rel(q_long, q0) < _rel(q_short, q0)


def _n_upstream(net: RiverNetwork) -> np.ndarray:
    """Reaches upstream of (and including) each reach."""
    n = np.ones(net.n_reaches)
    for lv in range(net.n_levels):
        idx = net.topo_order[net.level_ptr[lv] : net.level_ptr[lv + 1]]
        d = net.downstream[idx]
        ok = d >= 0
        np.add.at(n, d[ok], n[idx[ok]])
    return n


@pytest.mark.parametrize("tolerance", [1e-4, 1e-6, 1e-9])
def test_auto_window_is_the_shortest_within_the_tolerance(forest, clusters, tolerance):
    rng = np.random.default_rng(7)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    router = StagedRouter(clusters, irf="muskingum", substeps=3, dtype=torch.float64,
                          backend="torch", allow_unstable=True, window_tolerance=tolerance)
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    q = router(r, p)
    k = router.window
    assert 2 <= k <= N_T
    # the bound it searches below (mean + 10 sd of the travel times), or past it when even
    # the bound leaves more than the tolerance out
    bound = StagedRouter(clusters, irf="muskingum", substeps=3, dtype=torch.float64,
                         backend="torch", allow_unstable=True, window_tolerance=0)
    k_bound = bound.auto_window(p)
    if k > k_bound:
        at_bound = StagedRouter(clusters, irf="muskingum", substeps=3, window=k_bound,
                                dtype=torch.float64, backend="torch", allow_unstable=True,
                                **SHORT)
        at_bound.aggregate(p)
        assert np.nanmax(at_bound.truncated_mass) > tolerance
    # within the tolerance (or the whole run: taps past it never act)
    assert np.nanmax(router.truncated_mass) <= tolerance or k == N_T
    # one step shorter leaves more than the tolerance out (unless K is the floor of 2)
    if k > 2:
        short = StagedRouter(clusters, irf="muskingum", substeps=3, window=k - 1,
                             dtype=torch.float64, backend="torch", allow_unstable=True, **SHORT)
        short.aggregate(p)
        assert np.nanmax(short.truncated_mass) > tolerance
    # the error against the oracle is within the truncated mass (a unit response per path)
    q0 = route_oracle(forest, r, "muskingum", p, substeps=3, allow_unstable=True)
    assert _rel(q, q0) < 10 * max(np.nanmax(router.truncated_mass), 1e-13)


def test_window_tolerance_is_checked(clusters):
    with pytest.raises(ValueError, match="window_tolerance must be >= 0, got -0.5"):
        StagedRouter(clusters, irf="muskingum", window_tolerance=-0.5)


def test_routers_take_their_options_as_one_object(forest, clusters):
    """One RoutingOptions object (the IRF one of its fields) configures every engine;
    keywords amend it; an IRF in the options' place is refused with the call to write."""
    opts = RoutingOptions(irf="linear_storage", substeps=2, window=N_T, dtype=torch.float64,
                          backend="torch")
    rng = np.random.default_rng(7)
    p = torch.tensor(_params("linear_storage", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    q0 = route_oracle(forest, r, "linear_storage", p, substeps=2)
    for router in (StagedRouter(clusters, opts), LTIRouter(forest, opts),
                   LevelRouter(forest, opts)):
        assert router.options.irf_name == "linear_storage" and router.f == 2
        assert _rel(router(r, p), q0) < 1e-12
    amended = StagedRouter(clusters, opts, substeps=3)
    assert (amended.f, amended.options.irf_name, opts.substeps) == (3, "linear_storage", 2)
    for engine, net in ((StagedRouter, clusters), (LevelRouter, forest)):
        with pytest.raises(TypeError, match=r"options must be a RoutingOptions, got the IRF "
                                            r"'muskingum'; pass it as irf='muskingum'"):
            engine(net, "muskingum", substeps=2)


def test_unstable_parameters_are_refused_unless_allowed(forest, clusters):
    p = torch.tensor(np.stack([np.full(forest.n_reaches, 3 / 24), np.full(forest.n_reaches, .3)],
                              1))
    router = StagedRouter(clusters, irf="muskingum", substeps=24, window=4, backend="torch")
    with pytest.raises(ValueError, match="allow_unstable"):
        router.aggregate(p)


# ----------------------------------------------------------------------------- time chunks
def test_chunked_equals_unchunked_and_state_resumes(forest, clusters, tmp_path):
    rng = np.random.default_rng(8)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(2, forest.n_reaches, N_T, dtype=torch.float64)
    router = StagedRouter(clusters, irf="muskingum", substeps=3, window=8, dtype=torch.float64,
                          backend="torch", allow_unstable=True, **SHORT)
    kern = router.aggregate(p)
    whole = router(r, kernels=kern)
    qa, st = router(r[..., :11], kernels=kern, return_state=True)
    assert st.runoff_hist.shape == (2, forest.n_reaches, 7)
    assert st.inflow_hist.shape == (2, clusters.n_inlets, 3, 7)
    path = st.save(tmp_path / "state.npz")
    qb, st2 = router(r[..., 11:15], kernels=kern, state=RouterState.load(path), return_state=True)
    qc = router(r[..., 15:], kernels=kern, state=st2)  # chunk shorter/longer than the window
    chunked = torch.cat([qa, qb, qc], dim=-1)
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-13 * float(whole.abs().max()))
    with pytest.raises(ValueError, match="window 8"):
        router(r, kernels=kern, state=router.init_state(1))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_chunk_per_cluster_matches_staged(forest, clusters, backend):
    """The distributed runtime's step: route cluster by cluster, passing outflow buffers (the
    runoff and inflow terms written into the exit and reach tensors by one launch)."""
    if backend == "triton" and not (triton_available()
                                    and os.environ.get("TRITON_INTERPRET") == "1"):
        pytest.skip("the Triton path runs on CPU only under TRITON_INTERPRET=1")
    rng = np.random.default_rng(9)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    router = StagedRouter(clusters, irf="muskingum", substeps=2, window=10, dtype=torch.float64,
                          backend=backend, allow_unstable=True, **SHORT)
    kern = router.aggregate(p)
    want = router(r, kernels=kern)
    got = torch.empty_like(want)
    outflows: dict[int, torch.Tensor] = {}
    for c in range(clusters.n_clusters):
        reaches = clusters[c].reaches
        inflow = router.inflow_for(c, outflows)
        state = router.init_cluster_state(c, 1)
        # two time chunks with carried state
        q1, out1, state = router.forward_chunk(c, r[:, reaches, :13], _part(inflow, 0, 13),
                                               state, kern)
        q2, out2, _ = router.forward_chunk(c, r[:, reaches, 13:], _part(inflow, 13, None),
                                           state, kern)
        got[:, reaches] = torch.cat([q1, q2], -1)
        outflows[c] = torch.cat([out1, out2], -1)
        assert outflows[c].shape == (1, clusters[c].n_exits, 2, N_T)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_inflow_for_sums_feeders_in_exit_order_bit_for_bit():
    """A reach fed by three clusters' exits (and a cluster with two such inlets): the inlet
    inflow is every feeder's buffer summed in exit order, the bits of a plain loop."""
    #      0   1   2        3   4
    #       \  |  /          \ /
    #         5               6      clusters: {0} {1} {2} {3} {4} {5, 6, 7}
    #          \             /
    #                7
    ids = np.arange(1, 9)
    down = np.array([5, 5, 5, 6, 6, 7, 7, -1])  # downstream indices
    net = RiverNetwork(ids, down)
    cs = RivTreeCluster(net, np.array([0, 1, 2, 3, 4, 5, 5, 5]))
    router = StagedRouter(cs, irf="muskingum", substeps=3, window=4, dtype=torch.float32,
                          allow_unstable=True)
    gen = torch.Generator().manual_seed(3)
    outflows = {u: torch.randn(2, cs[u].n_exits, 3, 7, generator=gen) * 10 ** u
                for u in range(5)}
    got = router.inflow_for(5, outflows)
    want = torch.zeros(2, cs[5].n_inlets, 3, 7)
    i0 = int(cs.inlet_ptr_cluster[5, 0])
    for e in range(cs.n_exits):  # ascending exit order, as the sum is defined
        c = int(cs.exit_inlet[e])
        if c >= i0 and c < i0 + cs[5].n_inlets:
            u = int(cs.cluster_of[cs.exit_reach[e]])
            want[:, c - i0] += outflows[u][:, e - int(cs.exit_ptr_cluster[u, 0])]
    assert got.shape == (2, 2, 3, 7)
    assert torch.equal(got, want)
    assert router.inflow_for(0, outflows) is None
    with pytest.raises(KeyError, match="upstream cluster 4"):
        router.inflow_for(5, {u: outflows[u] for u in range(4)})


def _part(x, a, b):
    return None if x is None else x[..., a:b]


def test_lti_router_on_one_cluster_with_inflow(forest, clusters):
    rng = np.random.default_rng(10)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    staged = StagedRouter(clusters, irf="muskingum", substeps=2, window=10, dtype=torch.float64,
                          backend="torch", allow_unstable=True, **SHORT)
    kern = staged.aggregate(p)
    q_all = staged(r, kernels=kern)
    c = int(np.argmax([clusters[i].n_inlets for i in range(clusters.n_clusters)]))
    # upstream exits' buffers, from routing every cluster once
    outflows = {}
    for u in range(c):
        _, outflows[u], _ = staged.forward_chunk(u, r[:, clusters[u].reaches],
                                                 staged.inflow_for(u, outflows), None, kern)
    one = LTIRouter(clusters, irf="muskingum", cluster=c, substeps=2, window=10,
                    dtype=torch.float64, backend="torch", allow_unstable=True, **SHORT)
    q = one(r[:, clusters[c].reaches], p, inflow=staged.inflow_for(c, outflows))
    assert torch.allclose(q, q_all[:, clusters[c].reaches], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_params_and_runoff():
    net = random_forest([3, 1], seed=11)
    cs = RivTreeCluster(net, random_clusters(net, 0.3, 0.0, seed=12))
    assert np.bincount(cs.exit_inlet[cs.exit_inlet >= 0]).max() > 1  # inlets fed by 2 exits
    rng = np.random.default_rng(13)
    p = torch.tensor(_params("muskingum", net.n_reaches, rng), requires_grad=True)
    r = torch.rand(1, net.n_reaches, 8, dtype=torch.float64, requires_grad=True)
    router = StagedRouter(cs, irf="muskingum", substeps=2, window=5, dtype=torch.float64,
                          backend="torch", allow_unstable=True, **SHORT)
    assert torch.autograd.gradcheck(lambda pp, rr: router(rr, pp), (p, r), fast_mode=True)


def test_gradient_matches_oracle_gradient():
    net = random_forest([5, 2], seed=14)
    cs = RivTreeCluster(net, random_clusters(net, 0.3, 0.3, seed=15))
    rng = np.random.default_rng(16)
    p0 = _params("linear_storage", net.n_reaches, rng)
    r = torch.rand(2, net.n_reaches, 16, dtype=torch.float64)  # batch 2: strided row grads
    w = torch.rand(2, net.n_reaches, 16, dtype=torch.float64)
    p1 = torch.tensor(p0, requires_grad=True)
    p2 = torch.tensor(p0, requires_grad=True)
    router = StagedRouter(cs, irf="linear_storage", substeps=2, window=16, dtype=torch.float64,
                          backend="torch")
    (router(r, p1) * w).sum().backward()
    (route_oracle(net, r, "linear_storage", p2, substeps=2) * w).sum().backward()
    assert torch.allclose(p1.grad, p2.grad, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- storage, engines
def test_bf16_storage_error_is_reported_and_bounded(forest, clusters):
    rng = np.random.default_rng(17)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float32)
    q0 = route_oracle(forest, r.double(), "muskingum", p, substeps=2, allow_unstable=True)
    kw = dict(substeps=2, window=N_T, backend="torch", allow_unstable=True)
    q32 = StagedRouter(clusters, irf="muskingum", **kw)(r, p)
    q16 = StagedRouter(clusters, irf="muskingum", storage_dtype=torch.bfloat16, **kw)(r, p)
    assert q16.dtype == torch.float32
    e32, e16 = _rel(q32.double(), q0), _rel(q16.double(), q0)
    assert e32 < 1e-6
    # bf16 keeps 8 bits of mantissa: ~2e-3 per stored value, averaged over the sums
    assert 1e-5 < e16 < 1e-2


def test_float32_aggregation_is_accurate_and_reports_its_rounding(forest, clusters):
    rng = np.random.default_rng(19)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(1, forest.n_reaches, N_T, dtype=torch.float64)
    q0 = route_oracle(forest, r, "muskingum", p, substeps=2, allow_unstable=True)
    kw = dict(substeps=2, window=N_T, backend="torch", allow_unstable=True,
              dtype=torch.float64)
    r64 = StagedRouter(clusters, irf="muskingum", **kw)
    r32 = StagedRouter(clusters, irf="muskingum", aggregate_dtype=torch.float32, **kw)
    q64, q32 = r64(r, p), r32(r, p)
    assert _rel(q64, q0) < 1e-12
    # float32 kernels: ~1e-7 per value; routing itself in float64 isolates that error
    assert 1e-10 < _rel(q32, q0) < 1e-5
    assert np.nanmax(r64.truncated_mass) < 1e-12
    assert np.nanmax(r32.truncated_mass) < 1e-5
    with pytest.raises(ValueError, match="aggregate_dtype must be float32 or float64"):
        StagedRouter(clusters, irf="muskingum", aggregate_dtype=torch.float16, **kw)


def test_engines_registered_and_dispatch(forest, clusters):
    assert select_engine("cpu").name == "levels"  # no path-kernel aggregation on CPU
    if triton_available():
        assert select_engine("cuda").name == "triton"
    rng = np.random.default_rng(18)
    p = torch.tensor(_params("nash_cascade", forest.n_reaches, rng))
    r = torch.rand(2, forest.n_reaches, N_T, dtype=torch.float64)
    q = get_engine("torch").fn(forest, r, "nash_cascade", p, 2,
                               cluster_of=clusters.cluster_of, window=N_T)
    q0 = route_oracle(forest, r, "nash_cascade", p, substeps=2)
    assert _rel(q, q0) < 1e-10
    q = select_engine("cpu").fn(forest, r, "nash_cascade", p, 2, window=N_T)
    assert _rel(q, q0) < 1e-10


@pytest.mark.skipif(
    not (triton_available() and os.environ.get("TRITON_INTERPRET") == "1"),
    reason="the Triton path runs on CPU only under TRITON_INTERPRET=1",
)
@pytest.mark.parametrize("substeps, window", [(1, 3), (3, 5)])
def test_triton_path_matches_oracle(substeps, window):
    net = random_forest([6, 2], seed=19)
    cs = RivTreeCluster(net, random_clusters(net, 0.3, 0.5, seed=20))
    rng = np.random.default_rng(21)
    p = torch.tensor(_params("muskingum", net.n_reaches, rng))
    r = torch.rand(2, net.n_reaches, 20, dtype=torch.float64)
    q0 = route_oracle(net, r, "muskingum", p, substeps=substeps, allow_unstable=True)
    router = StagedRouter(cs, irf="muskingum", substeps=substeps, window=window,
                          dtype=torch.float64, backend="triton", allow_unstable=True, **SHORT)
    kern = router.aggregate(p)
    q = router(r, kernels=kern)
    # a short window: compare within the reported truncation
    bound = float(np.nanmax(kern.truncated_mass)) * float(r.max()) * net.n_reaches + 1e-12
    assert float((q - q0).abs().max()) <= bound
    ref = StagedRouter(cs, irf="muskingum", substeps=substeps, window=window, dtype=torch.float64,
                       backend="torch", allow_unstable=True, **SHORT)(r, kernels=kern)
    assert torch.allclose(q, ref, rtol=1e-12, atol=1e-12)


def _triton_device() -> str | None:
    if not triton_available():
        return None
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else None


@pytest.mark.skipif(_triton_device() is None,
                    reason="needs triton with CUDA, or TRITON_INTERPRET=1 on CPU")
@pytest.mark.parametrize("irf", ["muskingum", "linear_storage"])
def test_recursive_aggregation_equals_fft_aggregation(forest, clusters, irf):
    """With the Triton backend, IRFs with a recursive form are aggregated by running the
    filter along the paths: the same kernels, truncated mass and parameter gradients as the
    FFT convolutions of the torch backend."""
    dev = _triton_device()
    rng = np.random.default_rng(31)
    p0 = _params(irf, forest.n_reaches, rng)
    kw = dict(substeps=3, window=6, dtype=torch.float64, allow_unstable=True)
    fast = StagedRouter(clusters, irf=irf, backend="triton", device=dev, **kw)
    fft = StagedRouter(clusters, irf=irf, backend="torch", **kw)
    p1 = torch.tensor(p0, device=dev, requires_grad=True)
    p2 = torch.tensor(p0, requires_grad=True)
    k1, k2 = fast.aggregate(p1), fft.aggregate(p2)
    for a, b in [(k1.wr, k2.wr), (k1.wu, k2.wu)]:
        assert a.shape == b.shape and b.abs().max() > 0.01
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(k1.truncated_mass, k2.truncated_mass, rtol=1e-6, atol=1e-13)
    g = torch.Generator().manual_seed(32)
    w_r = torch.randn(k2.wr.shape, generator=g, dtype=torch.float64)
    w_u = torch.randn(k2.wu.shape, generator=g, dtype=torch.float64)
    ((k1.wr * w_r.to(dev)).sum() + (k1.wu * w_u.to(dev)).sum()).backward()
    ((k2.wr * w_r).sum() + (k2.wu * w_u).sum()).backward()
    assert p2.grad.abs().max() > 0
    torch.testing.assert_close(p1.grad.cpu(), p2.grad, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_inference_pass_equals_recorded_pass(forest, clusters, backend):
    """Without gradients the kernels write in place (path_conv_into): the same numbers, to
    the bit, as the recorded pass (one output per call, copied and summed)."""
    if backend == "triton" and not (triton_available()
                                    and os.environ.get("TRITON_INTERPRET") == "1"):
        pytest.skip("the Triton path runs on CPU only under TRITON_INTERPRET=1")
    rng = np.random.default_rng(8)
    p = torch.tensor(_params("muskingum", forest.n_reaches, rng))
    r = torch.rand(2, forest.n_reaches, 40, generator=torch.Generator().manual_seed(9))
    router = StagedRouter(clusters, irf="muskingum", substeps=3, window=6, backend=backend,
                          allow_unstable=True, **SHORT)
    assert clusters.n_inlets > 0  # inlet inflow: the second call adds into the first's rows
    kern = router.aggregate(p)
    with torch.no_grad():
        fast = router(r, kernels=kern)
    recorded = router(r.clone().requires_grad_(True), kernels=kern)
    assert recorded.requires_grad
    assert torch.equal(fast, recorded.detach())


def test_step_sampling_equals_substep_kernel_to_step():
    from hydroscale.irf import substep_kernel_to_step
    from hydroscale.routing._aggregation import _phase_sums, _step_kernel

    p = torch.rand(6, 5 * 4, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
    assert torch.allclose(_step_kernel(p, 4), substep_kernel_to_step(p, 4), atol=1e-15)
    # the polyphase sums, by their definition with P[<0] = 0
    pp = torch.nn.functional.pad(p, (4, 0))
    m = torch.stack([torch.stack([pp[:, 4 + kk * 4 + a - c] for c in range(4)], -1)
                     for kk in range(5) for a in range(4)], 1).view(6, 5, 4, 4)  # [n, K, a, c]
    assert torch.allclose(_phase_sums(p, 4, "c"), m.sum(-1).transpose(1, 2), atol=1e-15)
    assert torch.allclose(_phase_sums(p, 4, "a"), m.sum(-2).transpose(1, 2) / 4, atol=1e-15)


def test_hop_kernels_backward_equals_autograd_through_the_ops():
    """The hop's fused backward (step-kernel adjoint written once, the selected rows' phase
    adjoints added in place) equals autograd through the forward ops, with a row selected
    twice and a selection left out; and passes gradcheck."""
    from hydroscale.routing._aggregation import (
        _HopKernels,
        _phase_matrix,
        _phase_sums,
        _step_kernel,
    )

    g = torch.Generator().manual_seed(23)
    n, k, f = 7, 4, 5
    p = torch.randn(n, k * f, dtype=torch.float64, generator=g, requires_grad=True)
    ex, inl, both = torch.tensor([0, 3, 3, 6]), torch.tensor([1, 2]), torch.tensor([5, 1])
    got = _HopKernels.apply(p, f, ex, inl, both)
    want = (_step_kernel(p, f), _phase_sums(p[ex], f, "c"), _phase_sums(p[inl], f, "a"),
            _phase_matrix(p[both], f))
    grads = [torch.randn(w.shape, dtype=w.dtype, generator=g) for w in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    torch.testing.assert_close(torch.autograd.grad(got, p, grads)[0],
                               torch.autograd.grad(want, p, grads)[0], rtol=1e-13, atol=1e-14)
    assert torch.autograd.gradcheck(lambda q: _HopKernels.apply(q, f, None, inl, both)[:3:2],
                                    (p,))

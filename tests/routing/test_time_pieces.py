"""A forward in time pieces (``time_pieces``: the steps cut into pieces that follow each other
batch by batch) gives the discharge, lake levels and volumes of the forward in one piece,
across time chunks with carried state, and the independent float64 oracle's values.  On CPU
the pieces run one after another (the torch backend, and the Triton kernels under
TRITON_INTERPRET=1); on a GPU each on its own stream."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _engine_cases import random_forest
from test_lake_router import DT, lake_case, muskingum, oracle_with_lakes

from hydroscale.kernels import triton_available
from hydroscale.partition import partition_network
from hydroscale.routing import (
    AUTO_PIECES_WORK,
    LakeRouter,
    Lakes,
    RivTreeCluster,
    StagedRouter,
    auto_pieces,
)

ENGINES = ["torch"] + (["triton"] if os.environ.get("TRITON_INTERPRET", "0") == "1"
                       and triton_available() else [])
# the Triton kernels run in the interpreter on CPU: one case each
LAKE_CASES = [("torch", 2), ("torch", 5)] + [(e, 3) for e in ENGINES if e != "torch"]


def _chunks(route, runoff: torch.Tensor, cuts: list[int]):
    """Route ``runoff`` in time chunks ending at ``cuts`` (state carried), without gradients;
    the discharge of all chunks and the last state."""
    state, out = None, []
    with torch.no_grad():
        for a, b in zip([0, *cuts[:-1]], cuts):
            q, state = route(runoff[..., a:b], state)
            out.append(q)
    return torch.cat(out, -1), state


@pytest.mark.parametrize("engine,pieces", LAKE_CASES)
def test_lake_pieces_equal_one_piece_and_the_oracle(engine, pieces, monkeypatch):
    monkeypatch.setenv("HYDROSCALE_KERNEL_BACKEND", engine)
    net, lakes, k, x, p, runoff = lake_case(3, 4, (2, 23))
    kw = dict(irf="muskingum", substeps=2, dt=DT, dtype=torch.float64, window_tolerance=1e-12,
              engine=engine)
    one = LakeRouter(net, lakes, **kw)
    cut = LakeRouter(net, lakes, time_pieces=pieces, **kw)
    assert cut.router.time_pieces == pieces and one.router.time_pieces == "auto"
    assert cut.n_stages >= 2  # lake B is downstream of lake A

    def route(router):
        return lambda r, st: router(r, p, state=st, return_state=True)

    q1, s1 = _chunks(route(one), runoff, [9, 23])
    qp, sp = _chunks(route(cut), runoff, [9, 23])
    torch.testing.assert_close(qp, q1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sp.elevation, s1.elevation, rtol=1e-12, atol=1e-12)
    for name in ("elevation_end", "inflow_volume", "outflow_volume"):
        torch.testing.assert_close(cut.last_lakes[name], one.last_lakes[name], rtol=1e-12,
                                   atol=1e-9)
    ref = oracle_with_lakes(net, runoff[1].numpy(), k, x, lakes, 2)
    np.testing.assert_allclose(qp[1].numpy(), ref, rtol=1e-6, atol=1e-9 * ref.max())


@pytest.mark.parametrize("engine", ENGINES)
def test_plain_pieces_equal_one_piece(engine, monkeypatch):
    """A partitioned network without nodes (several waves, batches split by
    ``max_batch_reaches``), 3 pieces, two chunks; with gradients the forward is one piece."""
    monkeypatch.setenv("HYDROSCALE_KERNEL_BACKEND", engine)
    net = random_forest([22, 10], 6)
    clusters = RivTreeCluster(net, partition_network(net, max_reaches=6).cluster_of)
    assert clusters.n_waves >= 3
    rng = np.random.default_rng(7)
    p = torch.tensor(np.stack([rng.uniform(0.25, 0.4, net.n_reaches),
                               rng.uniform(0.02, 0.1, net.n_reaches)], 1))
    runoff = torch.tensor(rng.uniform(0.0, 3.0, (1, net.n_reaches, 40)))
    kw = dict(irf="muskingum", substeps=3, dtype=torch.float64, backend=engine,
              max_batch_reaches=24, window_tolerance=1e-10)
    one, cut = StagedRouter(clusters, **kw), StagedRouter(clusters, time_pieces=3, **kw)
    one.window = cut.window = one.auto_window(p, max_steps=40)
    assert 3 < one.window <= 12  # the history reaches into the second chunk's first piece
    kern = one.aggregate(p)

    def route(router):
        return lambda r, st: router(r, kernels=kern, state=st, return_state=True)

    q1, s1 = _chunks(route(one), runoff, [17, 40])
    qp, sp = _chunks(route(cut), runoff, [17, 40])
    torch.testing.assert_close(qp, q1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sp.inflow_hist, s1.inflow_hist, rtol=1e-12, atol=1e-12)
    if engine != "torch":
        return  # the gradient's path is the one-piece forward, tested with every engine
    pg = p.clone().requires_grad_(True)
    qg = cut(runoff, pg)  # gradients recorded: one piece
    qg.sum().backward()
    torch.testing.assert_close(qg.detach(), one(runoff, p), rtol=1e-12, atol=1e-12)
    assert float(pg.grad.abs().max()) > 0


def test_time_pieces_must_be_a_positive_integer_or_auto():
    net = random_forest([5], 1)
    for bad in (0, 1.5, "two", True):
        with pytest.raises(ValueError, match="time_pieces must be a positive integer or 'auto'"):
            StagedRouter(RivTreeCluster.single(net), time_pieces=bad)
    assert StagedRouter(RivTreeCluster.single(net), time_pieces=2.0).time_pieces == 2


def test_auto_pieces_cut_only_big_cuda_forwards_with_nodes():
    """"auto": 2 pieces on CUDA with node clusters from AUTO_PIECES_WORK reach sub-steps on
    (3M reaches x 365 steps x 24 sub-steps), else 1; a number is taken as it is."""
    big = dict(n_reaches=3_000_000, n_steps=365, substeps=24)
    assert 3_000_000 * 365 * 24 >= AUTO_PIECES_WORK > 200_000 * 365 * 24
    assert auto_pieces("auto", device="cuda", has_nodes=True, **big) == 2
    assert auto_pieces("auto", device="cuda:1", has_nodes=True, **big) == 2
    assert auto_pieces("auto", device="cpu", has_nodes=True, **big) == 1
    assert auto_pieces("auto", device="cuda", has_nodes=False, **big) == 1
    assert auto_pieces("auto", device="cuda", has_nodes=True, n_reaches=200_000, n_steps=365,
                       substeps=24) == 1
    assert auto_pieces(3, device="cpu", has_nodes=False, n_reaches=1, n_steps=2,
                       substeps=1) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pieces,dtype", [(2, torch.float64), (3, torch.float64),
                                          (2, torch.float32)])
def test_pieces_on_cuda_streams_equal_one_piece(pieces, dtype):
    """On a GPU each piece runs on its own stream: a forest of 30,000 reaches with 1% of them
    in lakes, three chunks with state, equals the forward in one piece (discharge, lake
    levels) and agrees with a second run (no race between the streams): to 1e-12 in
    float64; in float32 the pieces add the partial sums of the small launches in another
    order, so to 1e-5 of the largest discharge."""
    from hydroscale.kernels import hash_uniform
    from hydroscale.network import continental_forest

    net = continental_forest(30_000, seed=3)
    rng = np.random.default_rng(3)
    dev = torch.device("cuda")
    lakes = Lakes.synthetic(net, 0.01, seed=3)
    p = torch.tensor(np.stack([rng.uniform(1, 3, net.n_reaches) / 24.0,
                               rng.uniform(0.1, 0.3, net.n_reaches)], 1), device=dev)
    kw = dict(irf="muskingum", substeps=6, dt=DT, dtype=dtype, engine="triton",
              backend="triton", device=dev, allow_unstable=True,
              partition=lambda s: partition_network(s, max_reaches=512).cluster_of)
    one = LakeRouter(net, lakes, time_pieces=1, **kw)
    cut = LakeRouter(net, lakes, time_pieces=pieces, **kw)
    kern = one.aggregate(p, run_steps=120)
    idx = torch.arange(net.n_reaches, device=dev)
    runoff = torch.cat([hash_uniform(idx, 40 * c, 40 * (c + 1), 0)[None] for c in range(3)],
                       -1).to(dtype)

    def route(router):
        return lambda r, st: router(r, kernels=kern, state=st, return_state=True)

    q1, s1 = _chunks(route(one), runoff, [40, 80, 120])
    qp, sp = _chunks(route(cut), runoff, [40, 80, 120])
    qq, _ = _chunks(route(cut), runoff, [40, 80, 120])
    scale = float(q1.abs().max())
    assert scale > 0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(qp, q1, rtol=tol, atol=tol * scale)
    # (a repeat may differ in the last bits: the device adds three or more inflows into one
    # inlet or lake with atomics, in any order; a race between the streams is off by far more)
    torch.testing.assert_close(qq, qp, rtol=tol, atol=tol * scale)
    torch.testing.assert_close(sp.elevation, s1.elevation, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", range(6))
def test_random_pieces_chunks_and_batches_equal_one_piece(seed):
    """Random forests with synthetic lakes (3% of the reaches), random partition sizes,
    batch sizes, piece counts (up to more pieces than a chunk has steps) and chunk cuts
    (chunks shorter than the window among them): the discharge, the carried history and the
    lake levels equal the forward in one piece (float64, torch backend)."""
    rng = np.random.default_rng(100 + seed)
    net = random_forest([int(v) for v in rng.integers(8, 40, 3)], seed)
    lakes = Lakes.synthetic(net, 0.03, seed=seed)
    assert lakes.n_lakes >= 1
    p = torch.tensor(np.stack(muskingum(net, seed), 1))
    t = int(rng.integers(20, 50))
    runoff = torch.tensor(rng.uniform(0.0, 3.0, (2, net.n_reaches, t)))
    cuts = sorted({int(c) for c in rng.integers(1, t, 3)} | {t})
    size = int(rng.integers(3, 12))
    kw = dict(irf="muskingum", substeps=int(rng.integers(1, 4)), dt=DT, dtype=torch.float64,
              window_tolerance=1e-10, engine="torch", max_batch_reaches=int(rng.integers(4, 30)),
              partition=lambda s: partition_network(s, max_reaches=size).cluster_of)
    pieces = int(rng.integers(2, 8))
    one = LakeRouter(net, lakes, time_pieces=1, **kw)
    cut = LakeRouter(net, lakes, time_pieces=pieces, **kw)

    def route(router):
        return lambda r, st: router(r, p, state=st, return_state=True)

    q1, s1 = _chunks(route(one), runoff, cuts)
    qp, sp = _chunks(route(cut), runoff, cuts)
    scale = float(q1.abs().max())
    torch.testing.assert_close(qp, q1, rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(sp.elevation, s1.elevation, rtol=1e-12, atol=1e-12)
    for a, b in zip(sp.stages, s1.stages):
        torch.testing.assert_close(a.inflow_hist, b.inflow_hist, rtol=1e-12,
                                   atol=1e-12 * scale)

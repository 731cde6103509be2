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
from test_lake_router import DT, lake_case, oracle_with_lakes

from hydroscale.kernels import triton_available
from hydroscale.partition import partition_network
from hydroscale.routing import LakeRouter, RivTreeCluster, StagedRouter

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
    assert cut.router.time_pieces == pieces and one.router.time_pieces == 1
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


def test_time_pieces_must_be_a_positive_integer():
    net = random_forest([5], 1)
    with pytest.raises(ValueError, match="time_pieces must be a positive integer"):
        StagedRouter(RivTreeCluster.single(net), time_pieces=0)

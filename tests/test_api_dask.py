"""hydroscale.route / accumulate on dask arrays: lazy, chunking rules, values vs the oracle."""

from __future__ import annotations

import logging

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import hydroscale as hs
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.routing import route_oracle

T = 24


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net() -> RiverNetwork:
    """A forest stored basin by basin, so contiguous reach chunks can hold whole basins."""
    forest = continental_forest(600, seed=5)  # 16 basins
    return forest.reorder(np.argsort(forest.basin, kind="stable"))


@pytest.fixture(scope="module")
def case(net):
    rng = np.random.default_rng(8)
    n = net.n_reaches
    params = {"k": rng.uniform(1.0, 2.0, n), "x": rng.uniform(0.1, 0.25, n)}
    return rng.uniform(0.0, 2.0, (4, n, T)), params


def oracle(net, runoff, params):
    return route_oracle(net, runoff, "muskingum", params).numpy()


def basin_chunks(net: RiverNetwork, parts: int) -> tuple[int, ...]:
    """Reach chunks of whole basins (about ``parts`` of them) for a basin-sorted network."""
    starts = np.flatnonzero(np.diff(net.basin, prepend=-1))
    cuts = starts[np.linspace(0, starts.size, parts, endpoint=False).astype(int)]
    return tuple(np.diff(np.append(cuts, net.n_reaches)).tolist())


def counted(x: np.ndarray, chunks, calls: list) -> da.Array:
    """A dask array that records every block computation, to check laziness."""

    def load(block):
        calls.append(block.shape)
        return block

    return da.from_array(x, chunks=chunks).map_blocks(load, meta=np.empty((0,) * x.ndim))


def test_chunks_over_batch_stay_and_nothing_computes_early(net, case):
    runoff, params = case
    calls: list = []
    x = counted(runoff, (1, -1, -1), calls)
    q = hs.route(net, x, "muskingum", params)
    assert isinstance(q, da.Array) and calls == []
    assert q.chunks == x.chunks and q.dtype == np.float64
    np.testing.assert_allclose(q.compute(), oracle(net, runoff, params), rtol=1e-12, atol=1e-12)
    assert len(calls) == 4


def test_whole_basin_reach_chunks_stay(net, case):
    runoff, params = case
    chunks = basin_chunks(net, 3)
    assert len(chunks) == 3
    x = da.from_array(runoff[0].astype(np.float32), chunks=(chunks, T // 2))
    q = hs.route(net, x, "muskingum", params)
    assert q.chunks == (chunks, (T,)) and q.dtype == np.float32  # time: one chunk
    np.testing.assert_allclose(q.compute(), oracle(net, runoff[0], params), rtol=2e-6, atol=2e-5)


def test_reach_chunks_splitting_basins_are_rechunked(net, case, caplog):
    runoff, params = case
    x = da.from_array(runoff, chunks=(2, 100, -1))
    with caplog.at_level(logging.INFO, logger="hydroscale"):
        q = hs.route(net, x, "muskingum", params)
    assert "split basins" in caplog.text
    assert q.chunks == ((2, 2), (net.n_reaches,), (T,))
    np.testing.assert_allclose(q.compute(), oracle(net, runoff, params), rtol=1e-12, atol=1e-12)


def test_accumulate_keeps_time_and_basin_chunks(net):
    field = np.random.default_rng(3).uniform(size=(2, net.n_reaches, T))
    chunks = (1, basin_chunks(net, 2), 5)
    x = da.from_array(field, chunks=chunks)
    for fn in (hs.accumulate, hs.upstream, hs.downstream):
        out = fn(net, x)
        assert out.chunks == x.chunks
        np.testing.assert_allclose(out.compute(), fn(net, field), rtol=1e-12)
    np.testing.assert_allclose(
        hs.accumulate(net, x).compute(),
        route_oracle(net, field, "pure_lag", {"delay": np.float64(0)}).numpy(),
        rtol=1e-10,
    )
    counts = hs.accumulate(net, da.ones(net.n_reaches, chunks=basin_chunks(net, 2), dtype=bool))
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts.compute(), hs.accumulate(net, np.ones(net.n_reaches)))


def test_xarray_over_dask_stays_lazy(net, case):
    runoff, params = case
    perm = np.random.default_rng(0).permutation(net.n_reaches)
    arr = xr.DataArray(
        da.from_array(runoff[:, perm], chunks=(2, -1, -1)),
        dims=("member", "reach", "time"),
        coords={"reach": net.ids[perm], "member": [1, 2, 3, 4]},
        attrs={"units": "m3 s-1"},
    )
    q = hs.route(net, arr, "muskingum", params)
    assert isinstance(q.data, da.Array) and q.name == "discharge"
    assert q.attrs["units"] == "m3 s-1" and q.attrs["cell_methods"] == "time: mean"
    np.testing.assert_array_equal(q["reach"].values, arr["reach"].values)
    want = oracle(net, runoff, params)[:, perm]
    np.testing.assert_allclose(q.values, want, rtol=1e-12, atol=1e-12)


def test_graph_pickles_for_distributed(net, case):
    """Each task carries its own subnetwork and parameters: the graph must serialise."""
    import cloudpickle

    runoff, params = case
    x = da.from_array(runoff[0], chunks=(basin_chunks(net, 2), -1))
    q = hs.route(net, x, "muskingum", params)
    (graph,) = dask.optimize(q)
    restored = cloudpickle.loads(cloudpickle.dumps(graph))
    np.testing.assert_allclose(
        restored.compute(scheduler="sync"), oracle(net, runoff[0], params), rtol=1e-12
    )


def test_empty_reach_chunks(net):
    field = np.random.default_rng(5).uniform(size=(net.n_reaches, 3))
    chunks = basin_chunks(net, 2)
    x = da.from_array(field, chunks=((0, chunks[0], 0, chunks[1]), -1))
    out = hs.accumulate(net, x)
    assert out.chunks[0] == chunks  # da.block drops the empty chunks
    np.testing.assert_allclose(out.compute(), hs.accumulate(net, field), rtol=1e-12)

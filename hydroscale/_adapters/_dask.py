"""Dask arrays: one lazy task per block, each routing a whole-basin subnetwork.

A block may hold a slice of the reach axis only if no basin crosses its edges (routing and
accumulation never leave a basin); otherwise the reach axis is rechunked to one chunk.  Axes
the operation couples (time, for routing) are rechunked to one chunk as well.  Each task
carries only its own subnetwork, so graphs of large networks stay small per task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..network import RiverNetwork

__all__ = ["whole_basin_chunks", "map_reach_blocks"]

logger = logging.getLogger(__name__)

BlockFn = Callable[..., Any]


def whole_basin_chunks(network: RiverNetwork, chunks: Sequence[int]) -> bool:
    """Whether reach-axis ``chunks`` (in network order) keep every basin inside one chunk."""
    if len(chunks) <= 1:
        return True
    chunk_of = np.repeat(np.arange(len(chunks)), np.asarray(chunks, dtype=np.int64))
    return bool(np.array_equal(chunk_of, chunk_of[network.basin]))


def map_reach_blocks(
    x: Any,
    network: RiverNetwork,
    block_fn: BlockFn,
    *,
    reach_axis: int,
    whole_axes: Sequence[int] = (),
    reach_args: Sequence[Any] = (),
    dtype: Any,
    name: str,
) -> Any:
    """Apply ``block_fn(subnetwork, block, *args)`` lazily to every block of ``x``.

    ``block_fn`` returns a block of the same shape (dtype ``dtype``, the input block's array
    type).  ``args`` are the ``reach_args`` (per-reach arrays ``[N, ...]`` in network order, e.g.
    parameters) sliced to the block's reaches, so a task carries only its own share.
    """
    import dask
    import dask.array as da

    rechunk: dict[int, int] = {a: -1 for a in whole_axes if len(x.chunks[a]) > 1}
    if not whole_basin_chunks(network, x.chunks[reach_axis]):
        logger.info(
            "%s: reach chunks %s split basins; rechunking the reach axis to one chunk "
            "(chunk by whole basins to keep them parallel)",
            name,
            x.chunks[reach_axis][:8],
        )
        rechunk[reach_axis] = -1
    if rechunk:
        x = x.rechunk(rechunk)
    bounds = np.concatenate([[0], np.cumsum(x.chunks[reach_axis])]).astype(np.int64)
    nets = (
        [network]
        if len(bounds) == 2
        else [
            network.subnetwork(np.arange(a, b)) if b > a else None
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
    )
    meta = x._meta.astype(dtype)
    blocks = x.to_delayed()
    out = np.empty(blocks.shape, dtype=object)
    call = dask.delayed(block_fn, pure=False)
    for idx in np.ndindex(blocks.shape):
        k = idx[reach_axis]
        shape = tuple(x.chunks[a][i] for a, i in enumerate(idx))
        sl = slice(int(bounds[k]), int(bounds[k + 1]))
        if nets[k] is None:  # an empty reach chunk
            task = dask.delayed(_astype, pure=True)(blocks[idx], dtype)
        else:
            task = call(nets[k], blocks[idx], *(a[sl] for a in reach_args))
        out[idx] = da.from_delayed(task, shape=shape, dtype=dtype, meta=meta)
    return da.block(out.tolist())


def _astype(block: Any, dtype: Any) -> Any:
    return block.astype(dtype)

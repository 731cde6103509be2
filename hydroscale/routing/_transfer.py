"""Transfer inflow across cluster boundaries: the inlets of a cluster summed from the exit
outflows ``[B, n_exit, f, T]`` of the clusters feeding it (one gather per upstream cluster,
one add per further feeder rank), for :meth:`StagedRouter.inflow_for
<hydroscale.routing.StagedRouter.inflow_for>` and :class:`~hydroscale.routing.LakeNodes`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._rivtree import RivTreeCluster

__all__ = ["inlet_feed", "sum_inflow"]


def sum_inflow(feed: Any, cluster: int, outflows: dict[int, torch.Tensor]
               ) -> torch.Tensor | None:
    """The inlet inflow ``[B, n_inlet_c, f, T]`` of ``cluster`` from the outflows ``{upstream
    cluster: [B, n_exit, f, T]}`` of the clusters feeding it, gathered as ``feed``
    (:func:`inlet_feed`) says; None without inlets (see :meth:`StagedRouter.inflow_for`)."""
    if feed is None:
        return None
    srcs, cols, firsts, ranks = feed
    missing = [s for s in srcs if s not in outflows]
    if missing:
        raise KeyError(f"outflow of upstream cluster {missing[0]} (feeding cluster "
                       f"{cluster}) is missing")
    dev = outflows[srcs[0]].device
    parts = [outflows[s].index_select(1, c.to(dev)) for s, c in zip(srcs, cols)]
    rows = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # [B, n_feeding, f, T]
    acc = rows if firsts is None else rows.index_select(1, firsts.to(dev))
    for at, take in ranks:
        at = at.to(dev)
        acc[:, at] = acc[:, at] + rows.index_select(1, take.to(dev))
    return acc


def inlet_feed(cs: RivTreeCluster, cluster: int, device: Any) -> Any:
    """How :func:`sum_inflow` gathers cluster ``cluster``'s inlets (None without inlets):
    the upstream clusters, the exit rows read from each (in exit order), then, as positions
    among the rows read, every inlet's first feeder (None when that is the identity) and per
    further feeder rank ``(inlets, rows)``."""
    i0, i1 = (int(x) for x in cs.inlet_ptr_cluster[cluster])
    if i1 == i0:
        return None
    feeding = np.flatnonzero((cs.exit_inlet >= i0) & (cs.exit_inlet < i1))  # exit order
    src = cs.cluster_of[cs.exit_reach[feeding]].astype(np.int64)
    srcs = np.unique(src)
    # rows read: source by source, each source's exits in exit order; `pos[e]` is the
    # position of feeding exit e among them
    by_src = np.argsort(src, kind="stable")
    pos = np.empty(feeding.size, np.int64)
    pos[by_src] = np.arange(feeding.size)
    inlet = cs.exit_inlet[feeding] - i0
    by = np.lexsort((feeding, inlet))  # per inlet, its feeders in exit order
    inlet, pos = inlet[by], pos[by]
    rank = np.arange(inlet.size) - np.searchsorted(inlet, inlet)
    if not np.array_equal(inlet[rank == 0], np.arange(i1 - i0)):
        raise ValueError(f"cluster {cluster} has an inlet that no exit feeds")
    t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
    cols = [t(feeding[src == s] - cs.exit_ptr_cluster[s, 0]) for s in srcs]
    first = pos[rank == 0]
    ranks = [(t(inlet[rank == j]), t(pos[rank == j])) for j in range(1, int(rank.max()) + 1)]
    identity = first.size == feeding.size and np.array_equal(first, np.arange(first.size))
    return [int(x) for x in srcs], cols, None if identity else t(first), ranks

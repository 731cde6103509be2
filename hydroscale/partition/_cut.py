"""Cutting a river forest into clusters bounded in reaches and in within-cluster travel time.

The cut is a vectorised form of the Kundu-Misra greedy for partitioning a tree into the fewest
connected parts under a weight bound: walking the network level by level from the headwaters,
each reach keeps its lightest upstream subtrees while the accumulated size fits and cuts the
heaviest ones.  The travel-time bound works alike: an upstream subtree whose longest path, plus
the reach itself, would exceed the bound is cut.  Every step is a numpy operation over all the
reaches of one topological level; there is no loop over reaches.

Small clusters (whole small basins, or small subtrees left near outlets) are then packed into
shared clusters (forests) of the same topological wave, which leaves the cluster DAG acyclic and
every wave unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..network import RiverNetwork, format_ids

__all__ = ["PartitionError", "CutResult", "cut_forest", "merge_small_clusters"]

logger = logging.getLogger(__name__)


class PartitionError(ValueError):
    """Partition bounds that cannot be met, or a saved partition that does not fit a network."""


@dataclass
class CutResult:
    """Connected clusters from :func:`cut_forest` (internal).

    Attributes
    ----------
    cluster_of : int64 [N], cluster label of each reach (0..C-1, not yet topologically ordered).
    cut_child : int64 [E], reach index of the upstream end of each cut edge.
    size : int64 [C], reaches per cluster.
    travel_time : float64 [C], longest within-cluster path travel time (routing steps), 0 when
        no travel times were given.
    wave : int64 [C], 0 for clusters without upstream clusters, else 1 + max over them.
    """

    cluster_of: np.ndarray
    cut_child: np.ndarray
    size: np.ndarray
    travel_time: np.ndarray
    wave: np.ndarray


def _check_travel_time(
    network: RiverNetwork, travel_time: np.ndarray | None, max_travel_time: float | None
) -> np.ndarray | None:
    if travel_time is None and max_travel_time is None:
        return None
    if travel_time is None or max_travel_time is None:
        raise PartitionError(
            "travel_time and max_travel_time go together: pass travel_time (per-reach upper "
            "bound in routing steps, e.g. from hydroscale.partition.travel_time_bound) and "
            "max_travel_time (e.g. a fraction of the kernel window, in routing steps)"
        )
    t = np.asarray(travel_time, dtype=np.float64)
    if t.shape != (network.n_reaches,):
        raise PartitionError(
            f"travel_time must have one value per reach [{network.n_reaches}], got {t.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(t) | (t < 0))
    if bad.size:
        raise PartitionError(
            f"travel_time must be finite and >= 0; reaches {format_ids(network.ids[bad])} have "
            f"{format_ids(np.round(t[bad], 6))}"
        )
    if not np.isfinite(max_travel_time) or max_travel_time <= 0:
        raise PartitionError(f"max_travel_time must be > 0 routing steps, got {max_travel_time}")
    over = np.flatnonzero(t > max_travel_time)
    if over.size:
        shown = ", ".join(
            f"reach {int(network.ids[i])}: {t[i]:.6g}" for i in over[np.argsort(-t[over])][:10]
        )
        raise PartitionError(
            f"{over.size} reach(es) alone exceed the within-cluster travel-time bound "
            f"max_travel_time={max_travel_time:.6g} routing steps ({shown}); no cluster can hold "
            "them with an exact kernel window: raise max_travel_time (a longer kernel window), "
            "or lower these reaches' travel-time parameters or their bounds"
        )
    return t


def _runs(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``keys`` sorted in runs of equal values (non-empty): the first index of every run,
    and for every element the sum of the ``values`` before it in its run."""
    start = np.empty(keys.size, dtype=bool)
    start[0] = True
    np.not_equal(keys[1:], keys[:-1], out=start[1:])
    first = np.flatnonzero(start)
    cs = np.cumsum(values)
    return first, cs - values - (cs[first] - values[first])[np.cumsum(start) - 1]


def cut_forest(
    network: RiverNetwork,
    max_reaches: int,
    travel_time: np.ndarray | None = None,
    max_travel_time: float | None = None,
) -> CutResult:
    """Cut ``network`` into connected subtrees of at most ``max_reaches`` reaches.

    Parameters
    ----------
    network : the river network (N reaches).
    max_reaches : the largest cluster size (reaches).
    travel_time : optional float [N], per-reach travel-time upper bound (routing steps).
    max_travel_time : bound on the longest path travel time inside a cluster (routing steps):
        the sum of ``travel_time`` over any upstream-to-downstream path within one cluster,
        both ends included.

    Returns
    -------
    CutResult with clusters labelled in no particular order.
    """
    if int(max_reaches) != max_reaches or max_reaches < 1:
        raise PartitionError(f"max_reaches must be a positive integer, got {max_reaches}")
    max_reaches = int(max_reaches)
    t = _check_travel_time(network, travel_time, max_travel_time)
    n = network.n_reaches
    down = network.downstream
    order = network.topo_order
    ptr = network.level_ptr
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n, dtype=np.int64)
    # Edges child -> parent grouped by the parent's position in topological order, so that the
    # edges into the reaches of level l form one contiguous slice, parents in slice order.
    child = np.flatnonzero(down >= 0)
    key = pos[down[child]]
    srt = np.argsort(key, kind="stable")
    child, key = child[srt], key[srt]
    del srt
    eptr = np.searchsorted(key, ptr)
    size = np.ones(n, dtype=np.int64)
    acc_t = t.copy() if t is not None else None
    wave = np.zeros(n, dtype=np.int64)
    cut = np.zeros(child.size, dtype=bool)
    for lv in range(1, network.n_levels):
        a, b = int(eptr[lv]), int(eptr[lv + 1])
        c, k = child[a:b], key[a:b]
        s = size[c]
        if acc_t is not None:
            parents = order[k]
            forced = acc_t[c] + t[parents] > max_travel_time
            s_sort = np.where(forced, max_reaches + 1, s)
        else:
            forced = None
            s_sort = s
        # by parent, then lightest subtree first; k is sorted already, so timsort runs fast
        o = np.argsort(k * (max_reaches + 2) + s_sort, kind="stable")
        s_o = s_sort[o]
        first, before = _runs(k[o], s_o)
        incl = before + s_o
        keep = incl + 1 <= max_reaches  # forced cuts sort last and never fit
        cut[a + o] = ~keep
        c_o = c[o]
        par = order[ptr[lv] : ptr[lv + 1]]  # one segment per parent, same order
        size[par] = 1 + np.add.reduceat(np.where(keep, s_o, 0), first)
        if acc_t is not None:
            acc_t[par] = t[par] + np.maximum.reduceat(np.where(keep, acc_t[c_o], 0.0), first)
        w = wave[c_o]
        wave[par] = np.maximum.reduceat(np.where(keep, w, w + 1), first)
    cut_child = child[cut]
    is_root = down < 0
    is_root[cut_child] = True
    root_of = np.empty(n, dtype=np.int64)
    for lv in range(network.n_levels - 1, -1, -1):
        j = order[ptr[lv] : ptr[lv + 1]]
        root_of[j] = np.where(is_root[j], j, root_of[np.maximum(down[j], 0)])
    roots = np.flatnonzero(is_root)
    label = np.full(n, -1, dtype=np.int64)
    label[roots] = np.arange(roots.size, dtype=np.int64)
    cluster_of = label[root_of]
    tt = acc_t[roots] if acc_t is not None else np.zeros(roots.size)
    logger.debug("cut %d reaches into %d connected clusters", n, roots.size)
    return CutResult(cluster_of, cut_child, size[roots], tt, wave[roots])


def merge_small_clusters(
    network: RiverNetwork, cut: CutResult, max_reaches: int, min_reaches: int
) -> CutResult:
    """Pack clusters smaller than ``min_reaches`` into shared clusters (forests).

    Only clusters of the same wave are packed together, grouped by the cluster they drain into,
    so the cluster DAG stays acyclic, waves are unchanged and a merged cluster's longest path
    is the longest of its parts.  Packing is consecutive in (wave, downstream cluster, size)
    order with bins of ``max_reaches - min_reaches + 1`` starting offsets, so no merged cluster
    exceeds ``max_reaches``.
    """
    if not 1 <= min_reaches <= max_reaches:
        raise PartitionError(
            f"min_reaches must lie in [1, max_reaches={max_reaches}], got {min_reaches}"
        )
    n_c = cut.size.size
    small = np.flatnonzero(cut.size < min_reaches)
    if small.size < 2:
        return cut
    # Downstream cluster of each connected cluster: that of its root's downstream reach.
    down = network.downstream
    root = np.empty(n_c, dtype=np.int64)
    # the root of a connected cluster is its only reach whose downstream lies elsewhere
    leaves_cluster = (down < 0) | (cut.cluster_of[np.maximum(down, 0)] != cut.cluster_of)
    r = np.flatnonzero(leaves_cluster)
    root[cut.cluster_of[r]] = r
    dr = down[root[small]]
    dest = np.where(dr >= 0, cut.cluster_of[np.maximum(dr, 0)], -1)
    o = np.lexsort((cut.size[small], dest, cut.wave[small]))
    small, dest = small[o], dest[o]
    w = cut.wave[small]
    _, excl = _runs(w, cut.size[small])
    capacity = max_reaches - min_reaches + 1
    bin_in_wave = excl // capacity
    # new labels: big clusters keep one each, small ones share one per (wave, bin)
    group_key = np.stack([w, bin_in_wave], axis=1)
    _, group = np.unique(group_key, axis=0, return_inverse=True)
    group = group.reshape(-1)
    new_label = np.empty(n_c, dtype=np.int64)
    big = np.ones(n_c, dtype=bool)
    big[small] = False
    n_big = int(big.sum())
    new_label[big] = np.arange(n_big, dtype=np.int64)
    new_label[small] = n_big + group
    n_new = n_big + int(group.max()) + 1
    size = np.bincount(new_label, weights=cut.size, minlength=n_new).astype(np.int64)
    tt = np.zeros(n_new)
    np.maximum.at(tt, new_label, cut.travel_time)
    wave = np.zeros(n_new, dtype=np.int64)
    wave[new_label] = cut.wave
    logger.debug("merged %d small clusters into %d", small.size, int(group.max()) + 1)
    return CutResult(new_label[cut.cluster_of], cut.cut_child, size, tt, wave)

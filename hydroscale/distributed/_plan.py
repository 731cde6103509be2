"""The wave plan: groups of clusters (one wave on one worker) and their dependencies.

All clusters of one wave placed on one worker are independent of each other (an edge
between clusters always goes to a later wave), so they are routed together by one task
per time chunk: a *group*.  Groups are numbered by (wave, worker), a topological order of
the group DAG, and the network partitioned by group is a valid
:class:`~hydroscale.routing.RivTreeCluster`: its in-group path pairs are exactly the
in-cluster pairs of the partition, so routing by group equals routing by cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..network import RiverNetwork
from ..partition import Partition
from ..routing import LakeLayout, Lakes, RivTreeCluster
from ._recovery import in_worker_order, worker_addresses

__all__ = ["WavePlan", "batch_groups", "group_sizes", "map_workers", "place_basins",
           "plan_waves"]

logger = logging.getLogger(__name__)


@dataclass
class WavePlan:
    """Groups of clusters and what flows between them.

    Attributes
    ----------
    network : the routed network (N reaches).
    groups : :class:`RivTreeCluster` of the network by group (G groups).
    group_of : int64 ``[N]`` group of every reach.
    group_wave, group_worker : int64 ``[G]`` wave and partition worker index of every group.
    upstream : list of ``G`` int64 arrays: the groups whose exits feed each group.
    rows : int64 ``[G, 2]`` (start, stop) row range of every group in :attr:`order`.
    order : int64 ``[N]`` engine order (global reach indices); groups are contiguous row
        ranges of it.  The output store's rows follow it; a forcing store ingested with
        ``reach_order=plan.reach_ids`` is read by contiguous row ranges.
    n_workers : W, the partition's worker count.
    layout : the lakes (:class:`~hydroscale.routing.LakeLayout`) the plan was cut at, or
        None.
    group_lake : bool ``[G]``, the groups of lakes (each stepped by one fused level-pool
        loop per time chunk; never holding a reach outside lakes).
    """

    network: RiverNetwork
    groups: RivTreeCluster
    group_of: np.ndarray
    group_wave: np.ndarray
    group_worker: np.ndarray
    upstream: list[np.ndarray]
    rows: np.ndarray
    order: np.ndarray
    n_workers: int
    layout: LakeLayout | None = None
    group_lake: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return int(self.group_wave.size)

    @property
    def n_waves(self) -> int:
        return int(self.group_wave.max()) + 1 if self.group_wave.size else 0

    @property
    def reach_ids(self) -> np.ndarray:
        """int64 ``[N]`` reach ids in :attr:`order` (the row order of the stores)."""
        return self.network.ids[self.order]

    def groups_of_worker(self, worker: int) -> np.ndarray:
        """Group ids placed on partition worker ``worker``, in topological order."""
        return np.flatnonzero(self.group_worker == worker)

    def units(self) -> list[np.ndarray]:
        """Groups cut into *units*: runs of consecutive groups of one worker (topological
        order) that one task can route in turn.  A unit starts at every group fed by a
        group of another worker, so its external inputs all enter at its first group (or
        come from earlier units of its own worker); ordered by (wave, id) of their first
        group, as returned, every unit comes after the units it depends on (no cycle).  With
        ``placement="basins"`` (nothing crosses workers) a worker's groups form one unit."""
        out: list[np.ndarray] = []
        for w in range(self.n_workers):
            cur: list[int] = []
            for g in self.groups_of_worker(w).tolist():
                ups = self.upstream[g]
                if cur and np.any(self.group_worker[ups] != w):
                    out.append(np.asarray(cur, np.int64))
                    cur = []
                cur.append(g)
            if cur:
                out.append(np.asarray(cur, np.int64))
        out.sort(key=lambda u: (int(self.group_wave[u[0]]), int(u[0])))  # dependency order
        return out

    def n_exits(self, group: int) -> int:
        a, b = self.groups.exit_ptr_cluster[group]
        return int(b - a)

    def cross_worker_exits(self) -> int:
        """Exits whose downstream group lies on another worker (their buffers travel)."""
        t = self.groups.transfers
        return int(np.sum(self.group_worker[t[:, 0]] != self.group_worker[t[:, 2]]))

    def summary(self) -> dict[str, Any]:
        sizes = np.diff(self.rows, axis=1).ravel()
        return {
            "reaches": int(self.network.n_reaches),
            "groups": self.n_groups,
            "waves": self.n_waves,
            "workers": self.n_workers,
            "lake_groups": 0 if self.group_lake is None else int(self.group_lake.sum()),
            "exits": int(self.groups.n_exits),
            "cross_worker_exits": self.cross_worker_exits(),
            "largest_group": int(sizes.max()) if sizes.size else 0,
            "reaches_per_worker": [int(sizes[self.group_worker == w].sum())
                                   for w in range(self.n_workers)],
        }


def place_basins(network: RiverNetwork, n_workers: int) -> np.ndarray:
    """Worker of every reach such that each basin lies on one worker.

    Basins are packed onto the workers largest first, each onto the least-loaded worker
    (reaches).  Path kernels never cross basins, so a cluster split by basin keeps its path
    pairs, and no transfer buffer crosses workers; time chunks keep every worker busy
    whatever the per-wave balance.

    Returns int64 ``[N]``.
    """
    outlets, basin = np.unique(network.basin, return_inverse=True)
    size = np.bincount(basin, minlength=outlets.size)
    load = np.zeros(int(n_workers))
    where = np.empty(outlets.size, dtype=np.int64)
    for k in np.argsort(-size, kind="stable"):
        w = int(np.argmin(load))
        where[k] = w
        load[w] += size[k]
    return where[basin]


def plan_waves(network: RiverNetwork, partition: Partition, *,
               max_group_reaches: int | None = 262144,
               placement: str = "partition",
               lakes: Lakes | LakeLayout | None = None) -> WavePlan:
    """Group the partition's clusters by (wave, worker) and tabulate the group DAG.

    Parameters
    ----------
    network : the network the partition was built for (checked by its checksums).
    partition : from :func:`hydroscale.partition.partition_network` with ``n_workers`` the
        number of workers (or GPUs) to run on.
    max_group_reaches : a (wave, worker) set larger than this is split into several groups
        of whole clusters (bounds the device memory of one task and of one kernel
        aggregation); None: no bound.
    placement : ``"partition"`` (the partition's ``worker`` of every cluster) or
        ``"basins"`` (:func:`place_basins`: every basin on one worker, clusters that hold
        several basins split by basin; no transfer crosses workers).
    lakes : level-pool lakes of the network: the partition is cut at them
        (:meth:`~hydroscale.routing.LakeLayout.cut`: each lake its own cluster, placed on the
        worker of its outlet's cluster), and the lakes of one (wave, worker) form their own
        groups (:attr:`WavePlan.group_lake`), apart from the linear clusters.
    """
    if not isinstance(network, RiverNetwork):
        raise TypeError(f"network must be a RiverNetwork, got {type(network).__name__}")
    if not isinstance(partition, Partition):
        raise TypeError(f"partition must be a Partition, got {type(partition).__name__}")
    partition.check_network(network, "the partition given to the distributed runtime")
    if max_group_reaches is not None and int(max_group_reaches) < 1:
        raise ValueError(f"max_group_reaches must be positive or None, got {max_group_reaches}")
    w_n, c_n = int(partition.n_workers), max(partition.n_clusters, 1)
    cl = partition.cluster_of
    if placement == "partition":
        worker = partition.worker[cl]
    elif placement == "basins":
        worker = place_basins(network, w_n)
    else:
        raise ValueError(f"placement must be 'partition' or 'basins', got {placement!r}")
    wave = partition.wave[cl]
    is_lake = np.zeros(network.n_reaches, dtype=np.int64)
    layout = None
    if lakes is not None:
        layout = lakes if isinstance(lakes, LakeLayout) else LakeLayout.build(network, lakes)
        cl, _ = layout.cut(network, cl)
        inl = layout.reach_lake >= 0
        worker = worker.copy()
        worker[inl] = worker[layout.outlet[layout.reach_lake[inl]]]  # the outlet's worker
        wave = RivTreeCluster(network, cl).wave_of[cl]
        is_lake = inl.astype(np.int64)
        c_n = int(cl.max()) + 1
    # pieces: the reaches of one cluster on one worker, keyed (wave, worker, lake, cluster)
    ukey, piece_of = np.unique(((wave * w_n + worker) * 2 + is_lake) * c_n + cl,
                               return_inverse=True)
    piece_ww = ukey // c_n  # (wave * W + worker) * 2 + lake
    psize = np.bincount(piece_of, minlength=ukey.size).astype(np.int64)
    sub = np.zeros(ukey.size, dtype=np.int64)
    if max_group_reaches is not None and ukey.size:
        # split each (wave, worker) set, pieces in cluster order, every max_group_reaches
        first = np.r_[True, piece_ww[1:] != piece_ww[:-1]]
        csum = np.cumsum(psize)
        start = np.maximum.accumulate(np.where(first, csum - psize, 0))
        sub = (csum - psize - start) // int(max_group_reaches)
    ugroup, group_of_piece = np.unique(piece_ww * (int(sub.max(initial=0)) + 1) + sub,
                                       return_inverse=True)
    group_ww = ugroup // (int(sub.max(initial=0)) + 1)
    group_lake = (group_ww % 2).astype(bool)
    group_wave = (group_ww // (2 * w_n)).astype(np.int64)
    group_worker = (group_ww // 2 % w_n).astype(np.int64)
    group_of = group_of_piece.ravel().astype(np.int64)[piece_of.ravel()]
    cs = RivTreeCluster(network, group_of)
    g = cs.n_clusters
    t = cs.transfers
    pairs = np.unique(t[:, [2, 0]], axis=0) if t.size else np.zeros((0, 2), np.int64)
    ptr = np.searchsorted(pairs[:, 0], np.arange(g + 1))
    upstream = [pairs[ptr[i] : ptr[i + 1], 1] for i in range(g)]
    plan = WavePlan(network, cs, group_of, group_wave, group_worker, upstream,
                    cs.reach_ptr_cluster.copy(), cs.order.copy(), int(partition.n_workers),
                    layout, group_lake if layout is not None else None)
    logger.info("wave plan: %s", plan.summary())
    return plan


def group_sizes(groups: RivTreeCluster, which: np.ndarray) -> np.ndarray:
    """``[G, 3]`` int64 ``[reaches, exits, inlets]`` of groups ``which`` (what a worker's
    set-up reports to the run planners)."""
    which = np.asarray(which, dtype=np.int64)
    return np.stack([np.diff(ptr[which], axis=1)[:, 0] for ptr in (
        groups.reach_ptr_cluster, groups.exit_ptr_cluster, groups.inlet_ptr_cluster)],
        axis=1) if which.size else np.zeros((0, 3), np.int64)


def batch_groups(groups: list[int], sizes: np.ndarray, limit: int) -> list[list[int]]:
    """``groups`` (in order) cut into batches of at most ``limit`` reaches (``sizes[g]``
    reaches each; a larger group is a batch of its own): the groups whose path kernels one
    router aggregates at once, in one set of launches.  A worker's aggregation is bound by
    its launches, not its arithmetic, so batching its small groups divides its cost."""
    out: list[list[int]] = []
    cur: list[int] = []
    acc = 0
    for g in groups:
        if cur and acc + int(sizes[g]) > int(limit):
            out.append(cur)
            cur, acc = [], 0
        cur.append(int(g))
        acc += int(sizes[g])
    if cur:
        out.append(cur)
    return out


def map_workers(client: Any, n_workers: int) -> list[str]:
    """Worker addresses for partition workers ``0..n_workers-1``.

    Workers are taken in the order of their names (Dask-CUDA names them by GPU index),
    then addresses.  A partition built for W workers runs on a cluster of exactly W workers.
    """
    addrs = in_worker_order(worker_addresses(client))
    if len(addrs) != n_workers:
        raise ValueError(
            f"the partition places clusters on {n_workers} workers but the cluster has "
            f"{len(addrs)} ({addrs}); partition again with n_workers={len(addrs)} or start "
            f"{n_workers} workers"
        )
    return addrs

"""The :class:`Partition` of a river network and :func:`partition_network` that builds it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..network import RiverNetwork
from ._cut import PartitionError, cut_forest, merge_small_clusters
from ._placement import place_clusters, wave_loads
from ._report import plot_partition, report_text

__all__ = ["Partition", "partition_network", "network_checksums"]

logger = logging.getLogger(__name__)

_FORMAT = "hydroscale.partition/1"
_ARRAYS = (
    "cluster_of",
    "src_reach",
    "dst_reach",
    "src_cluster",
    "dst_cluster",
    "wave",
    "worker",
    "size",
    "work",
    "travel_time",
)


def network_checksums(network: RiverNetwork) -> dict[str, str]:
    """SHA-256 (hex, 16 chars) of the reach ids and of the downstream ids, in storage order."""
    ids = np.ascontiguousarray(network.ids, dtype="<i8")
    down = np.ascontiguousarray(network.downstream_ids, dtype="<i8")
    return {
        "ids": hashlib.sha256(ids.tobytes()).hexdigest()[:16],
        "topology": hashlib.sha256(down.tobytes()).hexdigest()[:16],
    }


@dataclass(eq=False)
class Partition:
    """Clusters of a river network, their DAG, topological waves and worker placement.

    Cluster ids ``0..C-1`` follow a topological order of the cluster DAG: every upstream
    cluster of a cluster has a smaller id.  Clusters are numbered by wave, then by worker, so
    the clusters of wave ``w`` are ``wave_ptr[w]:wave_ptr[w+1]``.

    Attributes
    ----------
    cluster_of : int64 [N], the cluster of each reach.
    src_reach, dst_reach : int64 [E], global reach indices of each transfer edge: exactly the
        network edges ``src_reach -> downstream[src_reach]`` whose ends lie in different
        clusters.  Sorted by ``(dst_cluster, src_cluster, src_reach)``.
    src_cluster, dst_cluster : int64 [E], the clusters of both ends (``src < dst``).
    wave : int64 [C], 0 for clusters without upstream cluster, else 1 + max over upstream.
    worker : int64 [C], the worker each cluster is pinned to (``0..n_workers-1``).
    size : int64 [C], reaches per cluster.
    work : float64 [C], cost per cluster (reaches, or the sum of the per-reach ``work`` given).
    travel_time : float64 [C], longest within-cluster path travel time (routing steps; 0 when
        the partition was built without travel times).
    n_workers : W.
    options : the bounds used (``max_reaches``, ``min_reaches``, ``max_travel_time``, ...).
    checksums : ``{"ids": ..., "topology": ...}`` of the network it was built for.
    timings : seconds spent per phase when it was built (``cut``, ``merge``, ``place``, ...).
    """

    cluster_of: np.ndarray
    src_reach: np.ndarray
    dst_reach: np.ndarray
    src_cluster: np.ndarray
    dst_cluster: np.ndarray
    wave: np.ndarray
    worker: np.ndarray
    size: np.ndarray
    work: np.ndarray
    travel_time: np.ndarray
    n_workers: int
    options: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes and views
    @property
    def n_reaches(self) -> int:
        return int(self.cluster_of.size)

    @property
    def n_clusters(self) -> int:
        return int(self.wave.size)

    @property
    def n_waves(self) -> int:
        return int(self.wave.max()) + 1 if self.wave.size else 0

    @property
    def n_transfer_edges(self) -> int:
        return int(self.src_reach.size)

    def __repr__(self) -> str:
        return (
            f"Partition(n_reaches={self.n_reaches}, n_clusters={self.n_clusters}, "
            f"n_waves={self.n_waves}, n_workers={self.n_workers}, "
            f"transfer_edges={self.n_transfer_edges})"
        )

    @cached_property
    def wave_ptr(self) -> np.ndarray:
        """int64 [n_waves + 1]: the clusters of wave ``w`` are ``wave_ptr[w]:wave_ptr[w+1]``."""
        return np.searchsorted(self.wave, np.arange(self.n_waves + 1)).astype(np.int64)

    @cached_property
    def cluster_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr [C+1], reaches [N])``: reaches of cluster c, ascending index order."""
        reaches = np.argsort(self.cluster_of, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(self.size)]).astype(np.int64)
        return indptr, reaches

    def reaches_of(self, cluster: int) -> np.ndarray:
        """Global reach indices of ``cluster`` (ascending)."""
        if not 0 <= cluster < self.n_clusters:
            raise IndexError(f"cluster must lie in [0, {self.n_clusters - 1}], got {cluster}")
        indptr, reaches = self.cluster_csr
        return reaches[indptr[cluster] : indptr[cluster + 1]]

    def edges_into(self, cluster: int) -> np.ndarray:
        """Positions (into the transfer-edge arrays) of the edges entering ``cluster``."""
        a, b = np.searchsorted(self.dst_cluster, [cluster, cluster + 1])
        return np.arange(a, b)

    @cached_property
    def _by_src(self) -> np.ndarray:
        return np.argsort(self.src_cluster, kind="stable")

    def edges_out_of(self, cluster: int) -> np.ndarray:
        """Positions (into the transfer-edge arrays) of the edges leaving ``cluster``."""
        order = self._by_src
        a, b = np.searchsorted(self.src_cluster[order], [cluster, cluster + 1])
        return order[a:b]

    def check_network(self, network: RiverNetwork, where: str = "the partition") -> None:
        """Raise :class:`PartitionError` unless this partition was built for ``network``.

        Compares the number of reaches and checksums of the reach ids and downstream links.
        """
        if self.n_reaches != network.n_reaches:
            raise PartitionError(
                f"{where} was built for {self.n_reaches} reaches, the network has "
                f"{network.n_reaches}: re-run partition_network for this network"
            )
        now = network_checksums(network)
        for what, value in self.checksums.items():
            if now.get(what) != value:
                raise PartitionError(
                    f"{where} does not match this network: {what} checksum {value} was "
                    f"recorded, the network gives {now.get(what)} (same size, different "
                    f"{'reach ids' if what == 'ids' else 'downstream links'}); re-run "
                    "partition_network for this network"
                )

    # ------------------------------------------------------------------ derived figures
    def wave_load(self) -> np.ndarray:
        """Work per wave and worker, float64 ``[n_waves, n_workers]``."""
        return wave_loads(self.wave, self.worker, self.work, self.n_workers)

    def wave_imbalance(self) -> np.ndarray:
        """Per wave, ``max worker load / mean worker load - 1`` (float64 [n_waves])."""
        load = self.wave_load()
        mean = load.mean(axis=1)
        return np.where(mean > 0, load.max(axis=1) / np.where(mean > 0, mean, 1) - 1, 0.0)

    def critical_path_work(self) -> float:
        """The heaviest chain of dependent clusters: max over DAG paths of the summed work."""
        cp = self.work.astype(np.float64).copy()
        order = np.argsort(self.wave[self.dst_cluster], kind="stable")
        src, dst = self.src_cluster[order], self.dst_cluster[order]
        eptr = np.searchsorted(self.wave[dst], np.arange(self.n_waves + 1))
        for w in range(1, self.n_waves):
            a, b = int(eptr[w]), int(eptr[w + 1])
            best = np.zeros(self.n_clusters)
            np.maximum.at(best, dst[a:b], cp[src[a:b]])
            touched = np.unique(dst[a:b])
            cp[touched] = self.work[touched] + best[touched]
        return float(cp.max()) if cp.size else 0.0

    def cross_worker_edges(self) -> int:
        """Transfer edges whose two clusters sit on different workers."""
        return int(np.count_nonzero(self.worker[self.src_cluster] != self.worker[self.dst_cluster]))

    def summary(self, balanceable_clusters: float = 4.0) -> dict[str, Any]:
        """Headline figures as a dict (JSON-serialisable).

        A wave counts as *balanceable* when its work is at least ``balanceable_clusters`` full
        clusters (``max_reaches`` reaches, or the largest cluster's work with a custom cost)
        per worker; ``max_imbalance_balanceable`` is the worst imbalance over those waves.
        """
        load = self.wave_load()
        imb = self.wave_imbalance()
        unit = float(self.options.get("max_reaches") or 1)
        if self.options.get("work") != "reaches":
            unit = float(self.work.max()) if self.work.size else 1.0
        enough = load.sum(axis=1) >= balanceable_clusters * self.n_workers * unit
        return {
            "reaches": self.n_reaches,
            "clusters": self.n_clusters,
            "waves": self.n_waves,
            "workers": self.n_workers,
            "reaches_per_cluster": {
                "min": int(self.size.min()),
                "median": float(np.median(self.size)),
                "mean": float(self.size.mean()),
                "max": int(self.size.max()),
            },
            "max_in_cluster_travel_time": float(self.travel_time.max()),
            "transfer_edges": self.n_transfer_edges,
            "cross_worker_edges": self.cross_worker_edges(),
            "total_work": float(self.work.sum()),
            "critical_path_work": self.critical_path_work(),
            "balanceable_waves": int(enough.sum()),
            "max_imbalance_balanceable": float(imb[enough].max()) if enough.any() else 0.0,
            "max_imbalance": float(imb.max()) if imb.size else 0.0,
            "timings_s": dict(self.timings),
        }

    def report(self) -> str:
        """A text table: clusters, waves, reaches per cluster, critical path, balance, edges."""
        return report_text(self)

    def plot(self, path: str | Path) -> Path:
        """Write a PNG summary (cluster sizes, work per wave and worker, imbalance) to ``path``."""
        return plot_partition(self, path)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save to the directory ``path`` (``partition.npz`` + ``partition.json``; no pickle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "partition.npz", **{k: getattr(self, k) for k in _ARRAYS})
        meta = {
            "format": _FORMAT,
            "n_reaches": self.n_reaches,
            "n_clusters": self.n_clusters,
            "n_workers": self.n_workers,
            "checksums": self.checksums,
            "options": self.options,
            "timings": self.timings,
        }
        (path / "partition.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        logger.info("saved %r to %s", self, path)
        return path

    @classmethod
    def load(cls, path: str | Path, network: RiverNetwork) -> Partition:
        """Load a partition saved with :meth:`save` and check that it was built for ``network``.

        Raises :class:`PartitionError` when the number of reaches, the reach ids or the
        topology differ from ``network`` (re-run :func:`partition_network` then).
        """
        path = Path(path)
        try:
            meta = json.loads((path / "partition.json").read_text())
        except FileNotFoundError:
            raise PartitionError(
                f"no saved partition at {path} (expected partition.json and partition.npz)"
            ) from None
        if meta.get("format") != _FORMAT:
            raise PartitionError(
                f"{path} holds format {meta.get('format')!r}, this version reads {_FORMAT!r}"
            )
        if meta["n_reaches"] != network.n_reaches:  # before reading the arrays
            raise PartitionError(
                f"the partition at {path} was built for {meta['n_reaches']} reaches, the network "
                f"has {network.n_reaches}: re-run partition_network for this network"
            )
        with np.load(path / "partition.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
        part = cls(
            **arrays,
            n_workers=int(meta["n_workers"]),
            options=meta["options"],
            checksums=meta["checksums"],
            timings=meta.get("timings", {}),
        )
        part.check_network(network, where=f"the partition at {path}")
        return part


def partition_network(
    network: RiverNetwork,
    *,
    max_reaches: int = 1024,
    max_travel_time: float | None = None,
    travel_time: Any = None,
    n_workers: int = 1,
    min_reaches: int | None = None,
    work: Any = None,
    balance_tol: float = 0.02,
) -> Partition:
    """Partition a river network into clusters, a cluster DAG, waves and worker placement.

    Parameters
    ----------
    network : the river network (N reaches).
    max_reaches : most reaches in one cluster (e.g. 64-1024).
    max_travel_time : bound on the longest path travel time inside a cluster, in routing steps
        (e.g. half the engine's kernel window), so that the window stays exact.
    travel_time : float [N], per-reach travel-time upper bound in routing steps (e.g. from
        :func:`travel_time_bound`); required with ``max_travel_time``.
    n_workers : W, the workers the clusters are placed on.
    min_reaches : clusters smaller than this (whole small basins, small subtrees near outlets)
        are packed with others of the same wave into shared clusters; default
        ``max_reaches // 4``.
    work : float [N], optional per-reach cost for load balance; default one per reach.
    balance_tol : a cluster follows its upstream chain onto the same worker only while that
        worker's load in the wave stays within ``1 + balance_tol`` of the mean.

    Returns
    -------
    Partition

    Raises
    ------
    PartitionError
        When a single reach's travel time exceeds ``max_travel_time`` (names the reaches), or
        the bounds are malformed.
    """
    if not isinstance(network, RiverNetwork):
        raise TypeError(f"network must be a RiverNetwork, got {type(network).__name__}")
    if int(n_workers) != n_workers or n_workers < 1:
        raise PartitionError(f"n_workers must be a positive integer, got {n_workers}")
    if min_reaches is None:
        min_reaches = max(1, int(max_reaches) // 4)
    clock = _Clock()
    _ = (network.topo_order, network.level_ptr)  # cached topology, timed apart
    clock.lap("topology")
    cut = cut_forest(network, max_reaches, travel_time, max_travel_time)
    clock.lap("cut")
    cut = merge_small_clusters(network, cut, int(max_reaches), int(min_reaches))
    clock.lap("merge")
    n = network.n_reaches
    if work is None:
        cwork = cut.size.astype(np.float64)
    else:
        w = np.asarray(work, dtype=np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise PartitionError(f"work must be finite, >= 0 and of shape [{n}], got {w.shape}")
        cwork = np.bincount(cut.cluster_of, weights=w, minlength=cut.size.size)
    src_reach = cut.cut_child
    dst_reach = network.downstream[src_reach]
    src_c, dst_c = cut.cluster_of[src_reach], cut.cluster_of[dst_reach]
    placed = place_clusters(cut.wave, cwork, src_c, dst_c, int(n_workers), balance_tol=balance_tol)
    clock.lap("place")
    # Topological numbering: by wave, then worker, then the order of the cut.
    order = np.lexsort((placed, cut.wave))
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    cluster_of = relabel[cut.cluster_of]
    src_c, dst_c = relabel[src_c], relabel[dst_c]
    e = np.lexsort((src_reach, src_c, dst_c))
    part = Partition(
        cluster_of=cluster_of,
        src_reach=src_reach[e],
        dst_reach=dst_reach[e],
        src_cluster=src_c[e],
        dst_cluster=dst_c[e],
        wave=cut.wave[order],
        worker=placed[order],
        size=cut.size[order],
        work=cwork[order],
        travel_time=cut.travel_time[order],
        n_workers=int(n_workers),
        options={
            "max_reaches": int(max_reaches),
            "min_reaches": int(min_reaches),
            "max_travel_time": None if max_travel_time is None else float(max_travel_time),
            "balance_tol": float(balance_tol),
            "work": "reaches" if work is None else "per-reach work",
        },
        checksums=network_checksums(network),
    )
    clock.lap("number")
    part.timings = clock.laps
    logger.info("partitioned in %.2f s (%s): %r", clock.total, clock.laps, part)
    return part


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 4)
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.start

"""Clusters of a river network: :class:`RivTree` (one cluster) and :class:`RivTreeCluster`.

A partition assigns every reach to a cluster, ``cluster_of[N]``, with ids ``0..C-1`` numbered
in topological order of the cluster DAG (every edge that leaves a cluster goes to a cluster
with a larger id).  A cluster may be a forest of several in-trees with several exits.

Vocabulary used throughout the routing engine:

- *exit*: a reach whose downstream reach lies in another cluster.  Its outflow crosses the
  boundary at sub-step resolution as ``f`` polyphase channels (``[B, f, T]``: channel ``a``
  holds the discharge of sub-step ``a`` of every routing step).
- *inlet*: a reach that receives the outflow of one or more exits of upstream clusters.  Its
  transfer inflow is the sum of those exits' channels.
- *wave*: the clusters whose upstream clusters are all in earlier waves (cluster-DAG levels);
  the clusters of one wave are independent and are routed in one batch.

The *engine order* sorts reaches by (wave, cluster, network index); every wave and
every cluster is then a contiguous range of it, and so are its exits and inlets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._digest import digest
from ..network import RiverNetwork, format_ids

__all__ = ["RivTree", "RivTreeCluster"]

logger = logging.getLogger(__name__)


def _ranges(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """CSR pointer ``[n_keys + 1]`` of a sorted int array of keys."""
    return np.searchsorted(keys, np.arange(n_keys + 1)).astype(np.int64)


@dataclass(frozen=True)
class RivTree:
    """One cluster of a :class:`RivTreeCluster` (a view; arrays are numpy int64).

    Attributes
    ----------
    cluster : the cluster id.
    wave : its wave (cluster-DAG level).
    reaches : ``[n]`` global reach indices (network order), in engine order.
    ids : ``[n]`` reach ids.
    downstream : ``[n]`` local index of the downstream reach inside the cluster, ``-1`` where
        the reach is an exit or an outlet of the network.
    exits : ``[n_exit]`` local indices of the exit reaches (engine order of exits).
    exit_to : ``[n_exit, 2]`` (downstream cluster, global reach index of the inlet) per exit.
    inlets : ``[n_inlet]`` local indices of the inlet reaches.
    inlet_from : list of ``[k, 2]`` arrays (upstream cluster, global exit reach index) per inlet.
    params : ``[n, P]`` per-reach parameters in this cluster's order, when given.
    """

    cluster: int
    wave: int
    reaches: np.ndarray
    ids: np.ndarray
    downstream: np.ndarray
    exits: np.ndarray
    exit_to: np.ndarray
    inlets: np.ndarray
    inlet_from: list
    params: Any = None

    def __len__(self) -> int:
        return int(self.reaches.size)

    @property
    def n_exits(self) -> int:
        return int(self.exits.size)

    @property
    def n_inlets(self) -> int:
        return int(self.inlets.size)


def raise_levels(level: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``level [C]`` raised until every edge ``(src, dst)`` of ``edges [E, 2]`` (a DAG) has
    ``level[dst] >= level[src] + 1``: the longest-path levels above the given floors, one
    vectorised pass over the edges per round (at most C rounds)."""
    for _ in range(level.size):
        new = level.copy()
        np.maximum.at(new, edges[:, 1], level[edges[:, 0]] + 1)
        if np.array_equal(new, level):
            break
        level = new
    return level

class RivTreeCluster:
    """All clusters of a network with their transfer tables, built vectorised.

    Parameters
    ----------
    network : the river network (N reaches).
    cluster_of : int ``[N]``, cluster id of every reach, ``0..C-1``, numbered in topological
        order of the cluster DAG (any such assignment is valid; clusters need not be
        connected).
    wave_of : optional int ``[C]`` wave of every cluster (each edge must go to a later wave;
        waves may be empty), e.g. :meth:`~hydroscale.routing.LakeLayout.wave_cut`;
        default the longest-path level of the cluster DAG.

    Attributes (numpy int64 unless said otherwise)
    ----------------------------------------------
    n_clusters, n_waves, n_exits, n_inlets : counts.
    cluster_of : ``[N]``.  wave_of : ``[C]`` wave of every cluster.
    order : ``[N]`` engine order (global reach indices); ``position`` its inverse.
    reach_ptr_cluster ``[C, 2]`` (start, stop), reach_ptr_wave ``[W+1]`` : ranges in
        engine order.
    down_in : ``[N]`` downstream reach index if inside the same cluster else ``-1``.
    exit_reach : ``[E]`` exits (global reach index) in engine order; ``exit_inlet`` ``[E]``
        the inlet number (``0..n_inlets-1``) each exit feeds; ``exit_ptr_cluster`` ``[C, 2]``,
        ``exit_ptr_wave`` ``[W+1]``.
    inlet_reach : ``[I]`` inlets (global reach index) in engine order; ``inlet_ptr_cluster/wave``.
    transfers : ``[E, 4]`` table (src cluster, exit reach, dst cluster, inlet reach).
    """

    def __init__(self, network: RiverNetwork, cluster_of: Any, wave_of: Any = None) -> None:
        n = network.n_reaches
        cl = np.asarray(cluster_of)
        if cl.shape != (n,):
            raise ValueError(f"cluster_of must be [N={n}], got shape {cl.shape}")
        if not np.issubdtype(cl.dtype, np.integer):
            raise ValueError(f"cluster_of must hold integer cluster ids, got dtype {cl.dtype}")
        cl = cl.astype(np.int64)
        if n and cl.min() < 0:
            bad = np.flatnonzero(cl < 0)
            raise ValueError(
                f"cluster_of must be >= 0; reaches {format_ids(network.ids[bad])} have "
                f"{format_ids(cl[bad])}"
            )
        n_clusters = int(cl.max()) + 1 if n else 0
        counts = np.bincount(cl, minlength=n_clusters)
        if n and (counts == 0).any():
            empty = np.flatnonzero(counts == 0)
            raise ValueError(
                f"cluster ids must be 0..C-1 without gaps; clusters {format_ids(empty)} are empty "
                "(renumber with np.unique(cluster_of, return_inverse=True) in topological order)"
            )
        down = network.downstream
        has = down >= 0
        src = np.flatnonzero(has)
        cross = src[cl[src] != cl[down[src]]]
        back = cross[cl[down[cross]] < cl[cross]]
        if back.size:
            raise ValueError(
                "cluster ids must follow the cluster DAG (upstream clusters have smaller ids); "
                f"reaches {format_ids(network.ids[back])} in clusters {format_ids(cl[back])} "
                f"drain into reaches {format_ids(network.ids[down[back]])} of clusters "
                f"{format_ids(cl[down[back]])}"
            )
        self.network = network
        self.n_reaches = n
        self.n_clusters = n_clusters
        self.cluster_of = cl
        self.down_in = np.where(has, down, -1)
        self.down_in[cross] = -1

        # waves: longest-path level of the cluster DAG (ids are topological, so one pass in
        # id order suffices; it is vectorised over the edges leaving each wave instead)
        src_c, dst_c = cl[cross], cl[down[cross]]
        wave = np.zeros(n_clusters, dtype=np.int64)
        if wave_of is not None:  # given (e.g. lakes by stage): checked against the DAG
            wave = np.asarray(wave_of, dtype=np.int64).reshape(-1)
            if wave.shape != (n_clusters,) or (n_clusters and wave.min() < 0):
                raise ValueError(f"wave_of must be [C={n_clusters}] waves >= 0, got shape "
                                 f"{wave.shape}")
            bad = cross[wave[dst_c] <= wave[src_c]]
            if bad.size:
                raise ValueError(f"wave_of puts clusters {format_ids(cl[down[bad]])} in no "
                                 f"later wave than clusters {format_ids(cl[bad])} feeding them")
        elif cross.size:
            wave = raise_levels(wave, np.unique(np.stack([src_c, dst_c], axis=1), axis=0))
        self.wave_of = wave
        self.n_waves = int(wave.max()) + 1 if n_clusters else 0

        # inside a cluster reaches keep the network's order (DFS orders give cache locality; a
        # network reordered by ``order`` makes the engine order the identity)
        self.order = np.lexsort((np.arange(n), cl, wave[cl])).astype(np.int64)
        self.position = np.empty(n, dtype=np.int64)
        self.position[self.order] = np.arange(n)
        cl_sorted = cl[self.order]
        self.reach_ptr_cluster = self._cluster_ranges(cl_sorted)
        self.reach_ptr_wave = _ranges(wave[cl_sorted], self.n_waves)

        # exits and inlets, in engine order
        exits = cross[np.argsort(self.position[cross], kind="stable")]
        self.exit_reach = exits
        self.n_exits = int(exits.size)
        inlets = np.unique(down[exits])
        inlets = inlets[np.argsort(self.position[inlets], kind="stable")]
        self.inlet_reach = inlets
        self.n_inlets = int(inlets.size)
        inlet_no = np.full(n, -1, dtype=np.int64)
        inlet_no[inlets] = np.arange(inlets.size)
        self.exit_inlet = inlet_no[down[exits]]
        self.inlet_of_reach = inlet_no
        exit_no = np.full(n, -1, dtype=np.int64)
        exit_no[exits] = np.arange(exits.size)
        self.exit_of_reach = exit_no
        self.exit_ptr_cluster = self._cluster_ranges(cl[exits])
        self.exit_ptr_wave = _ranges(wave[cl[exits]], self.n_waves)
        self.inlet_ptr_cluster = self._cluster_ranges(cl[inlets])
        self.inlet_ptr_wave = _ranges(wave[cl[inlets]], self.n_waves)
        self.transfers = np.stack([cl[exits], exits, cl[down[exits]], down[exits]], axis=1)
        logger.debug(
            "RivTreeCluster: %d reaches, %d clusters, %d waves, %d exits, %d inlets",
            n, n_clusters, self.n_waves, exits.size, inlets.size,
        )

    def _cluster_ranges(self, keys: np.ndarray) -> np.ndarray:
        """``[C, 2]`` (start, stop) of every cluster in an engine-ordered array whose cluster
        ids are ``keys`` (clusters are contiguous there, in (wave, id) order)."""
        counts = np.bincount(keys, minlength=self.n_clusters)
        seq = np.lexsort((np.arange(self.n_clusters), self.wave_of))
        starts = np.zeros(self.n_clusters, dtype=np.int64)
        starts[seq] = np.concatenate([[0], np.cumsum(counts[seq])[:-1]]).astype(np.int64)
        return np.stack([starts, starts + counts], axis=1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def single(cls, network: RiverNetwork) -> RivTreeCluster:
        """The whole network as one cluster (no transfers)."""
        return cls(network, np.zeros(network.n_reaches, dtype=np.int64))

    @classmethod
    def by_basin(cls, network: RiverNetwork) -> RivTreeCluster:
        """One cluster per basin (no transfers)."""
        _, cl = np.unique(network.basin, return_inverse=True)
        return cls(network, cl.astype(np.int64))

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return self.n_clusters

    def __iter__(self):
        return (self[c] for c in range(self.n_clusters))

    def __repr__(self) -> str:
        return (
            f"RivTreeCluster({self.n_reaches} reaches, {self.n_clusters} clusters, "
            f"{self.n_waves} waves, {self.n_exits} exits)"
        )

    def clusters_in_wave(self, wave: int) -> np.ndarray:
        """Cluster ids of ``wave``, in engine order."""
        cs = np.flatnonzero(self.wave_of == wave)
        return cs[np.argsort(self.reach_ptr_cluster[cs, 0], kind="stable")]

    def cluster_reaches(self, c: int) -> np.ndarray:
        """Global reach indices of cluster ``c`` in engine order ``[n_c]``."""
        a, b = self.reach_ptr_cluster[c]
        return self.order[a:b]

    def __getitem__(self, c: int) -> RivTree:
        if not 0 <= c < self.n_clusters:
            raise IndexError(f"cluster {c} out of range [0, {self.n_clusters})")
        reaches = self.cluster_reaches(c)
        local = np.full(self.n_reaches, -1, dtype=np.int64)
        local[reaches] = np.arange(reaches.size)
        d = self.down_in[reaches]
        ea, eb = self.exit_ptr_cluster[c]
        ia, ib = self.inlet_ptr_cluster[c]
        exits = self.exit_reach[ea:eb]
        inlets = self.inlet_reach[ia:ib]
        down = self.network.downstream
        feeding = [self.exit_reach[self.exit_inlet == i] for i in range(ia, ib)]
        return RivTree(
            cluster=int(c),
            wave=int(self.wave_of[c]),
            reaches=reaches,
            ids=self.network.ids[reaches],
            downstream=np.where(d >= 0, local[np.maximum(d, 0)], -1),
            exits=local[exits],
            exit_to=np.stack([self.cluster_of[down[exits]], down[exits]], axis=1),
            inlets=local[inlets],
            inlet_from=[np.stack([self.cluster_of[f], f], axis=1) for f in feeding],
        )

    def __getstate__(self) -> dict[str, Any]:
        # the memos (device tensors among them) are rebuilt where the object lands
        return {k: v for k, v in self.__dict__.items() if k not in ("_chain_keys", "_on_device")}

    def digest(self) -> str:
        """A content digest of the network (ids, downstream) and the clustering, computed
        once: what caches of results derived from these clusters are keyed by."""
        memo = self.__dict__.get("_digest")
        if memo is None:
            memo = self._digest = digest(self.network.ids, self.network.downstream,
                                         self.cluster_of)
        return memo

    def chain_key(self, engine_order: bool = False) -> np.ndarray:
        """``[N]`` float sort key (network order) that lists reaches chain by chain: the
        in-cluster heavy paths (each reach continues upstream into its largest tributary),
        each from its headwater down.  Consecutive reaches of one chain have nested upstream
        sets, so the routing kernels cut rows into blocks in this order (see
        :meth:`hydroscale.kernels.PathLayout.blocks`).  ``engine_order``: the keys of
        ``order`` (engine order) instead.  Computed once (read-only)."""
        memo = self.__dict__.setdefault("_chain_keys", {})
        if engine_order not in memo:
            key = self._compute_chain_key() if not engine_order else self.chain_key()[self.order]
            key.setflags(write=False)
            memo[engine_order] = key
        return memo[engine_order]

    @property
    def order_is_identity(self) -> bool:
        """Whether the engine order is the network's order (computed once)."""
        memo = self.__dict__
        if "_order_is_identity" not in memo:
            memo["_order_is_identity"] = bool(np.array_equal(self.order,
                                                             np.arange(self.n_reaches)))
        return memo["_order_is_identity"]

    def on_device(self, device: Any) -> dict[str, Any]:
        """The per-reach index arrays the routers of these clusters read, as tensors on
        ``device``, built once per device and shared by every router (a worker builds one
        router per batch of its clusters: each copying the whole network's arrays to the
        device took ~0.2 s per router at 3M reaches).  Keys: ``position``, ``exit_of_reach``,
        ``inlet_of_reach``, ``exit_mask``, ``inlet_mask``, ``order``, ``inlet_reach``,
        ``rank_of_reach`` (the engine rank of each reach's cluster: clusters by wave, then
        id) and ``rank`` (``[C]`` numpy, that rank per cluster)."""
        import torch  # here: the network and partition layers use this class without torch

        memo = self.__dict__.setdefault("_on_device", {})
        key = str(torch.device(device) if device is not None else torch.device("cpu"))
        if key not in memo:
            rank = np.empty(self.n_clusters, dtype=np.int64)
            rank[np.lexsort((np.arange(self.n_clusters), self.wave_of))] = np.arange(
                self.n_clusters)
            t = lambda a: torch.as_tensor(a, device=key)  # noqa: E731
            memo[key] = {
                "position": t(self.position), "exit_of_reach": t(self.exit_of_reach),
                "inlet_of_reach": t(self.inlet_of_reach), "exit_mask": t(self.exit_of_reach >= 0),
                "inlet_mask": t(self.inlet_of_reach >= 0), "order": t(self.order),
                "inlet_reach": t(self.inlet_reach), "rank_of_reach": t(rank[self.cluster_of]),
                "rank": rank,
            }
        return memo[key]

    def _compute_chain_key(self) -> np.ndarray:
        net = self.network
        n = self.n_reaches
        size = np.ones(n, dtype=np.int64)
        ptr = net.level_ptr
        for lv in range(net.n_levels):  # in-cluster upstream area, headwaters first
            idx = net.topo_order[ptr[lv] : ptr[lv + 1]]
            d = self.down_in[idx]
            ok = d >= 0
            np.add.at(size, d[ok], size[idx[ok]])
        tribs = np.flatnonzero(self.down_in >= 0)
        tribs = tribs[np.argsort(size[tribs], kind="stable")]
        heavy_child = np.full(n, -1, dtype=np.int64)
        heavy_child[self.down_in[tribs]] = tribs  # the largest tributary is written last
        on_chain = np.zeros(n, dtype=bool)
        on_chain[heavy_child[heavy_child >= 0]] = True
        bottom = np.arange(n)
        for lv in range(net.n_levels - 1, -1, -1):  # outlets first: inherit the chain bottom
            idx = net.topo_order[ptr[lv] : ptr[lv + 1]]
            idx = idx[on_chain[idx]]
            bottom[idx] = bottom[self.down_in[idx]]
        return bottom.astype(np.float64) * (net.n_levels + 1) + net.levels

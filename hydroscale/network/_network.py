"""The array-based river network: ids, downstream index, attributes and vectorised topology."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ._chains import ChainRounds, chain_rounds
from ._format import format_ids
from ._validation import NetworkError, check_ids, kahn_levels, repeated, resolve_downstream

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["RiverNetwork"]

#: Kahn passes (levels) before the constructor switches to chain rounds (~15 µs a pass)
_KAHN_PASSES = 4096

logger = logging.getLogger(__name__)


class RiverNetwork:
    """A forest of in-trees: every reach has at most one downstream reach.

    Parameters
    ----------
    ids : int64 [N]
        Stable reach ids (RAPID ``rivid``, NWM ``link``), unique.
    downstream : int64 [N]
        Index (not id) of the downstream reach, ``-1`` at outlets.
    attrs : mapping of name -> array [N], optional
        Per-reach attributes, e.g. ``length`` (m), ``slope`` (m/m), ``area`` (km²).

    The constructor validates the topology (duplicates, dangling indices, cycles) and computes
    topological levels (Kahn's passes, one per level, or for networks deeper than
    4,096 levels :attr:`chains`: rounds of unbranched chains, O(log N) of them); everything
    is vectorised numpy, so networks of 10⁷ reaches build in seconds whatever their depth (a
    single chain of 2·10⁶ reaches included).  Use :meth:`from_arrays` to build from
    id / downstream-id arrays.
    """

    def __init__(
        self,
        ids: np.ndarray,
        downstream: np.ndarray,
        attrs: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        ids = check_ids(ids)
        down = np.asarray(downstream)
        if down.shape != ids.shape:
            raise NetworkError(
                f"downstream must have the shape of ids {ids.shape}, got {down.shape}"
            )
        down = down.astype(np.int64, copy=False)
        bad = np.flatnonzero((down < -1) | (down >= ids.size))
        if bad.size:
            raise NetworkError(
                f"downstream indices of reaches {format_ids(ids[bad])} are out of range "
                f"[-1, {ids.size - 1}]: {format_ids(down[bad])}"
            )
        self._ids = ids
        self._down = down
        self._ids.setflags(write=False)
        self._down.setflags(write=False)
        self._attrs: dict[str, np.ndarray] = {}
        for name, values in (attrs or {}).items():
            values = np.asarray(values)
            if values.shape[:1] != ids.shape:
                raise NetworkError(
                    f"attribute {name!r} must have one value per reach ({ids.size}), "
                    f"got shape {values.shape}"
                )
            self._attrs[name] = values
        # Kahn's passes are cheapest on wide networks; a deep one (chains of 10⁶ reaches)
        # switches to chain rounds.  Both refuse cycles, naming the ids.
        levels = kahn_levels(ids, down, max_passes=_KAHN_PASSES)
        if levels is None:
            self.__dict__["chains"] = chain_rounds(ids, down)
            levels = (self.chains.path_max_sum(down, np.ones(ids.size, np.int64)) - 1
                      ).astype(np.int32)
        self._levels = levels
        self._levels.setflags(write=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        ids: Any,
        downstream_ids: Any,
        *,
        outlet_values: tuple[int, ...] = (0,),
        **attrs: Any,
    ) -> RiverNetwork:
        """Build from reach ids and the id of each reach's downstream reach.

        A ``downstream_ids`` value marks an outlet when it is negative (mizuRoute's -9999,
        -1, ...) or one of ``outlet_values`` (default ``(0,)``, as NWM, RAPID and mizuRoute
        write it; any positive markers may be added); reach ids must avoid the markers (a
        reach id 0 is refused: nothing could drain into it).  Any other downstream id must be
        a reach id.  Extra keyword arrays become attributes.
        """
        ids = check_ids(ids)
        marks = np.unique(ids[(ids < 0) | np.isin(ids, np.asarray(outlet_values, np.int64))])
        if marks.size:
            raise NetworkError(
                f"reach id(s) {format_ids(marks)} mark outlets in the downstream ids "
                f"(outlet_values={tuple(outlet_values)}, or any negative id), so no reach could "
                "drain into them: renumber these reaches (any unused positive id), or pass "
                "other outlet_values"
            )
        down = resolve_downstream(ids, downstream_ids, outlet_values)
        return cls(ids, down, attrs)

    @classmethod
    def from_edges(
        cls, ids: Any, upstream_ids: Any, downstream_ids: Any, **attrs: Any
    ) -> RiverNetwork:
        """Build from reach ids and an edge list ``upstream_ids[e] -> downstream_ids[e]``.

        A reach that appears twice as the upstream end of an edge (it would have two downstream
        reaches) is an error naming it.
        """
        ids = check_ids(ids)
        up = np.asarray(upstream_ids, dtype=np.int64)
        dn = np.asarray(downstream_ids, dtype=np.int64)
        if up.shape != dn.shape or up.ndim != 1:
            raise NetworkError(
                f"edge arrays must be 1-D and of equal length, got {up.shape} and {dn.shape}"
            )
        twice = repeated(up)
        if twice.size:
            raise NetworkError(
                f"reach(es) {format_ids(twice)} have two or more downstream reaches "
                "(a bifurcation); hydroscale routes in-trees: keep one downstream edge per reach"
            )
        for name, arr in (("upstream", up), ("downstream", dn)):
            unknown = np.setdiff1d(arr, ids)
            if unknown.size:
                raise NetworkError(
                    f"edges name {name} ids that are not reaches of the network: "
                    f"{format_ids(unknown)}"
                )
        order = np.argsort(ids)
        down = np.full(ids.size, -1, dtype=np.int64)
        down[order[np.searchsorted(ids[order], up)]] = order[np.searchsorted(ids[order], dn)]
        return cls(ids, down, attrs)

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph, attrs: tuple[str, ...] = ()) -> RiverNetwork:
        """Build from a networkx DiGraph whose nodes are reach ids and edges point downstream.

        Node attributes named in ``attrs`` are copied (missing values become NaN).
        """
        ids = np.fromiter(graph.nodes, dtype=np.int64, count=graph.number_of_nodes())
        edges = np.array(list(graph.edges), dtype=np.int64).reshape(-1, 2)
        data = {
            name: np.array([graph.nodes[i].get(name, np.nan) for i in ids.tolist()], dtype=float)
            for name in attrs
        }
        return cls.from_edges(ids, edges[:, 0], edges[:, 1], **data)

    # ------------------------------------------------------------------ basic properties
    @property
    def ids(self) -> np.ndarray:
        """Reach ids, int64 [N] (read-only)."""
        return self._ids

    @property
    def downstream(self) -> np.ndarray:
        """Downstream reach index, int64 [N], -1 at outlets (read-only)."""
        return self._down

    @property
    def attrs(self) -> Mapping[str, np.ndarray]:
        """Per-reach attributes, name -> array [N]."""
        return self._attrs

    @property
    def levels(self) -> np.ndarray:
        """Topological level of each reach, int32 [N]: 0 at headwaters, else 1 + max upstream."""
        return self._levels

    @cached_property
    def chains(self) -> ChainRounds:
        """The reaches in rounds of independent unbranched chains (O(log N) rounds, see
        :mod:`hydroscale.network._chains`): what sweeps use instead of one step per level."""
        return chain_rounds(self._ids, self._down)

    def path_max_sum(self, weights: np.ndarray) -> np.ndarray:
        """``[N]``: the largest sum of ``weights`` [N] (non-negative) over the reaches of a
        path ending at each reach (itself included); vectorised by chain rounds."""
        w = np.asarray(weights)
        if w.shape != self._ids.shape:
            raise ValueError(f"weights must be [N = {self.n_reaches}], got shape {w.shape}")
        return self.chains.path_max_sum(self._down, w)

    @property
    def n_reaches(self) -> int:
        return int(self._ids.size)

    def __len__(self) -> int:
        return self.n_reaches

    @property
    def n_levels(self) -> int:
        return int(self._levels.max()) + 1

    def __repr__(self) -> str:
        return (
            f"RiverNetwork(n_reaches={self.n_reaches}, n_outlets={self.outlets.size}, "
            f"n_levels={self.n_levels}, attrs={sorted(self._attrs)})"
        )

    @cached_property
    def downstream_ids(self) -> np.ndarray:
        """Downstream reach id, int64 [N], 0 at outlets."""
        return np.where(self._down >= 0, self._ids[np.maximum(self._down, 0)], 0)

    @cached_property
    def outlets(self) -> np.ndarray:
        """Indices of outlet reaches (no downstream reach), int64."""
        return np.flatnonzero(self._down < 0)

    @cached_property
    def topo_order(self) -> np.ndarray:
        """Reach indices sorted by level (upstream first), int64 [N]."""
        return np.argsort(self._levels, kind="stable")

    @cached_property
    def level_ptr(self) -> np.ndarray:
        """CSR offsets into :attr:`topo_order`: level ``l`` is ``topo_order[ptr[l]:ptr[l+1]]``."""
        counts = np.bincount(self._levels, minlength=self.n_levels)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @cached_property
    def upstream_count(self) -> np.ndarray:
        """Number of upstream-adjacent reaches of each reach, int64 [N]."""
        return np.bincount(self._down[self._down >= 0], minlength=self.n_reaches)

    @cached_property
    def upstream_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr [N+1], indices) of upstream-adjacent reaches of each reach."""
        has = np.flatnonzero(self._down >= 0)
        order = has[np.argsort(self._down[has], kind="stable")]
        indptr = np.concatenate([[0], np.cumsum(self.upstream_count)]).astype(np.int64)
        return indptr, order

    @cached_property
    def basin(self) -> np.ndarray:
        """Index of the outlet each reach drains to, int64 [N] (pointer doubling)."""
        n = self.n_reaches
        p = np.where(self._down >= 0, self._down, np.arange(n))
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    # ------------------------------------------------------------------ lookups and views
    def index_of(self, ids: Any) -> np.ndarray:
        """Indices of the given reach ids; unknown ids are an error naming them."""
        ids = np.asarray(ids, dtype=np.int64)
        order = self._sorted_order
        pos = np.minimum(np.searchsorted(self._ids[order], ids), self.n_reaches - 1)
        idx = order[pos]
        bad = self._ids[idx] != ids
        if np.any(bad):
            raise KeyError(f"reach ids not in the network: {format_ids(np.ravel(ids[bad]))}")
        return idx

    @cached_property
    def _sorted_order(self) -> np.ndarray:
        return np.argsort(self._ids, kind="stable")

    def reorder(self, order: Any) -> RiverNetwork:
        """The same network with reaches stored in ``order`` (a permutation of indices)."""
        order = np.asarray(order, dtype=np.int64)
        if order.shape != self._ids.shape or not np.array_equal(
            np.sort(order), np.arange(self.n_reaches)
        ):
            raise ValueError(f"order must be a permutation of 0..{self.n_reaches - 1}")
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        d = self._down[order]
        down = np.where(d >= 0, inv[np.maximum(d, 0)], -1)
        return RiverNetwork(
            self._ids[order], down, {k: v[order] for k, v in self._attrs.items()}
        )

    def subnetwork(self, reaches: Any) -> RiverNetwork:
        """The network restricted to ``reaches`` (bool mask [N] or indices), order kept.

        Reaches whose downstream reach is left out become outlets.
        """
        sel = np.asarray(reaches)
        idx = np.flatnonzero(sel) if sel.dtype == bool else np.unique(sel.astype(np.int64))
        if idx.size == 0:
            raise NetworkError("subnetwork selection is empty")
        new = np.full(self.n_reaches, -1, dtype=np.int64)
        new[idx] = np.arange(idx.size)
        d = self._down[idx]
        down = np.where(d >= 0, new[np.maximum(d, 0)], -1)
        return RiverNetwork(self._ids[idx], down, {k: v[idx] for k, v in self._attrs.items()})

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph (nodes = ids, edges downstream) with attributes on nodes."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self._ids.tolist())
        has = self._down >= 0
        g.add_edges_from(zip(self._ids[has].tolist(), self._ids[self._down[has]].tolist()))
        for name, values in self._attrs.items():
            nx.set_node_attributes(g, dict(zip(self._ids.tolist(), values.tolist())), name)
        return g

"""Lakes of a river network: :class:`Lakes` (which reaches form which lake, level-pool
parameters) and :class:`LakeLayout` (a :class:`Lakes` bound to a network: outlets, the reach
each lake drains into, and the routing stages).

Semantics (t-route's): the reaches of a lake are replaced by the lake.  Its inflow is the
discharge of the reaches flowing into any of its reaches plus the lateral inflow of its
reaches; its outflow leaves through its outlet (the lake reach whose downstream reach is not
in the lake) into the outlet's downstream reach, as upstream inflow of that reach (or as
inflow of the next lake when that reach is in one).

Stages: a lake's stage is 1 + the largest stage of the lakes upstream of it (1 when there is
none); a reach outside lakes has the largest stage of the lakes upstream of it (0 when there
is none).  Routing runs stage 0's reaches, then the lakes of stage 1, stage 1's reaches, the
lakes of stage 2, ...: each reach and each lake once, after everything that feeds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import RiverNetwork, format_ids
from ._level_pool import LEVEL_POOL_PARAMS, LEVEL_POOL_UNITS
from ._rivtree import raise_levels

__all__ = ["LakeError", "LakeLayout", "Lakes"]

logger = logging.getLogger(__name__)


class LakeError(ValueError):
    """Lakes that do not fit their network or lack parameters (the message names the ids)."""


@dataclass(frozen=True, eq=False)
class Lakes:
    """Level-pool lakes: their ids, member reaches and parameters (SI units).

    Attributes
    ----------
    ids : ``[L]`` int64 lake ids (NWM ``lake_id`` = the waterbody COMID), unique.
    reach_ids : ``[M]`` int64 ids of the reaches in lakes (each in one lake).
    lake_of : ``[M]`` int64, the lake (index into ``ids``) of each of ``reach_ids``.
    params : ``[L, P]`` float64, columns :data:`~hydroscale.routing.LEVEL_POOL_PARAMS`
        (area m², elevations m, lengths m, orifice area m², coefficients).
    ifd : ``[L]`` float64 initial fractional depth (NWM ``ifd``): the start elevation is
        ``orifice_elevation + ifd (max_elevation - orifice_elevation)``.
    names : optional ``[L]`` names (e.g. "Lake Travis"), for summaries.
    """

    ids: np.ndarray
    reach_ids: np.ndarray
    lake_of: np.ndarray
    params: np.ndarray
    ifd: np.ndarray
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        reach_ids = np.asarray(self.reach_ids, dtype=np.int64).reshape(-1)
        lake_of = np.asarray(self.lake_of, dtype=np.int64).reshape(-1)
        params = np.asarray(self.params, dtype=np.float64)
        ifd = np.asarray(self.ifd, dtype=np.float64).reshape(-1)
        n, p = ids.size, len(LEVEL_POOL_PARAMS)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise LakeError(f"lake ids listed more than once: {format_ids(uniq[counts > 1])}")
        if params.shape != (n, p):
            raise LakeError(f"lake params must be [L={n}, {p}] (columns "
                            f"{list(LEVEL_POOL_PARAMS)}), got {params.shape}")
        if ifd.shape != (n,):
            raise LakeError(f"lake ifd must be [L={n}], got {ifd.shape}")
        if lake_of.shape != reach_ids.shape:
            raise LakeError(f"lake_of must have the shape of reach_ids {reach_ids.shape}, got "
                            f"{lake_of.shape}")
        if lake_of.size and (lake_of.min() < 0 or lake_of.max() >= n):
            raise LakeError(f"lake_of holds lake indices outside [0, {n - 1}]")
        ru, rc = np.unique(reach_ids, return_counts=True)
        if (rc > 1).any():
            raise LakeError(f"reaches listed in more than one lake (or twice): "
                            f"{format_ids(ru[rc > 1])}")
        empty = np.setdiff1d(np.arange(n), lake_of)
        if empty.size:
            raise LakeError(f"lakes without reaches: ids {format_ids(ids[empty])}; give each "
                            "lake its member reaches or its outlet reach")
        bad = ~np.isfinite(params)
        if bad.any():
            rows, cols = np.nonzero(bad)
            names = sorted({LEVEL_POOL_PARAMS[c] for c in cols})
            raise LakeError(f"lakes {format_ids(ids[np.unique(rows)])} miss level-pool "
                            f"parameters {names} (NaN or infinite)")
        area = params[:, LEVEL_POOL_PARAMS.index("area")]
        if (area <= 0).any():
            raise LakeError(f"lakes {format_ids(ids[area <= 0])} have a surface area <= 0 m²")
        if not np.isfinite(ifd).all():
            raise LakeError(f"lakes {format_ids(ids[~np.isfinite(ifd)])} miss their initial "
                            "fractional depth ifd")
        if self.names and len(self.names) != n:
            raise LakeError(f"names must name the {n} lakes, got {len(self.names)}")
        for name, value in (("ids", ids), ("reach_ids", reach_ids), ("lake_of", lake_of),
                            ("params", params), ("ifd", ifd)):
            value.setflags(write=False)
            set_(self, name, value)
        set_(self, "names", tuple(str(s) for s in self.names))

    @property
    def n_lakes(self) -> int:
        return int(self.ids.size)

    def __len__(self) -> int:
        return self.n_lakes

    def __repr__(self) -> str:
        return f"Lakes({self.n_lakes} lakes, {self.reach_ids.size} reaches)"

    def param(self, name: str) -> np.ndarray:
        """One parameter ``[L]`` (units :data:`~hydroscale.routing.LEVEL_POOL_UNITS`)."""
        if name not in LEVEL_POOL_UNITS:
            raise KeyError(f"unknown level-pool parameter {name!r}; the parameters are "
                           f"{list(LEVEL_POOL_PARAMS)}")
        return self.params[:, LEVEL_POOL_PARAMS.index(name)]

    @classmethod
    def from_members(cls, members: dict[int, Any], params: Any, ifd: Any,
                     names: Any = ()) -> Lakes:
        """Build from ``{lake_id: member reach ids}`` (in the order of ``params`` rows)."""
        ids = np.fromiter(members, dtype=np.int64, count=len(members))
        parts = [np.atleast_1d(np.asarray(members[k], np.int64)) for k in members]
        reach_ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        lake_of = np.repeat(np.arange(ids.size), [p.size for p in parts])
        return cls(ids, reach_ids, lake_of, params, ifd, tuple(names))

    @classmethod
    def synthetic(cls, network: RiverNetwork, fraction: float = 0.01, seed: int = 0) -> Lakes:
        """Two-reach level-pool lakes (a reach and one reach upstream of it, none sharing a
        reach) on about ``fraction`` of ``network``'s reaches: the benchmarks' lakes
        (``bench/lakes.py``).  Areas U(1, 10) km², weir crest 10.5 m, orifice 5 m, maximum
        12 m, start depth ``ifd`` U(0.6, 0.9); ids 1..L."""
        rng = np.random.default_rng(seed)
        down = network.downstream
        up_of = np.full(network.n_reaches, -1)
        has = np.flatnonzero(down >= 0)
        up_of[down[has]] = has  # one upstream reach of each reach (the last one written)
        taken = np.zeros(network.n_reaches, bool)
        members: dict[int, np.ndarray] = {}
        want = int(fraction * network.n_reaches) // 2
        for j in rng.permutation(np.flatnonzero(up_of >= 0)):
            if len(members) >= want:
                break
            u = up_of[j]
            if not (taken[j] or taken[u]):
                taken[[j, u]] = True
                members[len(members) + 1] = network.ids[[j, u]]
        n = len(members)
        cols = dict(area=rng.uniform(1e6, 1e7, n), max_elevation=np.full(n, 12.0),
                    weir_elevation=np.full(n, 10.5), weir_coefficient=np.full(n, 0.4),
                    weir_length=np.full(n, 20.0), dam_length=np.full(n, 10.0),
                    orifice_elevation=np.full(n, 5.0), orifice_coefficient=np.full(n, 0.1),
                    orifice_area=np.ones(n))
        params = np.stack([cols[c] for c in LEVEL_POOL_PARAMS], 1)
        return cls.from_members(members, params, rng.uniform(0.6, 0.9, n))

    def initial_elevation(self) -> np.ndarray:
        """NWM's start elevation ``E_o + ifd (E_max - E_o)`` (m) ``[L]``."""
        eo = self.param("orifice_elevation")
        return eo + self.ifd * (self.param("max_elevation") - eo)


@dataclass(frozen=True, eq=False)
class LakeLayout:
    """:class:`Lakes` bound to a network (N reaches, L lakes, indices into the network).

    Attributes
    ----------
    lakes : the lakes.
    reach_lake : ``[N]`` the lake of each reach, -1 outside lakes.
    outlet : ``[L]`` the outlet reach of each lake (its downstream reach is not in the lake).
    lake_down : ``[L]`` the reach each lake drains into, -1 where its outlet is an outlet of
        the network.
    lake_stage : ``[L]`` stage of each lake (>= 1).
    reach_stage : ``[N]`` stage of each reach (lake reaches: their lake's stage).
    """

    lakes: Lakes
    reach_lake: np.ndarray
    outlet: np.ndarray
    lake_down: np.ndarray
    lake_stage: np.ndarray
    reach_stage: np.ndarray

    @classmethod
    def build(cls, network: RiverNetwork, lakes: Lakes) -> LakeLayout:
        """Bind ``lakes`` to ``network``; errors name the lake and reach ids at fault."""
        if not isinstance(lakes, Lakes):
            raise TypeError(f"lakes must be a hydroscale.routing.Lakes, got "
                            f"{type(lakes).__name__}")
        ids = network.ids
        order = np.argsort(ids, kind="stable")
        pos = np.minimum(np.searchsorted(ids[order], lakes.reach_ids), max(ids.size - 1, 0))
        idx = order[pos] if ids.size else pos
        absent = ids[idx] != lakes.reach_ids if ids.size else np.ones(lakes.reach_ids.size,
                                                                      bool)
        if absent.any():
            bad_lakes = np.unique(lakes.ids[lakes.lake_of[absent]])
            raise LakeError(f"lakes {format_ids(bad_lakes)} list reaches that are not in the "
                            f"network: {format_ids(lakes.reach_ids[absent])}")
        n, n_l = network.n_reaches, lakes.n_lakes
        reach_lake = np.full(n, -1, np.int64)
        reach_lake[idx] = lakes.lake_of
        down = network.downstream
        d = down[idx]
        is_out = (d < 0) | (reach_lake[np.maximum(d, 0)] != lakes.lake_of)
        n_out = np.bincount(lakes.lake_of[is_out], minlength=n_l)
        two = np.flatnonzero(n_out != 1)
        if two.size:
            j = int(two[0])
            outs = ids[idx[is_out & (lakes.lake_of == j)]]
            raise LakeError(
                f"lakes {format_ids(lakes.ids[two])} have reaches that drain out of the lake "
                f"at more than one reach (lake {int(lakes.ids[j])}: reaches "
                f"{format_ids(outs)} leave it): a lake's reaches must drain to one outlet; "
                "split the lake or correct its member reaches")
        outlet = np.empty(n_l, np.int64)
        outlet[lakes.lake_of[is_out]] = idx[is_out]
        lake_down = down[outlet]
        reach_stage, lake_stage = _stages(network, reach_lake, outlet, n_l)
        layout = cls(lakes, reach_lake, outlet, lake_down, lake_stage, reach_stage)
        for name in ("reach_lake", "outlet", "lake_down", "lake_stage", "reach_stage"):
            getattr(layout, name).setflags(write=False)
        logger.info("lakes: %d lakes (%d reaches) in %d stage(s)", n_l, lakes.reach_ids.size,
                    layout.n_stages)
        return layout

    @property
    def n_stages(self) -> int:
        """Lake stages (the reaches have stages 0 .. n_stages)."""
        return int(self.lake_stage.max()) if self.lake_stage.size else 0

    def cut(self, network: RiverNetwork, cluster_of: Any) -> tuple[np.ndarray, np.ndarray]:
        """Cut a partition of ``network`` (the layout's) at the lakes: each lake its own
        cluster.

        ``cluster_of`` ``[N]`` is a partition (ids in topological order of its cluster DAG,
        e.g. :func:`~hydroscale.partition.partition_network`).  Returns ``(cluster_of [N],
        lake_cluster [L])``: every lake's reaches form one cluster; the other reaches keep
        their cluster, split into the pieces that stay connected without its lake reaches
        (a cluster with reaches above and below a lake would feed itself through it; a
        tributary joining below the lake stays with the reaches it joins: no exit there).
        Ids in topological order, and within each wave of the cluster DAG the lakes have the
        largest ids, so the linear clusters of a wave are consecutive in engine rank (one
        batch) and so are its lakes (one fused lake step)."""
        base = np.asarray(cluster_of, dtype=np.int64)
        n = self.reach_lake.size
        if base.shape != (n,):
            raise ValueError(f"cluster_of must be [N={n}], got {base.shape}")
        lake = self.reach_lake >= 0
        down = network.downstream
        # each reach outside lakes -> the most downstream reach of its piece (pointer
        # doubling along the in-piece downstream links)
        d = np.maximum(down, 0)
        link = (down >= 0) & ~lake & ~lake[d] & (base[d] == base)
        root = np.where(link, d, np.arange(n))
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        key = np.where(lake, n + self.reach_lake, root)
        _, piece = np.unique(key, return_inverse=True)
        piece = piece.reshape(-1).astype(np.int64)
        n_c = int(piece.max()) + 1 if n else 0
        # topological order of the pieces: longest-path levels of their DAG
        src = np.flatnonzero(down >= 0)
        src = src[piece[src] != piece[down[src]]]
        edges = (np.unique(np.stack([piece[src], piece[down[src]]], 1), axis=0) if src.size
                 else np.zeros((0, 2), np.int64))
        level = np.zeros(n_c, np.int64)
        for _ in range(n_c + 1):
            new = level.copy()
            np.maximum.at(new, edges[:, 1], level[edges[:, 0]] + 1)
            if np.array_equal(new, level):
                break
            level = new
        else:  # pragma: no cover - a forest cut at lakes has no cycle
            raise LakeError("the partition cut at the lakes has a cycle")
        is_lake = np.zeros(n_c, dtype=bool)
        is_lake[piece[lake]] = True
        new_id = _lakes_last(level, is_lake)
        cl = new_id[piece]
        return cl, cl[self.outlet]

    def stage_waves(self, network: RiverNetwork, cluster_of: Any) -> np.ndarray:
        """Waves ``[C]`` of a partition cut at the lakes (:meth:`cut`) in which the lakes of
        each stage share one wave: the clusters outside lakes at their longest-path levels,
        the lakes of stage ``s`` all in the wave after the last of the clusters that feed any
        of them.  On one device each wave of lakes is one fused level-pool loop, so a network
        has as many loops as lake stages (not as many as waves holding a lake); a cluster
        waits only for what feeds it (a main stem below a stage's lakes that feeds no later
        lake runs beside the later stages, not before them)."""
        cl = np.asarray(cluster_of, dtype=np.int64)
        n_c = int(cl.max()) + 1 if cl.size else 0
        lake = self.reach_lake >= 0
        c_stage = np.zeros(n_c, np.int64)  # a cluster's largest stage (a piece may hold a
        np.maximum.at(c_stage, cl, self.reach_stage)  # tributary of an earlier stage)
        c_lake = np.zeros(n_c, bool)
        c_lake[cl[lake]] = True
        down = network.downstream
        src = np.flatnonzero(down >= 0)
        cross = src[cl[src] != cl[down[src]]]
        edges = (np.unique(np.stack([cl[cross], cl[down[cross]]], 1), axis=0) if cross.size
                 else np.zeros((0, 2), np.int64))
        wave = np.zeros(n_c, np.int64)
        for s in range(self.n_stages + 1):
            if s:  # every cluster feeding a lake of stage s has a stage below s: placed
                lk = c_lake & (c_stage == s)
                into = edges[lk[edges[:, 1]]]
                wave[lk] = int(wave[into[:, 0]].max()) + 1 if into.size else 0
            grp = ~c_lake & (c_stage == s)
            # the longest paths along the edges into this stage's clusters
            wave = raise_levels(wave, edges[grp[edges[:, 1]]])
        return wave

    def wave_cut(self, network: RiverNetwork, cluster_of: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`cut` and :meth:`stage_waves` for one device: ``(cluster_of [N],
        lake_cluster [L], wave_of [C])``, the clusters numbered by wave and, within a wave,
        the clusters outside lakes first (one run of batches, then one run of lakes: a wave
        holding a stage's lakes steps them in one loop)."""
        cl, lake_cluster = self.cut(network, cluster_of)
        wave = self.stage_waves(network, cl)
        n_c = wave.size
        c_lake = np.zeros(n_c, bool)
        c_lake[lake_cluster] = True
        new_id = _lakes_last(wave, c_lake)
        wave_of = np.empty_like(wave)
        wave_of[new_id] = wave
        return new_id[cl], new_id[lake_cluster], wave_of

    def steady_inflow(self, network: RiverNetwork, q0: Any) -> np.ndarray:
        """The warm start of the block-sparse lake paths (:class:`LakeRouter` with a
        block-sparse engine, the distributed runtime): the constant inflow ``r* = q0 -
        (q0 of the upstream reaches outside lakes)`` ``[N]`` float64 of each reach outside
        lakes (0 on lake reaches) that, routed through the linear reaches with the lakes'
        outflow added in full, keeps discharge ``q0`` ``[N]`` (m³/s); route ``r - r*`` from
        dry and add ``q0`` outside lakes, each lake starting at the level releasing ``q0`` at
        its outlet with its feeders' ``q0`` added to its inflow."""
        q0 = np.asarray(q0, np.float64)
        down = network.downstream
        src = np.flatnonzero((down >= 0) & (self.reach_lake < 0))
        src = src[self.reach_lake[down[src]] < 0]
        up = np.zeros_like(q0)
        np.add.at(up, down[src], q0[src])
        return np.where(self.reach_lake < 0, q0 - up, 0.0)

    def stage_reaches(self, stage: int) -> np.ndarray:
        """Indices of the reaches outside lakes of ``stage`` (ascending)."""
        return np.flatnonzero((self.reach_stage == stage) & (self.reach_lake < 0))

    def stage_lakes(self, stage: int) -> np.ndarray:
        """Indices of the lakes of ``stage`` (ascending)."""
        return np.flatnonzero(self.lake_stage == stage)


def _lakes_last(level: np.ndarray, is_lake: np.ndarray) -> np.ndarray:
    """New ids ``[C]`` of clusters numbered by ``level`` and, within a level, the clusters
    outside lakes first (then by their old id)."""
    n_c = level.size
    new_id = np.empty(n_c, np.int64)
    new_id[np.lexsort((np.arange(n_c), is_lake, level))] = np.arange(n_c)
    return new_id


def _stages(network: RiverNetwork, reach_lake: np.ndarray, outlet: np.ndarray,
            n_lakes: int) -> tuple[np.ndarray, np.ndarray]:
    """Stages of reaches and lakes: one pass over the topological levels (upstream first),
    pushing each reach's stage to its downstream reach (a lake's members carry the largest
    inflow stage down to its outlet, where the lake's stage is 1 + that)."""
    n = network.n_reaches
    inflow_stage = np.zeros(n, np.int64)  # largest stage flowing into each reach
    stage = np.zeros(n, np.int64)
    is_outlet = np.zeros(n, bool)
    is_outlet[outlet] = True
    order, ptr, down = network.topo_order, network.level_ptr, network.downstream
    for lv in range(network.n_levels):
        idx = order[ptr[lv] : ptr[lv + 1]]
        s = inflow_stage[idx]
        s = np.where(is_outlet[idx], s + 1, s)  # a lake's outlet: the lake's stage
        stage[idx] = s
        d = down[idx]
        has = d >= 0
        np.maximum.at(inflow_stage, d[has], s[has])
    lake_stage = stage[outlet] if n_lakes else np.zeros(0, np.int64)
    inl = reach_lake >= 0
    stage[inl] = lake_stage[reach_lake[inl]]
    return stage, lake_stage

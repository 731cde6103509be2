r"""Catchment interpolation: runoff depth on source cells -> lateral inflow of reaches.

A source cell is a grid cell or a hydrological response unit (HRU); every reach drains its own
catchment.  The interpolator holds the sparse table of overlap areas ``a[c, j]`` (km²) between
cell ``c`` and the catchment of reach ``j`` and turns a runoff depth ``d`` (mm per routing step)
into a volume flux (m³/s, averaged over the step):

.. math:: r_j(t) = \frac{10^{3}}{\Delta t} \sum_c a_{c j}\, d_c(t)

(1 mm over 1 km² is 10³ m³; ``Δt`` is the step length in seconds, always given explicitly).
Volume is conserved: ``Σ_j r_j Δt = 10³ Σ_c d_c Σ_j a_cj`` exactly, so a cell contributes in
proportion to the part of it that lies inside catchments; nothing is renormalised.

The table comes from :meth:`CatchmentInterpolator.from_table` (cell, reach, area rows, e.g. an
HRU-to-reach table), from :meth:`~CatchmentInterpolator.from_boxes` (overlap of axis-aligned
grid cells with box catchments) or :meth:`~CatchmentInterpolator.from_polygons` (grid cells
clipped by catchment polygons).  :meth:`~CatchmentInterpolator.subset` stages the weights of
one cluster's reaches, :meth:`~CatchmentInterpolator.split` those of every cluster (or worker)
in one pass, so a worker holds only its own rows and cells.  The map is linear and built from
``index_select``/``index_add``, so gradients flow to the source field on any device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork, format_ids

__all__ = ["CatchmentInterpolator", "MizuRouteInputs", "box_overlap_table", "mizuroute_inputs",
           "polygon_overlap_table"]

logger = logging.getLogger(__name__)

_MM_KM2_TO_M3 = 1.0e3  # 1 mm of depth over 1 km² = 1000 m³
_LENGTH_TO_KM = {"m": 1.0e-3, "km": 1.0}
_CHUNK_ELEMENTS = 1 << 25  # gathered products per time chunk in forward()


def _some(a: Any) -> str:
    return format_ids(a, k=8)


def _lookup(wanted: np.ndarray, known: np.ndarray, what: str) -> np.ndarray:
    """Positions of ``wanted`` ids in ``known`` (unique); unknown ids are an error naming them."""
    order = np.argsort(known, kind="stable")
    sk = known[order]
    pos = np.clip(np.searchsorted(sk, wanted), 0, max(known.size - 1, 0))
    ok = sk[pos] == wanted if known.size else np.zeros(wanted.shape, dtype=bool)
    if not ok.all():
        raise ValueError(f"{what} ids {_some(np.unique(wanted[~ok]))} are not in the given "
                         f"{what} ids; pass the full list of {what} ids (or fix the table)")
    return order[pos]


class CatchmentInterpolator:
    """Sparse area weights from ``n_cells`` source cells to ``n_reaches`` reaches.

    Parameters
    ----------
    cell : int ``[nnz]``
        Source cell index of every weight row (``0 .. n_cells - 1``).
    reach : int ``[nnz]``
        Reach index of every row (``0 .. n_reaches - 1``, network order).
    area_km2 : float ``[nnz]``
        Overlap area (km², ``>= 0``) of the cell with the reach's catchment.  Repeated
        (cell, reach) pairs are summed.
    n_cells, n_reaches : sizes of the source field and of the reach axis.
    step_seconds : length of one routing step in seconds (e.g. 86400 for daily runoff).
    cell_area_km2 : optional ``[n_cells]`` full cell areas; when given, a cell whose overlaps
        add up to more than its area (beyond 1e-6 relative) is an error.
    source_cells : optional ``[n_cells]`` global cell index of each local cell (set by
        :meth:`subset`; default ``arange(n_cells)``).
    reach_index : optional ``[n_reaches]`` global reach index of each local reach (set by
        :meth:`subset`; default ``arange(n_reaches)``).
    """

    def __init__(
        self,
        cell: Any,
        reach: Any,
        area_km2: Any,
        *,
        n_cells: int,
        n_reaches: int,
        step_seconds: float,
        cell_area_km2: Any = None,
        source_cells: Any = None,
        reach_index: Any = None,
    ) -> None:
        c = np.asarray(cell).astype(np.int64, copy=False).ravel()
        r = np.asarray(reach).astype(np.int64, copy=False).ravel()
        a = np.asarray(area_km2, dtype=np.float64).ravel()
        if not (c.size == r.size == a.size):
            raise ValueError(f"cell, reach and area_km2 must have one entry per weight row, got "
                             f"{c.size}, {r.size} and {a.size}")
        if not np.isfinite(step_seconds) or step_seconds <= 0:
            raise ValueError(f"step_seconds must be a positive number of seconds, got "
                             f"{step_seconds}")
        for name, idx, n in (("cell", c, n_cells), ("reach", r, n_reaches)):
            bad = (idx < 0) | (idx >= n)
            if bad.any():
                raise ValueError(f"{name} indices {_some(idx[bad])} are outside [0, {n})")
        bad = ~np.isfinite(a) | (a < 0)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(f"area_km2 must be finite and >= 0; rows {_some(rows)} (cells "
                             f"{_some(c[rows])}, reaches {_some(r[rows])}) have "
                             f"{_some(a[rows])}")
        # coalesce duplicate (cell, reach) pairs and drop empty rows; sort by reach so that a
        # reach's rows are contiguous (subset() and the CSR view rely on it)
        key = r * max(int(n_cells), 1) + c
        uk, inv = np.unique(key, return_inverse=True)
        a = np.bincount(inv, weights=a, minlength=uk.size)
        keep = a > 0
        uk, a = uk[keep], a[keep]
        self.reach = (uk // max(int(n_cells), 1)).astype(np.int64)
        self.cell = (uk % max(int(n_cells), 1)).astype(np.int64)
        self.area_km2 = a
        self.n_cells = int(n_cells)
        self.n_reaches = int(n_reaches)
        self.step_seconds = float(step_seconds)
        self.source_cells = (np.arange(self.n_cells, dtype=np.int64) if source_cells is None
                             else np.asarray(source_cells, dtype=np.int64))
        self.reach_index = (np.arange(self.n_reaches, dtype=np.int64) if reach_index is None
                            else np.asarray(reach_index, dtype=np.int64))
        if self.source_cells.shape != (self.n_cells,):
            raise ValueError(f"source_cells must be [n_cells={self.n_cells}], got "
                             f"{self.source_cells.shape}")
        if self.reach_index.shape != (self.n_reaches,):
            raise ValueError(f"reach_index must be [n_reaches={self.n_reaches}], got "
                             f"{self.reach_index.shape}")
        if cell_area_km2 is not None:
            full = np.asarray(cell_area_km2, dtype=np.float64).ravel()
            if full.shape != (self.n_cells,):
                raise ValueError(f"cell_area_km2 must be [n_cells={self.n_cells}], got "
                                 f"{full.shape}")
            used = self.cell_coverage_km2()
            over = used > full * (1 + 1e-6) + 1e-12
            if over.any():
                bad = np.flatnonzero(over)
                raise ValueError(
                    f"cells {_some(self.source_cells[bad])} give {_some(used[bad])} km² to "
                    f"reaches but their areas are {_some(full[bad])} km²; overlapping "
                    "catchments would count that runoff twice: fix the weight table")
        self._dev: dict[tuple[Any, torch.dtype], tuple[torch.Tensor, ...]] = {}
        logger.debug("CatchmentInterpolator: %d cells -> %d reaches, %d weights",
                     self.n_cells, self.n_reaches, self.nnz)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_table(
        cls,
        cell_ids: Any,
        reach_ids: Any,
        area_km2: Any,
        *,
        cells: Any,
        reaches: Any,
        step_seconds: float,
        cell_area_km2: Any = None,
    ) -> CatchmentInterpolator:
        """From rows (cell id, reach id, overlap area in km²), e.g. an HRU -> reach table.

        ``cells`` are the ids of the source field's cells in its order (``[C]``), ``reaches``
        the reach ids in network order (``[N]``; a :class:`~hydroscale.network.RiverNetwork`
        is accepted).  An id missing from either list is an error naming it.
        """
        reach_list = np.asarray(getattr(reaches, "ids", reaches))
        cell_list = np.asarray(cells)
        for name, ids in (("cells", cell_list), ("reaches", reach_list)):
            u, k = np.unique(ids, return_counts=True)
            if (k > 1).any():
                raise ValueError(f"{name} lists ids {_some(u[k > 1])} more than once")
        ci = _lookup(np.asarray(cell_ids).ravel(), cell_list, "cell")
        ri = _lookup(np.asarray(reach_ids).ravel(), reach_list, "reach")
        return cls(ci, ri, area_km2, n_cells=cell_list.size, n_reaches=reach_list.size,
                   step_seconds=step_seconds, cell_area_km2=cell_area_km2)

    @classmethod
    def from_boxes(
        cls,
        cell_boxes: Any,
        catchment_boxes: Any,
        *,
        step_seconds: float,
        length_unit: str = "m",
    ) -> CatchmentInterpolator:
        """From axis-aligned boxes ``[C, 4]`` and ``[N, 4]`` = (xmin, ymin, xmax, ymax) in
        projected (equal-area) coordinates in ``length_unit`` ("m" or "km"); one box per
        reach catchment, in network order.  See :func:`box_overlap_table`."""
        c, r, a = box_overlap_table(cell_boxes, catchment_boxes, length_unit=length_unit)
        cb = np.asarray(cell_boxes, dtype=np.float64).reshape(-1, 4)
        nb = np.asarray(catchment_boxes, dtype=np.float64).reshape(-1, 4)
        return cls(c, r, a, n_cells=cb.shape[0], n_reaches=nb.shape[0],
                   step_seconds=step_seconds)

    @classmethod
    def from_polygons(
        cls,
        cell_boxes: Any,
        catchments: Sequence[Any],
        *,
        step_seconds: float,
        length_unit: str = "m",
    ) -> CatchmentInterpolator:
        """From grid-cell boxes ``[C, 4]`` and one simple polygon ``[V, 2]`` per reach
        catchment (network order), in projected (equal-area) coordinates in ``length_unit``.
        See :func:`polygon_overlap_table`."""
        c, r, a = polygon_overlap_table(cell_boxes, catchments, length_unit=length_unit)
        cb = np.asarray(cell_boxes, dtype=np.float64).reshape(-1, 4)
        return cls(c, r, a, n_cells=cb.shape[0], n_reaches=len(catchments),
                   step_seconds=step_seconds)

    # ------------------------------------------------------------------ queries
    @property
    def nnz(self) -> int:
        return int(self.area_km2.size)

    def catchment_area_km2(self) -> np.ndarray:
        """``[n_reaches]`` area draining into each reach from the cells (km²)."""
        return np.bincount(self.reach, weights=self.area_km2, minlength=self.n_reaches)

    def cell_coverage_km2(self) -> np.ndarray:
        """``[n_cells]`` area of each cell given to reaches (km²)."""
        return np.bincount(self.cell, weights=self.area_km2, minlength=self.n_cells)

    def dense(self) -> np.ndarray:
        """The weights as a dense ``[n_reaches, n_cells]`` array (km²; for small cases)."""
        w = np.zeros((self.n_reaches, self.n_cells))
        np.add.at(w, (self.reach, self.cell), self.area_km2)
        return w

    def __repr__(self) -> str:
        return (f"CatchmentInterpolator({self.n_cells} cells -> {self.n_reaches} reaches, "
                f"{self.nnz} weights, step {self.step_seconds:g} s)")

    # ------------------------------------------------------------------ staging
    def subset(self, reach_indices: Any) -> CatchmentInterpolator:
        """The weights of ``reach_indices`` only (local reach indices of this interpolator, in
        the order given, e.g. ``RivTreeCluster.cluster_reaches(c)``), and only the cells they
        need.  The result maps a field on its :attr:`source_cells` (global cell indices; take
        them with :meth:`select_cells`) to ``[B, len(reach_indices), T]``."""
        idx = np.asarray(reach_indices, dtype=np.int64).ravel()
        bad = (idx < 0) | (idx >= self.n_reaches)
        if bad.any():
            raise ValueError(f"reach_indices {_some(idx[bad])} are outside "
                             f"[0, {self.n_reaches})")
        if np.unique(idx).size != idx.size:
            raise ValueError("reach_indices must not repeat a reach")
        local = np.full(self.n_reaches, -1, dtype=np.int64)
        local[idx] = np.arange(idx.size)
        rows = np.flatnonzero(local[self.reach] >= 0)
        cells, cell_local = np.unique(self.cell[rows], return_inverse=True)
        return CatchmentInterpolator(
            cell_local, local[self.reach[rows]], self.area_km2[rows], n_cells=cells.size,
            n_reaches=idx.size, step_seconds=self.step_seconds,
            source_cells=self.source_cells[cells], reach_index=self.reach_index[idx],
        )

    def split(self, groups: Sequence[Any]) -> list[CatchmentInterpolator]:
        """One :meth:`subset` per group of reaches, in one pass over the weights.

        ``groups`` is a sequence of disjoint arrays of local reach indices (e.g. the reaches
        of every cluster, ``RivTreeCluster.cluster_reaches(c)``, or of every worker); the
        result ``[k]`` equals ``subset(groups[k])``: it holds only the rows of those reaches
        and the cells they need, so a worker is shipped only its own weights.  Reaches in no
        group are left out.  Cost ``O(nnz log nnz)`` for all groups together (a loop of
        :meth:`subset` would be ``O(nnz)`` per group).
        """
        owner = np.full(self.n_reaches, -1, dtype=np.int64)
        local = np.full(self.n_reaches, -1, dtype=np.int64)
        idx = [np.asarray(g, dtype=np.int64).ravel() for g in groups]
        for k, g in enumerate(idx):
            bad = (g < 0) | (g >= self.n_reaches)
            if bad.any():
                raise ValueError(f"groups[{k}] holds reach indices {_some(g[bad])} outside "
                                 f"[0, {self.n_reaches})")
            taken = owner[g] >= 0
            if taken.any() or np.unique(g).size != g.size:
                dup = g[taken] if taken.any() else g[np.unique(g, return_counts=True)[1] > 1]
                raise ValueError(f"groups must be disjoint; reach indices {_some(dup)} are in "
                                 f"groups[{k}] and in an earlier group (or twice in it)")
            owner[g] = k
            local[g] = np.arange(g.size)
        row_owner = owner[self.reach]
        order = np.argsort(row_owner, kind="stable")
        bounds = np.searchsorted(row_owner[order], np.arange(len(idx) + 1))
        out = []
        for k, g in enumerate(idx):
            rows = order[bounds[k] : bounds[k + 1]]
            cells, cell_local = np.unique(self.cell[rows], return_inverse=True)
            out.append(CatchmentInterpolator(
                cell_local, local[self.reach[rows]], self.area_km2[rows], n_cells=cells.size,
                n_reaches=g.size, step_seconds=self.step_seconds,
                source_cells=self.source_cells[cells], reach_index=self.reach_index[g],
            ))
        return out

    def select_cells(self, field: torch.Tensor, *, global_field: bool = True) -> torch.Tensor:
        """The part ``[..., n_cells, T]`` of a full source field ``[..., C_global, T]`` that this
        (subset) interpolator reads (identity for a full interpolator)."""
        if not global_field:
            return field
        idx = self._tensors(field.device, field.dtype)[3]
        return field.index_select(-2, idx)

    # ------------------------------------------------------------------ apply
    def _tensors(self, device: Any, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (torch.device(device), dtype)
        if key not in self._dev:
            t = lambda a, dt=torch.int64: torch.as_tensor(a, device=device, dtype=dt)  # noqa: E731
            self._dev[key] = (t(self.cell), t(self.reach),
                              t(self.area_km2 * (_MM_KM2_TO_M3 / self.step_seconds), dtype),
                              t(self.source_cells))
        return self._dev[key]

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        """Lateral inflow ``[..., n_reaches, T]`` (m³/s, step-averaged) from runoff depth
        ``[..., n_cells, T]`` (mm per routing step); differentiable w.r.t. ``depth``."""
        depth = torch.as_tensor(depth)
        if depth.ndim < 2 or depth.shape[-2] != self.n_cells:
            raise ValueError(f"depth must be [..., n_cells={self.n_cells}, T] (mm per step), "
                             f"got {tuple(depth.shape)}")
        if not depth.is_floating_point():
            depth = depth.to(torch.get_default_dtype())
        cell, reach, w, _ = self._tensors(depth.device, depth.dtype)
        lead, t = depth.shape[:-2], depth.shape[-1]
        # the gathered [..., nnz, chunk] products are transient: bound them by time chunks
        chunk = max(1, _CHUNK_ELEMENTS // max(1, self.nnz * int(np.prod(lead, dtype=np.int64))))
        parts = []
        for a in range(0, t, chunk):
            d = depth[..., a : a + chunk]
            out = d.new_zeros(*lead, self.n_reaches, d.shape[-1])
            parts.append(out.index_add(-2, reach, d.index_select(-2, cell) * w.unsqueeze(-1)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    __call__ = forward

    def volume_m3(self, depth: Any) -> Any:
        """Volume (m³) the cells give to reaches over all steps of ``depth`` ``[..., C, T]``
        (mm per step): ``10³ Σ_c coverage_c Σ_t d_c(t)`` (the conserved quantity)."""
        cov = self.cell_coverage_km2()
        if isinstance(depth, torch.Tensor):
            cov_t = torch.as_tensor(cov, dtype=depth.dtype, device=depth.device)
            return _MM_KM2_TO_M3 * (depth.sum(-1) * cov_t).sum(-1)
        return _MM_KM2_TO_M3 * (np.asarray(depth, np.float64).sum(-1) * cov).sum(-1)


# ---------------------------------------------------------------------- overlap tables
@dataclass(frozen=True)
class MizuRouteInputs:
    """A mizuRoute case ready to route (:func:`mizuroute_inputs`).

    ``network``: the reaches; ``interpolator``: HRUs -> reaches with the HRU areas
    (``interpolator(depth)`` gives mizuRoute's lateral inflow, m³/s); ``depth``: float64
    tensor ``[H, T]`` of runoff depth per interval (mm) on the interpolator's cells;
    ``hru_ids`` [H]; ``time`` [T] interval starts; ``interval_s`` (s).
    """

    network: RiverNetwork
    interpolator: CatchmentInterpolator
    depth: torch.Tensor | None
    hru_ids: np.ndarray
    time: np.ndarray | None
    interval_s: float | None


def mizuroute_inputs(source: Any, runoff: Any = None, *,
                     names: Mapping[str, str] | None = None,
                     step_seconds: float | None = None) -> MizuRouteInputs:
    """The network and the :class:`CatchmentInterpolator` of a mizuRoute case in one call.

    ``source``, ``runoff`` and ``names`` are those of
    :func:`hydroscale.io.mizuroute.read_mizuroute` (a control file, or an NTOPO NetCDF and
    its runoff NetCDF; variable names from the control file or ``names``).  Each HRU is a
    cell of the interpolator with its whole area (``area`` m² -> km²) on the reach it drains
    into, so ``interpolator(depth)`` is mizuRoute's ``instRunoff``; the runoff's units
    (``mm/s``, ``mm/d``, ``m/s``, ...) are converted to the interpolator's depth per step
    (mm).  ``step_seconds`` is needed only without runoff (default: the runoff interval).
    """
    from ..io.mizuroute import read_mizuroute

    case = read_mizuroute(source, runoff, names=names)
    dt = case.interval_s if step_seconds is None else float(step_seconds)
    if dt is None:
        raise ValueError(f"{case.source}: no runoff read: give step_seconds (the routing step, "
                         "s) to build the interpolator")
    interp = CatchmentInterpolator.from_table(
        case.hru_ids, case.hru_reach, case.hru_area_m2 / 1.0e6, cells=case.hru_ids,
        reaches=case.network, step_seconds=dt)
    depth = None if case.runoff is None else torch.from_numpy(case.runoff_depth_mm())
    time = None if case.runoff is None else case.runoff["time"].values
    return MizuRouteInputs(case.network, interp, depth, case.hru_ids, time, case.interval_s)


def _boxes(b: Any, name: str) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{name} must be [n, 4] (xmin, ymin, xmax, ymax), got {a.shape}")
    bad = ~np.isfinite(a).all(1) | (a[:, 2] < a[:, 0]) | (a[:, 3] < a[:, 1])
    if bad.any():
        raise ValueError(f"{name} rows {_some(np.flatnonzero(bad))} are not finite boxes with "
                         "xmin <= xmax and ymin <= ymax")
    return a


def _unit(length_unit: str) -> float:
    if length_unit not in _LENGTH_TO_KM:
        raise ValueError(f"length_unit must be 'm' or 'km', got {length_unit!r}")
    return _LENGTH_TO_KM[length_unit] ** 2


def _candidates(cells: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Cells whose box intersects ``box`` with positive area."""
    return np.flatnonzero((cells[:, 0] < box[2]) & (cells[:, 2] > box[0])
                          & (cells[:, 1] < box[3]) & (cells[:, 3] > box[1]))


def box_overlap_table(
    cell_boxes: Any, catchment_boxes: Any, *, length_unit: str = "m",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlap areas (km²) of axis-aligned cell boxes ``[C, 4]`` with catchment boxes
    ``[N, 4]`` (xmin, ymin, xmax, ymax); returns ``(cell, reach, area_km2)`` rows with positive
    area.  Vectorised over cells, one pass per catchment."""
    cells = _boxes(cell_boxes, "cell_boxes")
    cats = _boxes(catchment_boxes, "catchment_boxes")
    k = _unit(length_unit)
    out_c, out_r, out_a = [], [], []
    for j, box in enumerate(cats):
        cand = _candidates(cells, box)
        cb = cells[cand]
        w = np.minimum(cb[:, 2], box[2]) - np.maximum(cb[:, 0], box[0])
        h = np.minimum(cb[:, 3], box[3]) - np.maximum(cb[:, 1], box[1])
        out_c.append(cand)
        out_r.append(np.full(cand.size, j, dtype=np.int64))
        out_a.append(w * h * k)
    return _concat(out_c, out_r, out_a)


def _concat(c: list, r: list, a: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate(c).astype(np.int64), np.concatenate(r).astype(np.int64),
            np.concatenate(a))


def _shoelace(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unsigned areas of polygons given as padded vertex arrays ``[M, V]`` (closed by wrap)."""
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(1))


def _clip_polygon_to_box(poly: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a simple polygon ``[V, 2]`` by a box (a convex window, so
    the clipped area is exact even for a concave polygon; degenerate edges have no area)."""
    out = poly
    for axis, bound, keep_low in ((0, box[0], False), (0, box[2], True),
                                  (1, box[1], False), (1, box[3], True)):
        if out.shape[0] == 0:
            break
        inside = out[:, axis] <= bound if keep_low else out[:, axis] >= bound
        prev = np.roll(out, 1, axis=0)
        prev_in = np.roll(inside, 1)
        pts = []
        for p, q, pin, qin in zip(prev, out, prev_in, inside):
            if qin != pin:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                pts.append(p + t * (q - p))
            if qin:
                pts.append(q)
        out = np.asarray(pts).reshape(-1, 2)
    return out


def polygon_overlap_table(
    cell_boxes: Any, catchments: Sequence[Any], *, length_unit: str = "m",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlap areas (km²) of axis-aligned cell boxes ``[C, 4]`` with simple catchment
    polygons (one ``[V, 2]`` vertex array per reach, either orientation, not closed or closed);
    returns ``(cell, reach, area_km2)`` rows with positive area.

    Cells fully inside a convex catchment's bounding box are still clipped exactly; the cost is
    ``O(V)`` per (catchment, candidate cell) pair, candidates found by bounding boxes.
    """
    cells = _boxes(cell_boxes, "cell_boxes")
    k = _unit(length_unit)
    out_c, out_r, out_a = [], [], []
    for j, p in enumerate(catchments):
        poly = np.asarray(p, dtype=np.float64)
        if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
            raise ValueError(f"catchment polygon {j} must be [V >= 3, 2] vertices, got "
                             f"{poly.shape}")
        if not np.isfinite(poly).all():
            raise ValueError(f"catchment polygon {j} has non-finite vertices")
        if np.array_equal(poly[0], poly[-1]):
            poly = poly[:-1]
        lo, hi = poly.min(0), poly.max(0)
        cand = _candidates(cells, np.array([lo[0], lo[1], hi[0], hi[1]]))
        areas = np.zeros(cand.size)
        for i, c in enumerate(cand):
            clipped = _clip_polygon_to_box(poly, cells[c])
            if clipped.shape[0] >= 3:
                areas[i] = _shoelace(clipped[None, :, 0], clipped[None, :, 1])[0]
        keep = areas > 0
        out_c.append(cand[keep])
        out_r.append(np.full(int(keep.sum()), j, dtype=np.int64))
        out_a.append(areas[keep] * k)
    return _concat(out_c, out_r, out_a)

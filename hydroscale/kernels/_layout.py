"""The path layout: a sparse set of (source row -> destination row) pairs, sorted both ways.

Built once per cluster set (vectorised: one stable sort by destination, one by source), then
reused by every forward and backward call of :func:`~hydroscale.kernels.path_conv`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._blocks import RowBlocks, row_blocks

__all__ = ["PathLayout"]

logger = logging.getLogger(__name__)


def _csr_ptr(keys_sorted: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row pointer ``[n_rows + 1]`` (int64) of already sorted row keys."""
    counts = torch.bincount(keys_sorted, minlength=n_rows)
    ptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=keys_sorted.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _check_order(order: Any, n: int, name: str) -> tuple[Any, Any] | None:
    if order is None:
        return None
    key, group = order
    out = []
    for what, a in (("key", key), ("group", group)):
        if a is not None:
            a = np.asarray(a)
            if a.shape != (n,):
                raise ValueError(f"{name} {what} must have one value per row ({n}), got shape "
                                 f"{a.shape}")
        out.append(a)
    return tuple(out)


@dataclass(frozen=True)
class PathLayout:
    """Paths ``p = (src[p] -> dst[p])`` grouped by destination (forward) and by source
    (backward).

    Build it with :meth:`from_pairs`; all index tensors are int64 on one device.

    Attributes
    ----------
    n_src, n_dst, n_paths : int
        Number of source rows ``S``, destination rows ``D`` and paths ``P``.
    src, dst : Tensor ``[P]``
        Source and destination row of each path, in the caller's path order (the row order
        of the weights ``w [P, K]``).
    dst_ptr : Tensor ``[D + 1]``
        CSR pointer: the paths ending in destination ``d`` are
        ``by_dst_path[dst_ptr[d]:dst_ptr[d + 1]]``.
    by_dst_path, by_dst_src : Tensor ``[P]``
        Path ids sorted by destination (stable), and their source rows.
    src_ptr : Tensor ``[S + 1]``
        CSR pointer of the transpose: the paths leaving source ``s`` are
        ``by_src_path[src_ptr[s]:src_ptr[s + 1]]``.
    by_src_path, by_src_dst : Tensor ``[P]``
        Path ids sorted by source (stable), and their destination rows.
    dst_order, src_order : ``(key, group)`` of numpy arrays ``[D]`` / ``[S]``, optional
        How rows are cut into blocks for the direct kernels (:meth:`blocks`): runs of rows in
        ``(group, key)`` order within one group.  Rows whose paths come from nearly the same
        sources should be neighbours in that order (the router passes the heavy path of each
        reach); None keeps the row order.
    """

    n_src: int
    n_dst: int
    n_paths: int
    src: torch.Tensor
    dst: torch.Tensor
    dst_ptr: torch.Tensor
    by_dst_path: torch.Tensor
    by_dst_src: torch.Tensor
    src_ptr: torch.Tensor
    by_src_path: torch.Tensor
    by_src_dst: torch.Tensor
    dst_order: tuple[Any, Any] | None = None
    src_order: tuple[Any, Any] | None = None
    _blocks: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_pairs(
        cls,
        src: torch.Tensor,
        dst: torch.Tensor,
        n_src: int,
        n_dst: int,
        device: torch.device | str | None = None,
        dst_order: tuple[Any, Any] | None = None,
        src_order: tuple[Any, Any] | None = None,
    ) -> PathLayout:
        """Build the layout from path end points.

        Parameters
        ----------
        src, dst : array-like of int, ``[P]``
            Source row (in ``0..n_src-1``) and destination row (in ``0..n_dst-1``) of each
            path.  Duplicated pairs are allowed (their kernels add up).
        n_src, n_dst : int
            Number of rows of the input ``x [B, S, T]`` and of the output ``y [B, D, T]``.
        device : torch device, optional
            Where the index tensors live (default: the device of ``src``).
        dst_order, src_order : ``(key, group)``, optional
            Block order of the destination / source rows (see the class attributes); either
            array may be None.

        Notes
        -----
        For speed, number the rows so that the sources of one destination are close to each
        other and to those of neighbouring destinations (e.g. clusters stored contiguously,
        reaches in DFS post-order within a cluster): consecutive programs then share source
        rows in the GPU caches.
        """
        src_t = torch.as_tensor(src)
        dst_t = torch.as_tensor(dst)
        if device is None:
            device = src_t.device
        if src_t.ndim != 1 or dst_t.ndim != 1 or src_t.shape != dst_t.shape:
            raise ValueError(
                f"src and dst must be 1-D of the same length, got {tuple(src_t.shape)} "
                f"and {tuple(dst_t.shape)}"
            )
        if src_t.is_floating_point() or dst_t.is_floating_point():
            raise TypeError(f"src and dst must be integer, got {src_t.dtype} and {dst_t.dtype}")
        n_src, n_dst = int(n_src), int(n_dst)
        if n_src < 0 or n_dst < 0:
            raise ValueError(f"n_src and n_dst must be >= 0, got {n_src} and {n_dst}")
        src_t = src_t.to(device=device, dtype=torch.int64)
        dst_t = dst_t.to(device=device, dtype=torch.int64)
        for name, idx, n in (("src", src_t, n_src), ("dst", dst_t, n_dst)):
            bad = (idx < 0) | (idx >= n)
            if bool(bad.any()):
                where = torch.nonzero(bad).flatten()[:5].tolist()
                vals = idx[bad][:5].tolist()
                raise ValueError(
                    f"{name} must lie in [0, {n}); paths {where} have {name} {vals}; "
                    f"pass n_{name} = the number of {'input' if name == 'src' else 'output'} rows"
                )
        n_paths = int(src_t.numel())
        by_dst_path = torch.sort(dst_t, stable=True).indices
        by_src_path = torch.sort(src_t, stable=True).indices
        layout = cls(
            n_src=n_src,
            n_dst=n_dst,
            n_paths=n_paths,
            src=src_t,
            dst=dst_t,
            dst_ptr=_csr_ptr(dst_t[by_dst_path], n_dst),
            by_dst_path=by_dst_path,
            by_dst_src=src_t[by_dst_path],
            src_ptr=_csr_ptr(src_t[by_src_path], n_src),
            by_src_path=by_src_path,
            by_src_dst=dst_t[by_src_path],
            dst_order=_check_order(dst_order, n_dst, "dst_order"),
            src_order=_check_order(src_order, n_src, "src_order"),
        )
        logger.debug("PathLayout: %d paths, %d sources, %d destinations", n_paths, n_src, n_dst)
        return layout

    @property
    def device(self) -> torch.device:
        return self.src.device

    def to(self, device: torch.device | str) -> PathLayout:
        """A copy of the layout with its index tensors on ``device``."""
        fields = {}
        for name, value in self.__dict__.items():
            if name == "_blocks":
                continue
            fields[name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return PathLayout(**fields)

    def blocks(self, side: str, c: int) -> RowBlocks:
        """Blocks of ``c`` destination (``side="dst"``: forward, kernel gradient) or source
        (``"src"``: input gradient; sources no path leaves get no slot) rows over the union
        of their paths' other ends; built once per (side, c) and cached."""
        if (side, c) not in self._blocks:
            if side == "dst":
                blk = row_blocks(self.dst, self.src, self.n_dst, self.n_src, c,
                                 *(self.dst_order or (None, None)))
            elif side == "src":
                blk = row_blocks(self.src, self.dst, self.n_src, self.n_dst, c,
                                 *(self.src_order or (None, None)), skip_empty=True)
            else:
                raise ValueError(f"side must be 'dst' or 'src', got {side!r}")
            logger.debug("PathLayout.blocks(%s, %d): %d blocks, fill %.2f", side, c,
                         blk.n_blocks, blk.fill)
            self._blocks[(side, c)] = blk
        return self._blocks[(side, c)]

    @property
    def max_paths_per_dst(self) -> int:
        return int((self.dst_ptr[1:] - self.dst_ptr[:-1]).max()) if self.n_dst else 0

    @property
    def max_paths_per_src(self) -> int:
        return int((self.src_ptr[1:] - self.src_ptr[:-1]).max()) if self.n_src else 0

    def __repr__(self) -> str:
        return (
            f"PathLayout(n_paths={self.n_paths}, n_src={self.n_src}, n_dst={self.n_dst}, "
            f"device={self.device})"
        )

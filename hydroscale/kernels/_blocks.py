"""Row blocks of a path layout: ``C`` output rows that share one loop over their inputs.

The direct (CUDA-core) kernels route a block of ``C`` destination rows at once: the block's
*entries* are the union of its rows' source rows, and every entry carries one path id per row
(``P``, a zero row of the padded taps, where that row has no path from that source).  Each
input tile is then loaded once for ``C`` rows instead of once per path.

Rows whose paths come from the same sources (the ``f`` polyphase channels of one exit) fill a
block completely.  Other rows fill it partly, so the order in which rows are cut into blocks
matters: the caller passes a sort key per row (e.g. the heavy path of a reach, then its level)
and blocks are consecutive runs of ``C`` rows of equal ``group`` in that order.

The transpose (``side="src"``: blocks of source rows over the union of their destinations) is
what the input gradient uses.  Its blocks leave out the source rows no path leaves (an input
that is a window onto a larger tensor, most of whose rows this layout never reads): their
gradient is zero, and a program per empty row would only write (or add) zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["RowBlocks", "row_blocks"]


@dataclass(frozen=True)
class RowBlocks:
    """Blocks of ``c`` rows of one side of a :class:`~._layout.PathLayout` (int64 tensors).

    Attributes
    ----------
    c : rows per block.
    n_blocks : number of blocks ``G``.
    rows : ``[G * c]`` row of each slot (``-1`` for padding slots).
    ptr : ``[G + 1]`` CSR pointer of the blocks' entries.
    other : ``[E]`` the row on the other side of each entry (the source row of a
        destination block, the destination row of a source block).
    path : ``[E * c]`` path id of (entry, slot), or ``n_paths`` where there is none.
    block : ``[E]`` block of each entry.
    fill : fraction of (entry, slot) cells that hold a path.
    heavy_first : ``[G]`` the blocks by decreasing number of entries (ties in block order):
        the order the kernels start them in, so that the longest blocks do not start last and
        leave the GPU waiting on a few programs at the end of a launch.
    complete : whether every row has a slot (False when rows without paths were left out).
    """

    c: int
    n_blocks: int
    rows: torch.Tensor
    ptr: torch.Tensor
    other: torch.Tensor
    path: torch.Tensor
    block: torch.Tensor
    fill: float
    heavy_first: torch.Tensor
    complete: bool = True
    _runs: dict = field(default_factory=dict, compare=False, repr=False)

    def entry_runs(self, n: int) -> torch.Tensor:
        """``[R]`` the first entry of each run of at most ``n`` consecutive entries of one
        block (a block of ``m`` entries has ``ceil(m / n)`` runs), built once per ``n``: the
        kernel gradient gives each run one program, which loads the block's output gradient
        once for its ``n`` entries."""
        if n not in self._runs:
            dev = self.ptr.device
            count = self.ptr[1:] - self.ptr[:-1]
            per_block = (count + n - 1) // n
            n_runs = int(per_block.sum())
            blk = torch.repeat_interleave(torch.arange(self.n_blocks, device=dev), per_block,
                                          output_size=n_runs)
            first_run = torch.cumsum(per_block, 0) - per_block
            j = torch.arange(n_runs, device=dev) - first_run[blk]
            self._runs[n] = self.ptr[blk] + n * j
        return self._runs[n]


def _slots(n_rows: int, c: int, key: np.ndarray | None, group: np.ndarray | None,
           used: np.ndarray | None = None):
    """Block and slot of every row (-1 for rows not ``used``): the used rows sorted by
    (group, key), cut into runs of ``c`` that never cross a group."""
    key = np.arange(n_rows) if key is None else np.asarray(key)
    group = np.zeros(n_rows, np.int64) if group is None else np.asarray(group)
    order = np.lexsort((np.arange(n_rows), key, group))
    blk = np.full(n_rows, -1, np.int64)
    slot = np.full(n_rows, -1, np.int64)
    if used is not None:
        order = order[used[order]]
    n_used = order.size
    g_sorted = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1] if n_used else np.zeros(0, np.int64)
    lens = np.diff(np.r_[starts, n_used]).astype(np.int64)
    n_blk = (lens + c - 1) // c
    first_blk = np.r_[0, np.cumsum(n_blk)[:-1]].astype(np.int64)
    within = np.arange(n_used) - np.repeat(starts, lens)
    blk_sorted = np.repeat(first_blk, lens) + within // c
    blk[order] = blk_sorted
    slot[order] = within % c
    return blk, slot, int(n_blk.sum())


def row_blocks(
    row_of_path: torch.Tensor,
    other_of_path: torch.Tensor,
    n_rows: int,
    n_other: int,
    c: int,
    key: np.ndarray | None = None,
    group: np.ndarray | None = None,
    skip_empty: bool = False,
) -> RowBlocks:
    """Cut ``n_rows`` rows into blocks of ``c`` and list each block's entries.

    Parameters
    ----------
    row_of_path, other_of_path : ``[P]`` the row of each path on the blocked side and on the
        other side (destination and source for destination blocks).
    n_rows, n_other : number of rows on each side.
    c : rows per block (a power of two).
    key, group : optional ``[n_rows]`` sort key and group of the rows (numpy); blocks are
        runs of ``c`` rows in ``(group, key)`` order within one group.
    skip_empty : leave out the rows that no path has (``complete`` is then False if there
        were any); else every row gets a slot.

    Repeated (row, other) pairs get separate entries (their kernels add up in the kernels).
    """
    dev = row_of_path.device
    n_paths = int(row_of_path.numel())
    used = None
    if skip_empty:
        used = np.bincount(row_of_path.cpu().numpy(), minlength=n_rows) > 0
        if used.all():
            used = None
    blk_np, slot_np, n_blk = _slots(n_rows, c, key, group, used)
    rows = np.full(n_blk * c, -1, np.int64)
    has = blk_np >= 0
    rows[blk_np[has] * c + slot_np[has]] = np.flatnonzero(has)
    blk = torch.as_tensor(blk_np, device=dev)
    slot = torch.as_tensor(slot_np, device=dev)
    if n_paths == 0:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        return RowBlocks(c, n_blk, torch.as_tensor(rows, device=dev),
                         torch.zeros(n_blk + 1, dtype=torch.int64, device=dev), z, z, z, 0.0,
                         torch.arange(n_blk, device=dev), used is None)
    # occurrence of each path among the paths with the same (row, other): repeated pairs
    # must not share an entry slot
    pair = row_of_path * max(n_other, 1) + other_of_path
    srt = torch.sort(pair, stable=True)
    new_run = torch.ones(n_paths, dtype=torch.bool, device=dev)
    new_run[1:] = srt.values[1:] != srt.values[:-1]
    idx = torch.arange(n_paths, device=dev)
    run_start = torch.cummax(torch.where(new_run, idx, 0), 0).values
    occ = torch.empty_like(idx)
    occ[srt.indices] = idx - run_start
    n_occ = int(occ.max()) + 1
    pb = blk[row_of_path]
    ekey = (pb * n_occ + occ) * max(n_other, 1) + other_of_path
    uniq, inv = torch.unique(ekey, return_inverse=True)
    n_ent = int(uniq.numel())
    other = uniq % max(n_other, 1)
    ent_blk = uniq // (max(n_other, 1) * n_occ)
    ptr = torch.zeros(n_blk + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(ent_blk, minlength=n_blk), 0, out=ptr[1:])
    path = torch.full((n_ent * c,), n_paths, dtype=torch.int64, device=dev)
    path[inv * c + slot[row_of_path]] = idx
    heavy_first = torch.sort(ptr[:-1] - ptr[1:], stable=True).indices  # most entries first
    return RowBlocks(c, n_blk, torch.as_tensor(rows, device=dev), ptr, other, path, ent_blk,
                     n_paths / (n_ent * c), heavy_first, used is None)

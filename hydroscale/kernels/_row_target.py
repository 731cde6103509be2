"""Rows of an output held in two tensors: where in-place kernels write, and where their
backward reads the output gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RowTarget"]


@dataclass(frozen=True)
class RowTarget:
    """Where :func:`~hydroscale.kernels.path_conv_into` (and ``path_conv_sum_into``) put their
    output rows: destination row ``d < split`` in ``first[:, first_row + d]``, the others in
    ``second[:, second_row + d - split]`` (both ``[B, R, T]``), written, or added to what is
    there when ``accumulate``.  The backward of ``path_conv_sum_into`` reads the output
    gradient from the same rows of the two tensors' gradients.

    ``steps = (a, b)`` writes only the output steps ``a .. b - 1`` and leaves the others as
    they are (a forward without gradients: a router's time pieces, each launched when the
    inputs it reads are written); None writes all."""

    first: torch.Tensor
    first_row: int
    second: torch.Tensor
    second_row: int
    split: int
    accumulate: bool = False
    steps: tuple[int, int] | None = None

    def window(self, n_t: int) -> tuple[int, int]:
        """``(a, b)``: the output steps written of a ``T = n_t`` output."""
        return (0, n_t) if self.steps is None else (int(self.steps[0]), int(self.steps[1]))

    @classmethod
    def whole(cls, y: torch.Tensor) -> RowTarget:
        """All rows of ``y [B, D, T]`` in one tensor."""
        return cls(y, 0, y, 0, y.shape[1])

    def parts(self, n_dst: int) -> tuple[tuple[torch.Tensor, int, int], ...]:
        """``((first, first_row, rows), (second, second_row, rows))`` for ``n_dst`` rows."""
        return ((self.first, self.first_row, self.split),
                (self.second, self.second_row, n_dst - self.split))

    def readable(self, n_dst: int, dtype: torch.dtype | None = None) -> RowTarget:
        """The same rows with each tensor in ``dtype`` and read along time with a stride of
        0 or 1, as the block kernels read them (through their strides: e.g. the expanded
        gradient of a sum is read where it is).  A tensor that is not is copied, cut to its
        rows when it holds one part of two."""
        def ready(t: torch.Tensor) -> bool:
            return dtype in (None, t.dtype) and (t.shape[2] <= 1 or t.stride(2) in (0, 1))

        if self.first is self.second:
            t = self.first if ready(self.first) else self._as(self.first, dtype)
            return RowTarget(t, self.first_row, t, self.second_row, self.split,
                             self.accumulate, self.steps)
        out = []
        for t, row0, rows in self.parts(n_dst):
            if not ready(t):
                t, row0 = self._as(t[:, row0 : row0 + rows], dtype), 0
            out += [t, row0]
        return RowTarget(*out, self.split, self.accumulate, self.steps)

    @staticmethod
    def _as(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        return (t if dtype is None else t.to(dtype)).contiguous()

    def joined(self, n_dst: int) -> torch.Tensor:
        """The ``n_dst`` rows as one ``[B, D, T]`` tensor."""
        return torch.cat([t[:, r0 : r0 + n] for t, r0, n in self.parts(n_dst)], dim=1)

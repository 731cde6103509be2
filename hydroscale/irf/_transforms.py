"""Bounded parameter transforms for calibration (unconstrained <-> within bounds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: hydroscale.irf loads without torch
    import torch

__all__ = ["bound_corners", "bounds_tensor", "from_bounded", "to_bounded"]


def bounds_tensor(spec, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(low [P], high [P]) of an :class:`IRFSpec`'s default bounds, in column order
    (``dtype`` default float32)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    lo = torch.tensor([spec.bounds[p][0] for p in spec.params], dtype=dtype, device=device)
    hi = torch.tensor([spec.bounds[p][1] for p in spec.params], dtype=dtype, device=device)
    return lo, hi


def to_bounded(raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``low + (high - low) * sigmoid(raw)``: any real -> (low, high)."""
    import torch

    return low + (high - low) * torch.sigmoid(raw)


def from_bounded(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_bounded`; values outside (low, high) are an error."""
    import torch

    z = (value - low) / (high - low)
    out = (z <= 0) | (z >= 1)
    if torch.any(out):
        lo, hi = torch.broadcast_tensors(low.to(value), high.to(value))
        lo, hi = lo.expand_as(value), hi.expand_as(value)
        where = torch.nonzero(out)
        shown = "; ".join(
            f"{float(value[tuple(i)]):.6g} at {tuple(i)} (open bounds {float(lo[tuple(i)]):.6g}"
            f"..{float(hi[tuple(i)]):.6g})" for i in where[:5].tolist())
        raise ValueError(f"{where.shape[0]} parameter value(s) outside their bounds: {shown}; "
                         "start from values strictly inside the bounds")
    return torch.logit(z)


def bound_corners(low: torch.Tensor, high: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The ``2^P`` corners of the box ``[low, high]`` as float64 ``[n, P]`` parameter sets
    (``low``/``high`` ``[P]`` or ``[n, P]``): corner ``c`` takes parameter ``p`` from ``high``
    where bit ``p`` of ``c`` is set.  The extremes a calibration may reach: routing decisions
    that must hold for every admissible parameter (the kernel window) are checked there."""
    import torch

    lo = torch.as_tensor(low, dtype=torch.float64).detach().cpu()
    hi = torch.as_tensor(high, dtype=torch.float64).detach().cpu()
    lo, hi = torch.broadcast_tensors(lo, hi)
    p = int(lo.shape[-1])
    lo, hi = lo.expand(n, p), hi.expand(n, p)
    return [torch.where(torch.tensor([(c >> j) & 1 == 1 for j in range(p)]), hi, lo)
            for c in range(1 << p)]

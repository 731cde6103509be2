"""Bounded parameter transforms for calibration (unconstrained <-> within bounds)."""

from __future__ import annotations

import torch

__all__ = ["to_bounded", "from_bounded", "bounds_tensor"]


def bounds_tensor(spec, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(low [P], high [P]) of an :class:`IRFSpec`'s default bounds, in column order."""
    lo = torch.tensor([spec.bounds[p][0] for p in spec.params], dtype=dtype, device=device)
    hi = torch.tensor([spec.bounds[p][1] for p in spec.params], dtype=dtype, device=device)
    return lo, hi


def to_bounded(raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``low + (high - low) * sigmoid(raw)``: any real -> (low, high)."""
    return low + (high - low) * torch.sigmoid(raw)


def from_bounded(value: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_bounded`; values outside (low, high) are an error."""
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

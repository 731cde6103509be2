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
    if torch.any((z <= 0) | (z >= 1)):
        bad = torch.nonzero((z <= 0) | (z >= 1))[:10].tolist()
        raise ValueError(f"parameter values outside their bounds at {bad}")
    return torch.logit(z)

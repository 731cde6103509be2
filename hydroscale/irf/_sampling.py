"""Moving between the routing step and its sub-steps (DESIGN §1, sub-step resolution)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: hydroscale.irf loads without torch
    import torch

__all__ = ["spread_to_substeps", "average_substeps", "substep_kernel_to_step"]


def spread_to_substeps(r: torch.Tensor, substeps: int) -> torch.Tensor:
    """Inflow rate ``[..., T]`` (averaged over each step) -> ``[..., T * f]``.

    The volume of each step is spread evenly over its f sub-steps, so the rate is repeated.
    """
    import torch

    return r if substeps == 1 else torch.repeat_interleave(r, substeps, dim=-1)


def average_substeps(q: torch.Tensor, substeps: int) -> torch.Tensor:
    """Outflow ``[..., T * f]`` at sub-steps -> ``[..., T]`` averaged over each routing step."""
    if substeps == 1:
        return q
    if q.shape[-1] % substeps:
        raise ValueError(f"time length {q.shape[-1]} is not a multiple of substeps={substeps}")
    return q.reshape(*q.shape[:-1], q.shape[-1] // substeps, substeps).mean(dim=-1)


def substep_kernel_to_step(h: torch.Tensor, substeps: int) -> torch.Tensor:
    """Kernel at sub-steps ``[..., L * f]`` -> the exact routing-step kernel ``[..., L]``.

    For a single path (no junction in between) with inflow spread evenly over the sub-steps of
    each step and outflow averaged per step,
    ``H[K] = (1/f) * sum_{a, b < f} h[K f + b - a]``; tap ``K`` needs ``h`` up to
    ``(K + 1) f - 1``, so ``L = len(h) // f`` taps are exact.
    """
    import torch

    f = substeps
    if f == 1:
        return h
    n_out = h.shape[-1] // f
    if n_out == 0:
        raise ValueError(f"kernel of {h.shape[-1]} sub-steps is shorter than one step (f={f})")
    c = torch.cumsum(h, dim=-1)
    c = torch.nn.functional.pad(c, (f, 0))
    g = c[..., f:] - c[..., :-f]  # g[m] = sum_{a<f} h[m - a]
    return g[..., : n_out * f].reshape(*h.shape[:-1], n_out, f).sum(dim=-1) / f

"""Path kernels extended by one reach whose response is a first-order recursive filter.

The path-kernel aggregation builds ``P_ij = h_i ⊛ … ⊛ h_j`` hop by hop,
``P_new = P_prev ⊛ h_dst`` truncated to ``L`` taps.  When ``h_dst`` is the impulse response of
``y[n] = b0 x[n] + b1 x[n - 1] + a1 y[n - 1]`` (Muskingum, a linear reservoir), that
convolution is the filter run over ``P_prev``: exact for the first ``L`` taps, no FFT, and
``O(L)`` work per path instead of ``O(L log L)`` on a padded transform.
"""

from __future__ import annotations

import torch

from ._path_conv import select_backend

try:  # Triton is optional: importing hydroscale.kernels must work without it
    import triton

    from . import _triton_recursive
except ImportError:  # pragma: no cover - depends on the environment
    _triton_recursive = None

__all__ = ["extend_recursive", "extend_recursive_reference"]

_ROWS = 8  # rows per Triton program


def _check(prev: torch.Tensor, coef: torch.Tensor, parent: torch.Tensor, slot: torch.Tensor):
    if prev.ndim != 2 or coef.ndim != 2 or coef.shape[1] != 3:
        raise ValueError(f"prev must be [n, L] and coef [R, 3], got {tuple(prev.shape)} and "
                         f"{tuple(coef.shape)}")
    if parent.shape != slot.shape or parent.ndim != 1:
        raise ValueError(f"parent and slot must be [m] alike, got {tuple(parent.shape)} and "
                         f"{tuple(slot.shape)}")
    if prev.dtype != coef.dtype:
        raise ValueError(f"prev and coef must share a dtype, got {prev.dtype} and {coef.dtype}")


def _chunk(length: int) -> int:
    return min(256, max(16, triton.next_power_of_2(length)))


class _ExtendRecursive(torch.autograd.Function):
    """Triton forward and backward; ``parent`` must not repeat (each row of ``prev`` is
    extended at most once), which lets the backward store ``grad_prev`` rows without atomics."""

    @staticmethod
    def forward(ctx, prev, coef, parent, slot):  # noqa: D102
        prev, coef = prev.contiguous(), coef.contiguous()
        n, length = parent.numel(), prev.shape[1]
        out = torch.empty(n, length, dtype=prev.dtype, device=prev.device)
        if n and length:
            _triton_recursive._recursive_fwd_kernel[(triton.cdiv(n, _ROWS),)](
                prev, coef, parent, slot, out, n, length, BR=_ROWS, CH=_chunk(length))
        ctx.save_for_backward(prev, out, coef, parent, slot)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        prev, out, coef, parent, slot = ctx.saved_tensors
        grad = grad.contiguous()
        n, length = parent.numel(), prev.shape[1]
        gprev = torch.zeros_like(prev)
        grow = torch.zeros(n, 3, dtype=coef.dtype, device=coef.device)
        if n and length:
            _triton_recursive._recursive_bwd_kernel[(triton.cdiv(n, _ROWS),)](
                prev, out, grad, coef, parent, slot, gprev, grow, n, length,
                BR=_ROWS, CH=_chunk(length))
        gcoef = torch.zeros_like(coef).index_add_(0, slot, grow)
        return gprev, gcoef, None, None


def extend_recursive_reference(
    prev: torch.Tensor, coef: torch.Tensor, parent: torch.Tensor, slot: torch.Tensor
) -> torch.Tensor:
    """:func:`extend_recursive` in plain torch ops, tap after tap (autograd through torch;
    the oracle of the tests)."""
    _check(prev, coef, parent, slot)
    x = prev.index_select(0, parent)
    b0, b1, a1 = coef.index_select(0, slot).unbind(-1)
    taps = []
    for t in range(prev.shape[1]):
        y = b0 * x[:, t]
        if t:
            y = y + b1 * x[:, t - 1] + a1 * taps[-1]
        taps.append(y)
    return torch.stack(taps, dim=-1) if taps else x


def extend_recursive(
    prev: torch.Tensor,
    coef: torch.Tensor,
    parent: torch.Tensor,
    slot: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Extend path kernels by one reach each: ``out[p] = (prev[parent[p]] ⊛ h_{slot[p]})[:L]``
    where ``h_r`` is the impulse response of ``y[n] = b0 x[n] + b1 x[n-1] + a1 y[n-1]`` with
    ``coef[r] = (b0, b1, a1)``.

    Parameters
    ----------
    prev : ``[n, L]`` kernels (sub-step taps), float32 or float64.
    coef : ``[R, 3]`` filter coefficients per reach row, same dtype; differentiable.
    parent : ``[m]`` int64 rows of ``prev`` to extend, each at most once.
    slot : ``[m]`` int64 rows of ``coef`` (the reach each path is extended by).
    backend : ``"triton"`` (CUDA, or the CPU interpreter), ``"torch"`` (the tap-by-tap
        reference), or None / ``"auto"`` (:func:`select_backend`).

    Returns
    -------
    ``[m, L]``, differentiable w.r.t. ``prev`` and ``coef``.
    """
    _check(prev, coef, parent, slot)
    if select_backend(prev.device, backend) == "triton" and _triton_recursive is not None:
        return _ExtendRecursive.apply(prev, coef, parent, slot)
    return extend_recursive_reference(prev, coef, parent, slot)

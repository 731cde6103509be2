"""The level-pool time loop as one Triton kernel: :func:`level_pool_steps` (forward only).

The physics (NWM's level-pool reservoir, RK3 steps, the mean outflow ``Q1/4 + 3 Q3/4`` that
closes the mass balance) is :func:`hydroscale.routing.route_level_pool`'s, which the tests
compare with and which calls this kernel on CUDA (its backward rematerialises the loop in
torch).  A torch loop launches ~20 small kernels per step: ~87,600 sub-steps of a decade routed
hourly are seconds of launches per call, the kernel's one launch walks them all in registers.
"""

from __future__ import annotations

import torch

try:  # Triton is optional: importing hydroscale.kernels must work without it
    import triton

    from . import _triton_level_pool
except ImportError:  # pragma: no cover - depends on the environment
    _triton_level_pool = None

__all__ = ["LEVEL_POOL_COLUMNS", "level_pool_steps"]

#: parameter columns the kernel reads, in order (hydroscale.routing.LEVEL_POOL_PARAMS)
LEVEL_POOL_COLUMNS = 9

_LAKES = 32  # lakes per program (float64 registers: 9 parameters + state per lake)


def level_pool_steps(inflow: torch.Tensor, params: torch.Tensor, dt: float,
                     elevation: torch.Tensor, out: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step level-pool lakes through all steps in one Triton kernel (no autograd).

    Parameters
    ----------
    inflow : ``[B, L, S]`` float64 mean inflow per step (m³/s); any strides (a time-major
        view, ``[B, S, L]`` transposed, reads coalesced).
    params : ``[L, 9]`` float64 level-pool parameters (columns of
        ``hydroscale.routing.LEVEL_POOL_PARAMS``, SI).
    dt : the step (s).
    elevation : ``[B, L]`` float64 elevation before the first step (m).
    out : optional ``[B, L, S]`` float64 tensor for the outflow (any strides), e.g. the
        transpose of a time-major buffer; default one shaped and strided like ``inflow``.

    Returns
    -------
    outflow ``[B, L, S]`` (m³/s, step means) and the elevation after the last step
    ``[B, L]`` (m), float64.
    """
    if _triton_level_pool is None:
        raise RuntimeError("level_pool_steps needs Triton (on CUDA, or TRITON_INTERPRET=1 "
                           "on CPU)")
    if inflow.ndim != 3 or inflow.dtype != torch.float64:
        raise ValueError(f"inflow must be [B, L, S] float64, got {tuple(inflow.shape)} "
                         f"{inflow.dtype}")
    b, n, s = inflow.shape
    if tuple(params.shape) != (n, LEVEL_POOL_COLUMNS) or params.dtype != torch.float64:
        raise ValueError(f"params must be [L={n}, {LEVEL_POOL_COLUMNS}] float64, got "
                         f"{tuple(params.shape)} {params.dtype}")
    if tuple(elevation.shape) != (b, n):
        raise ValueError(f"elevation must be [B={b}, L={n}], got {tuple(elevation.shape)}")
    p = params.contiguous()
    h0 = elevation.to(torch.float64).contiguous()
    q = torch.empty_like(inflow) if out is None else out
    if tuple(q.shape) != (b, n, s) or q.dtype != torch.float64:
        raise ValueError(f"out must be [B={b}, L={n}, S={s}] float64, got {tuple(q.shape)}")
    h = torch.empty_like(h0)
    rate = (float(dt) / p[:, 0]).contiguous()  # in float64 here: Triton passes floats as fp32
    if b and n:
        grid = (triton.cdiv(n, _LAKES), b)
        _triton_level_pool._level_pool_fwd_kernel[grid](
            inflow, p, rate, h0, q, h, n, s, *inflow.stride(), *q.stride(), BL=_LAKES)
    else:
        h.copy_(h0)
    return q, h

"""The level-pool time loop as one Triton kernel: :func:`level_pool_steps` and its adjoint
:func:`level_pool_adjoint`.

The physics (NWM's level-pool reservoir, RK3 steps, the mean outflow ``Q1/4 + 3 Q3/4`` that
closes the mass balance) is :func:`hydroscale.routing.route_level_pool`'s, which the tests
compare with and which calls these kernels on CUDA (forward, then the adjoint as its
backward).  A torch loop launches ~20 small kernels per step: ~87,600 sub-steps of a decade
routed hourly are seconds of launches per call; one launch walks them all in registers.
"""

from __future__ import annotations

import torch

try:  # Triton is optional: importing hydroscale.kernels must work without it
    import triton

    from . import _triton_level_pool
except ImportError:  # pragma: no cover - depends on the environment
    _triton_level_pool = None

__all__ = ["LEVEL_POOL_COLUMNS", "level_pool_adjoint", "level_pool_steps"]

#: parameter columns the kernel reads, in order (hydroscale.routing.LEVEL_POOL_PARAMS)
LEVEL_POOL_COLUMNS = 9

_LAKES = 32  # lakes per program (float64 registers: 9 parameters + state per lake)
# one warp per program: its 32 lanes are the 32 lakes (more warps would step copies of them);
# on an H200, 800 lakes x 8,760 steps took 0.40 us a step against 0.50 with 4 warps
_WARPS = 1


def level_pool_steps(inflow: torch.Tensor, params: torch.Tensor, dt: float,
                     elevation: torch.Tensor, out: torch.Tensor | None = None,
                     return_levels: bool = False) -> tuple[torch.Tensor, ...]:
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
    return_levels : also return the elevation before every step ``[B, L, S]`` (what
        :func:`level_pool_adjoint` reads), strided like the outflow.

    Returns
    -------
    outflow ``[B, L, S]`` (m³/s, step means) and the elevation after the last step
    ``[B, L]`` (m), float64 (and the levels).
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
    lev = torch.empty_like(q) if return_levels else q
    if b and n:
        grid = (triton.cdiv(n, _LAKES), b)
        _triton_level_pool._level_pool_fwd_kernel[grid](
            inflow, p, rate, h0, q, h, lev, n, s, *inflow.stride(), *q.stride(), BL=_LAKES,
            LEVELS=bool(return_levels), num_warps=_WARPS)
    else:
        h.copy_(h0)
    return (q, h, lev) if return_levels else (q, h)


def level_pool_adjoint(inflow: torch.Tensor, params: torch.Tensor, dt: float,
                       levels: torch.Tensor, grad_out: torch.Tensor | None,
                       grad_end: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The adjoint of :func:`level_pool_steps`, one Triton kernel walking the steps backwards
    from the stored levels (each step's RK3 stages recomputed in registers).

    Parameters
    ----------
    inflow, params, dt : as the forward.
    levels : ``[B, L, S]`` the elevation before every step (``return_levels``).
    grad_out : ``[B, L, S]`` the adjoint of the outflow (None: zero), float64.
    grad_end : ``[B, L]`` the adjoint of the end elevation (None: zero).

    Returns
    -------
    the adjoints of the inflow ``[B, L, S]`` (strided like it), of the parameters ``[L, 9]``
    (summed over the batch; the area's through ``dt / area``) and of the start elevation
    ``[B, L]``, float64.
    """
    if _triton_level_pool is None:
        raise RuntimeError("level_pool_adjoint needs Triton")
    b, n, s = inflow.shape
    p = params.contiguous()
    rate = (float(dt) / p[:, 0]).contiguous()
    gq = inflow.new_zeros(1, 1, 1).expand(b, n, s) if grad_out is None else grad_out
    gh = (inflow.new_zeros(b, n) if grad_end is None else grad_end.to(torch.float64)
          ).contiguous().clone()
    gx = torch.empty_like(inflow)
    gp = inflow.new_zeros(b, n, 10)
    if b and n and s:
        grid = (triton.cdiv(n, _LAKES), b)
        last = slice(s - 1, s)  # views at the last step: the kernel walks backwards
        _triton_level_pool._level_pool_bwd_kernel[grid](
            inflow[..., last], levels[..., last], gq[..., last], p, rate, gh, gx[..., last],
            gp, n, s, *inflow.stride(), *levels.stride(), *gq.stride(), BL=_LAKES,
            num_warps=_WARPS)
    gp = gp.sum(0)
    g_params = gp[:, :9].clone()
    g_params[:, 0] = -gp[:, 9] * rate / p[:, 0]  # rate = dt / area
    return gx, g_params, gh

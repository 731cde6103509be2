"""Triton kernel of :func:`~hydroscale.kernels.level_pool_steps` (forward).

Each program owns ``BL`` lakes of one batch row and walks all ``S`` steps in-kernel: the
level-pool state (water elevation, float64) stays in registers, the inflow of the next three
steps is loaded while a step is computed (its loads do not wait on the chain of sub-steps),
and each step's outflow is stored as it comes.  Inflow and outflow
are read and written through strides, so a time-major layout (``[B, S, L]``: the lakes of a
step contiguous) makes every step's loads and stores coalesced.  ``x ** 1.5`` is ``x sqrt(x)``
(no ``pow`` in float64).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["_level_pool_fwd_kernel"]


@triton.jit
def _pos_pow15(x):
    """``x ** 1.5`` where ``x > 0``, else 0."""
    xp = tl.where(x > 0, x, 0.0)
    return xp * tl.sqrt(xp)


@triton.jit
def _discharge(h, emax, we, cw, lw, ld, eo, co, ao):
    """Weir (head capped at ``emax``) + orifice + overtopping outflow (m3/s) at ``h``."""
    head = tl.minimum(h - we, emax - we)
    weir = cw * lw * _pos_pow15(head)
    g = 2.0 * 9.81 * (h - eo)
    orifice = co * ao * tl.sqrt(tl.where(g > 0, g, 0.0))
    over = cw * (lw * ld) * _pos_pow15(h - emax)
    return weir + orifice + over


@triton.jit
def _level_pool_fwd_kernel(
    x_ptr,  # [B, L, S] float64 inflow (m3/s, step means), strides sxb, sxl, sxs
    p_ptr,  # [L, 9] float64 parameters (LEVEL_POOL_PARAMS order), contiguous
    rate_ptr,  # [L] float64 dt / area (m per m3/s over one step; a float argument is fp32)
    h0_ptr,  # [B, L] float64 start elevation (m), contiguous
    q_ptr,  # [B, L, S] float64 outflow (m3/s, step means), strides sqb, sql, sqs
    h_ptr,  # [B, L] float64 end elevation (m), contiguous
    n_lakes, n_steps,
    sxb, sxl, sxs, sqb, sql, sqs,
    BL: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    lk = tl.program_id(0).to(tl.int64) * BL + tl.arange(0, BL)
    m = lk < n_lakes
    pp = p_ptr + lk * 9
    emax = tl.load(pp + 1, mask=m, other=0.0)
    we = tl.load(pp + 2, mask=m, other=0.0)
    cw = tl.load(pp + 3, mask=m, other=0.0)
    lw = tl.load(pp + 4, mask=m, other=0.0)
    ld = tl.load(pp + 5, mask=m, other=0.0)
    eo = tl.load(pp + 6, mask=m, other=0.0)
    co = tl.load(pp + 7, mask=m, other=0.0)
    ao = tl.load(pp + 8, mask=m, other=0.0)
    h = tl.load(h0_ptr + b * n_lakes + lk, mask=m, other=0.0)
    rate = tl.load(rate_ptr + lk, mask=m, other=0.0)
    xp = x_ptr + b * sxb + lk * sxl
    qp = q_ptr + b * sqb + lk * sql
    # the inflow of the next 3 steps is in flight while a step is computed: the loads
    # (independent of the level) do not wait on the chain of sub-steps
    i1 = tl.load(xp, mask=m & (n_steps > 0), other=0.0)
    i2 = tl.load(xp + sxs, mask=m & (n_steps > 1), other=0.0)
    i3 = tl.load(xp + 2 * sxs, mask=m & (n_steps > 2), other=0.0)
    xn = xp + 3 * sxs  # the inflow of step t + 3 (pointers step on: no int32 offsets)
    for t in range(0, n_steps):
        i = i1
        i1 = i2
        i2 = i3
        i3 = tl.load(xn, mask=m & (t + 3 < n_steps), other=0.0)
        xn += sxs
        q1 = _discharge(h, emax, we, cw, lw, ld, eo, co, ao)
        q2 = _discharge(h + (i - q1) * rate / 3.0, emax, we, cw, lw, ld, eo, co, ao)
        q3 = _discharge(h + (i - q2) * rate * (2.0 / 3.0), emax, we, cw, lw, ld, eo, co, ao)
        q = 0.25 * q1 + 0.75 * q3
        h = h + (i - q) * rate
        tl.store(qp, q, mask=m)
        qp += sqs
    tl.store(h_ptr + b * n_lakes + lk, h, mask=m)

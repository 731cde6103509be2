"""Triton kernel of :func:`~hydroscale.kernels.level_pool_steps` (forward).

Each program owns ``BL`` lakes of one batch row and walks all ``S`` steps in-kernel, in
blocks of ``U`` steps: the level-pool state (water elevation, float64) stays in registers;
the next block's inflow is loaded while the current block is stepped (its loads do not wait
on the chain of sub-steps), and a block's outflow is stored at once.  Inflow and outflow
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
    BL: tl.constexpr, U: tl.constexpr,
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
    cols = tl.arange(0, U)
    xp = x_ptr + b * sxb + lk[:, None] * sxl + cols[None, :] * sxs  # [BL, U]
    qp = q_ptr + b * sqb + lk[:, None] * sql + cols[None, :] * sqs
    # blocks of U steps, the next block's inflow loaded while this one is stepped: the
    # loads (independent of the level) do not wait on the chain of sub-steps
    nxt = tl.load(xp, mask=m[:, None] & (cols[None, :] < n_steps), other=0.0)
    for t0 in range(0, n_steps, U):
        cur = nxt
        t1 = t0 + U
        nxt = tl.load(xp + t1 * sxs, mask=m[:, None] & (t1 + cols[None, :] < n_steps),
                      other=0.0)
        qb = tl.zeros([BL, U], dtype=tl.float64)
        for j in tl.static_range(U):
            i = tl.sum(tl.where(cols[None, :] == j, cur, 0.0), axis=1)  # step t0 + j
            q1 = _discharge(h, emax, we, cw, lw, ld, eo, co, ao)
            q2 = _discharge(h + (i - q1) * rate / 3.0, emax, we, cw, lw, ld, eo, co,
                            ao)
            q3 = _discharge(h + (i - q2) * rate * (2.0 / 3.0), emax, we, cw, lw, ld,
                            eo, co, ao)
            q = 0.25 * q1 + 0.75 * q3
            h = tl.where(t0 + j < n_steps, h + (i - q) * rate, h)
            qb = tl.where(cols[None, :] == j, q[:, None], qb)
        tl.store(qp + t0 * sqs, qb, mask=m[:, None] & (t0 + cols[None, :] < n_steps))
    tl.store(h_ptr + b * n_lakes + lk, h, mask=m)

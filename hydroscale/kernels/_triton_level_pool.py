"""Triton kernel of :func:`~hydroscale.kernels.level_pool_steps` (forward).

Each program owns ``BL`` lakes of one batch row and walks all ``S`` steps in-kernel: the
level-pool state (water elevation, float64) stays in registers, the inflow of the next three
steps is loaded while a step is computed (its loads do not wait on the chain of sub-steps),
and each step's outflow is stored as it comes.  Inflow and outflow
are read and written through strides, so a time-major layout (``[B, S, L]``: the lakes of a
step contiguous) makes every step's loads and stores coalesced.

The loop is a chain of dependent float64 operations (three discharges per step), so its
length is the latency of that chain, and the step is written to keep the chain short:

* each outflow term ``a sqrt(x)`` (:func:`_scaled_root`: the weir's ``C_w L_w head^1.5`` is
  ``(C_w L_w head) sqrt(head)``) is float32's reciprocal square root refined by two coupled
  Goldschmidt steps in float64, fused multiply-adds with the factor ``a`` applied alongside
  (no ``pow``, no division, no branch: the correctly rounded float64 ``sqrt`` takes a
  slow-path branch);
* a stage's level ``h + (i - Q) c`` is ``(h + i c) - c Q``, the first part computed beside
  the discharge, so a stage adds one operation to the chain;
* constant products (``C_w L_w``, ``C_o A_o``, ...) are formed once per lake.

On an H200 (800 lakes x 8,760 steps, one warp per program) a step takes 0.40-0.42 us.  What
bounds it, from variants of the same loop in one run: with a linear outflow (no roots) 0.12
us; with the roots in float32 0.43 us (so float64 arithmetic is not the cost; the root's
seed, conversions and dependent operations are); with float64 ``sqrt`` 1.07 us; with PTX's
float64 ``rsqrt.approx`` as the seed (relative error 9e-7 against float32's 1.5e-7) 0.40
against 0.42 us, not worth an inline-assembly path that the CPU interpreter cannot run; with
four warps per program 0.50 us; without the inflow loads 0.45 us of 0.50.  The shorter
chain above took the same time as the form before it (one Newton step for the reciprocal,
one for the root, each stage ``h + (i - Q) c``): 86.0 against 86.7 ms of loops per chunk
of the 3M-reach lake pass, both with four warps.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["_level_pool_bwd_kernel", "_level_pool_fwd_kernel"]


@triton.jit
def _sqrt_rsqrt(x):
    """``(sqrt(x), 1 / sqrt(x))`` of float64 ``x``, both 0 where ``x <= 1e-36``, to about an
    ulp: float32's reciprocal square root (relative error ~1e-7), one Newton step for it in
    float64 (~1e-14), then one for the root (a few ulp).  The cut at 1e-36 keeps the argument
    a float32 normal (from 1.2e-38); its root, 1e-18 m^0.5, is no discharge to speak of."""
    pos = x > 1e-36
    xs = tl.where(pos, x, 1.0)
    y = tl.math.rsqrt(xs.to(tl.float32)).to(tl.float64)
    y = y * (1.5 - 0.5 * (xs * y) * y)
    s = xs * y
    s = s + (xs - s * s) * (0.5 * y)
    return tl.where(pos, s, 0.0), tl.where(pos, y, 0.0)


@triton.jit
def _scaled_root(x, a):
    """``a sqrt(x)`` where ``x > 0``, else 0, of float64 ``x`` and ``a``, to a few ulp.

    The seed ``y ~ 1 / sqrt(x)`` is float32's (relative error e ~ 1e-7); then two coupled
    Goldschmidt steps refine ``s ~ sqrt(x)`` and ``u ~ 1 / (2 sqrt(x))`` together (``r = 1/2 -
    s u``, ``s += s r``, ``u += u r``: the error goes e -> e^2 -> e^4), the last step already
    scaled by ``a``: seven dependent operations after the seed.  Arguments up to 1e-36 are
    taken as 1e-36 (a float32 normal): their ``a sqrt(x)`` is at most ``a`` 1e-18."""
    xc = tl.maximum(x, 1e-36)
    y = tl.math.rsqrt(xc.to(tl.float32)).to(tl.float64)
    s = xc * y
    u = 0.5 * y
    r = 0.5 - s * u
    s = s + s * r
    u = u + u * r
    r = 0.5 - s * u
    t = tl.where(x > 0, a, 0.0) * s
    return t + t * r


@triton.jit
def _discharge(h, emax, we, cwlw, cwlwld, eo, coao):
    """Weir (head capped at ``emax``) + orifice + overtopping outflow (m3/s) at ``h``, from
    the lake's products ``cwlw = C_w L_w``, ``cwlwld = C_w L_w L_d``, ``coao = C_o A_o``."""
    head = tl.minimum(h, emax) - we
    over = h - emax
    orifice = _scaled_root(2.0 * 9.81 * (h - eo), coao)
    return (_scaled_root(head, cwlw * head) + orifice) + _scaled_root(over, cwlwld * over)


@triton.jit
def _rk3_step(h, i, rate, emax, we, cwlw, cwlwld, eo, coao):
    """One step of NWM's third-order Runge-Kutta from level ``h`` with mean inflow ``i``
    (``rate = dt / area``): ``(h2, h3, q1, q2, q3, q, h_next)``, the stage levels and
    discharges, the step's mean outflow ``q = q1 / 4 + 3 q3 / 4`` and the level after it,
    ``h + (i - q) rate`` (each stage level one fused multiply-add after its discharge)."""
    r3 = rate * (1.0 / 3.0)
    r23 = rate * (2.0 / 3.0)
    q1 = _discharge(h, emax, we, cwlw, cwlwld, eo, coao)
    h2 = (h + i * r3) - q1 * r3
    q2 = _discharge(h2, emax, we, cwlw, cwlwld, eo, coao)
    h3 = (h + i * r23) - q2 * r23
    q3 = _discharge(h3, emax, we, cwlw, cwlwld, eo, coao)
    q = 0.25 * q1 + 0.75 * q3
    h_next = (h + (i - 0.25 * q1) * rate) - q3 * (0.75 * rate)
    return h2, h3, q1, q2, q3, q, h_next


@triton.jit
def _load_params(p_ptr, lk, m):
    """The outlet parameters of lakes ``lk`` (``m``: the real ones) from ``[L, 9]`` rows in
    LEVEL_POOL_PARAMS order (column 0, the area, enters as ``rate``)."""
    pp = p_ptr + lk * 9
    return (tl.load(pp + 1, mask=m, other=0.0), tl.load(pp + 2, mask=m, other=0.0),
            tl.load(pp + 3, mask=m, other=0.0), tl.load(pp + 4, mask=m, other=0.0),
            tl.load(pp + 5, mask=m, other=0.0), tl.load(pp + 6, mask=m, other=0.0),
            tl.load(pp + 7, mask=m, other=0.0), tl.load(pp + 8, mask=m, other=0.0))


@triton.jit
def _level_pool_fwd_kernel(
    x_ptr,  # [B, L, S] float64 inflow (m3/s, step means), strides sxb, sxl, sxs
    p_ptr,  # [L, 9] float64 parameters (LEVEL_POOL_PARAMS order), contiguous
    rate_ptr,  # [L] float64 dt / area (m per m3/s over one step; a float argument is fp32)
    h0_ptr,  # [B, L] float64 start elevation (m), contiguous
    q_ptr,  # [B, L, S] float64 outflow (m3/s, step means), strides sqb, sql, sqs
    h_ptr,  # [B, L] float64 end elevation (m), contiguous
    lev_ptr,  # [B, L, S] float64 elevation before each step (m), strides of q (LEVELS only)
    n_lakes, n_steps,
    sxb, sxl, sxs, sqb, sql, sqs,
    BL: tl.constexpr, LEVELS: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    lk = tl.program_id(0).to(tl.int64) * BL + tl.arange(0, BL)
    m = lk < n_lakes
    emax, we, cw, lw, ld, eo, co, ao = _load_params(p_ptr, lk, m)
    cwlw = cw * lw
    cwlwld = cwlw * ld
    coao = co * ao
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
    lp = lev_ptr + b * sqb + lk * sql
    for t in range(0, n_steps):
        if LEVELS:
            tl.store(lp, h, mask=m)
            lp += sqs
        i = i1
        i1 = i2
        i2 = i3
        i3 = tl.load(xn, mask=m & (t + 3 < n_steps), other=0.0)
        xn += sxs
        _, _, _, _, _, q, h = _rk3_step(h, i, rate, emax, we, cwlw, cwlwld, eo, coao)
        tl.store(qp, q, mask=m)
        qp += sqs
    tl.store(h_ptr + b * n_lakes + lk, h, mask=m)


@triton.jit
def _pos_pow15_d(x):
    """``(x ** 1.5, 1.5 x ** 0.5)`` where ``x > 0``, else ``(0, 0)``."""
    r, _ = _sqrt_rsqrt(x)
    return tl.where(x > 0, x, 0.0) * r, 1.5 * r


@triton.jit
def _discharge_adjoint(g, h, emax, we, cw, lw, ld, eo, co, ao):
    """For an adjoint ``g`` of ``Q(h)``: ``(g dQ/dh, g dQ/d(emax, we, cw, lw, ld, eo, co,
    ao))``, torch's conventions at the kinks (a tie of the weir head's ``min`` splits its
    gradient in halves; ``x ** p`` at ``x <= 0`` has none)."""
    a = h - we
    c = emax - we
    below = a < c
    tie = a == c
    du_dh = tl.where(below, 1.0, tl.where(tie, 0.5, 0.0))
    du_dmax = tl.where(below, 0.0, tl.where(tie, 0.5, 1.0))
    pu, dpu = _pos_pow15_d(tl.minimum(a, c))
    pw, dpw = _pos_pow15_d(h - emax)
    v = 2.0 * 9.81 * (h - eo)
    sv, rv = _sqrt_rsqrt(v)
    dsv = (0.5 * 2.0 * 9.81) * rv
    weir_u = cw * lw * dpu
    over_w = cw * lw * ld * dpw
    gh = g * (weir_u * du_dh + co * ao * dsv + over_w)
    g_emax = g * (weir_u * du_dmax - over_w)
    g_we = -g * weir_u
    g_cw = g * (lw * pu + lw * ld * pw)
    g_lw = g * (cw * pu + cw * ld * pw)
    g_ld = g * (cw * lw * pw)
    g_eo = -g * co * ao * dsv
    g_co = g * ao * sv
    g_ao = g * co * sv
    return gh, g_emax, g_we, g_cw, g_lw, g_ld, g_eo, g_co, g_ao


@triton.jit
def _level_pool_bwd_kernel(
    x_ptr,  # [B, L, S] float64 inflow at its LAST step, strides sxb, sxl, sxs
    lev_ptr,  # [B, L, S] float64 elevation before each step, at its last step, strides s?q
    gq_ptr,  # [B, L, S] float64 adjoint of the outflow, at its last step, strides sg?
    p_ptr,  # [L, 9] float64 parameters, contiguous
    rate_ptr,  # [L] float64 dt / area
    gh_ptr,  # [B, L] float64 in: adjoint of the end elevation; out: of the start elevation
    gx_ptr,  # [B, L, S] float64 adjoint of the inflow, at its last step, strides of x
    gp_ptr,  # [B, L, 10] float64 out: adjoints of the 9 parameters and of the rate
    n_lakes, n_steps,
    sxb, sxl, sxs, sqb, sql, sqs, sgb, sgl, sgs,
    BL: tl.constexpr,
):
    b = tl.program_id(1).to(tl.int64)
    lk = tl.program_id(0).to(tl.int64) * BL + tl.arange(0, BL)
    m = lk < n_lakes
    emax, we, cw, lw, ld, eo, co, ao = _load_params(p_ptr, lk, m)
    cwlw = cw * lw
    cwlwld = cwlw * ld
    coao = co * ao
    rate = tl.load(rate_ptr + lk, mask=m, other=0.0)
    rate3 = rate * (1.0 / 3.0)
    rate23 = rate * (2.0 / 3.0)
    gh = tl.load(gh_ptr + b * n_lakes + lk, mask=m, other=0.0)
    zero = gh * 0.0
    a_emax = zero
    a_we = zero
    a_cw = zero
    a_lw = zero
    a_ld = zero
    a_eo = zero
    a_co = zero
    a_ao = zero
    a_rate = zero
    # the pointers start at the last step (the launcher's views) and step backwards
    xp = x_ptr + b * sxb + lk * sxl
    hp = lev_ptr + b * sqb + lk * sql
    gp = gq_ptr + b * sgb + lk * sgl
    gxp = gx_ptr + b * sxb + lk * sxl
    for _ in range(0, n_steps):  # steps S - 1 .. 0
        i = tl.load(xp, mask=m, other=0.0)
        h = tl.load(hp, mask=m, other=0.0)
        g_out = tl.load(gp, mask=m, other=0.0)
        # the forward step again (its stage values)
        h2, h3, q1, q2, q3, q, _ = _rk3_step(h, i, rate, emax, we, cwlw, cwlwld, eo, coao)
        # h' = h + (i - q) rate; the output is q
        gq = g_out - gh * rate
        gi = gh * rate
        a_rate += gh * (i - q)
        gq1 = 0.25 * gq
        gq3 = 0.75 * gq
        gh3, d0, d1, d2, d3, d4, d5, d6, d7 = _discharge_adjoint(gq3, h3, emax, we, cw, lw,
                                                                  ld, eo, co, ao)
        a_emax += d0
        a_we += d1
        a_cw += d2
        a_lw += d3
        a_ld += d4
        a_eo += d5
        a_co += d6
        a_ao += d7
        # h3 = h + (i - q2) rate 2/3
        gi += gh3 * rate23
        gq2 = -gh3 * rate23
        a_rate += gh3 * (i - q2) * (2.0 / 3.0)
        gh2, d0, d1, d2, d3, d4, d5, d6, d7 = _discharge_adjoint(gq2, h2, emax, we, cw, lw,
                                                                  ld, eo, co, ao)
        a_emax += d0
        a_we += d1
        a_cw += d2
        a_lw += d3
        a_ld += d4
        a_eo += d5
        a_co += d6
        a_ao += d7
        # h2 = h + (i - q1) rate / 3
        gi += gh2 * rate3
        gq1 += -gh2 * rate3
        a_rate += gh2 * (i - q1) * (1.0 / 3.0)
        gh1, d0, d1, d2, d3, d4, d5, d6, d7 = _discharge_adjoint(gq1, h, emax, we, cw, lw,
                                                                  ld, eo, co, ao)
        a_emax += d0
        a_we += d1
        a_cw += d2
        a_lw += d3
        a_ld += d4
        a_eo += d5
        a_co += d6
        a_ao += d7
        gh = gh + gh3 + gh2 + gh1
        tl.store(gxp, gi, mask=m)
        xp -= sxs
        hp -= sqs
        gp -= sgs
        gxp -= sxs
    tl.store(gh_ptr + b * n_lakes + lk, gh, mask=m)
    go = gp_ptr + (b * n_lakes + lk) * 10
    tl.store(go + 1, a_emax, mask=m)
    tl.store(go + 2, a_we, mask=m)
    tl.store(go + 3, a_cw, mask=m)
    tl.store(go + 4, a_lw, mask=m)
    tl.store(go + 5, a_ld, mask=m)
    tl.store(go + 6, a_eo, mask=m)
    tl.store(go + 7, a_co, mask=m)
    tl.store(go + 8, a_ao, mask=m)
    tl.store(go + 9, a_rate, mask=m)

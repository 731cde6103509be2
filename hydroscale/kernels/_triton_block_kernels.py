"""Direct (CUDA-core) Triton kernels of the path convolution over row blocks.

A program owns one block of ``C`` rows (see :mod:`._blocks`) and one tile of ``BT`` steps.
For every entry of the block (one row on the other side) it loads the ``K`` shifted input
tiles once and adds ``w[path(entry, slot), k] · x[t ∓ k]`` into all ``C`` rows (the taps of
the ``C`` rows are packed per call as ``[E, K, C]``: one contiguous vector per entry and tap,
zeros where a row has no path from that entry): ``K`` fused
multiply-adds per output and path, in float32 (or float64), no Toeplitz padding and no
split-precision tensor-core passes.  The taps are unrolled, so the kernels serve windows of
at most ``BLOCKS_LIMIT_TAPS`` (64) taps; short windows (``K <= 32``) are where they win, and
the Toeplitz tensor-core kernels of :mod:`._triton_kernels` remain for long ones.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _block_accumulate(
    acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end, b, R_in, T, t, cc,
    in2_ptr, R_in2, in_row0, in2_row0, in_split,
    K: tl.constexpr, C: tl.constexpr, REVERSE: tl.constexpr, MASKED: tl.constexpr,
    HAS_IHIST: tl.constexpr, PREFETCH: tl.constexpr, IN2: tl.constexpr,
):
    """``acc [C, BT] += Σ_entries Σ_k wd[e, k, :] · in[other, t ∓ k]`` (masks only if MASKED).

    With PREFETCH the next entry's input row is read one iteration ahead, off the chain of
    dependent loads (row id, then inputs).  With IN2 input row ``r`` is row ``in_row0 + r`` of
    ``in`` if ``r < in_split``, else row ``in2_row0 + r - in_split`` of ``in2`` (an output
    gradient in two parts: no copy to join them)."""
    if PREFETCH:
        r_next = tl.load(other_ptr + start, mask=start < end, other=0)
    for e in range(start, end):
        if PREFETCH:
            r = r_next
            r_next = tl.load(other_ptr + tl.minimum(e + 1, end - 1))
        else:
            r = tl.load(other_ptr + e)
        if IN2:
            xp = tl.where(r < in_split, in_ptr + (b * R_in + in_row0 + r) * T,
                          in2_ptr + (b * R_in2 + in2_row0 - in_split + r) * T) + t
        else:
            xp = in_ptr + (b * R_in + r) * T + t
        wp = wd_ptr + e * (K * C) + cc
        for k in tl.static_range(K):
            if REVERSE:
                tt = t + k
            else:
                tt = t - k
            if MASKED:
                xv = tl.load(xp + (tt - t), mask=(tt >= 0) & (tt < T), other=0.0)
                if HAS_IHIST:
                    hp = ihist_ptr + (b * R_in + r) * (K - 1) + K - 1
                    xv += tl.load(hp + tt, mask=(tt < 0) & (tt >= 1 - K), other=0.0)
            else:
                xv = tl.load(xp + (tt - t))
            wk = tl.load(wp + k * C)  # the C rows' tap k: contiguous, no path-id lookup
            acc += wk.to(acc.dtype)[:, None] * xv.to(acc.dtype)[None, :]
    return acc


@triton.jit
def _block_conv_kernel(
    in_ptr,  # [B, R_in, T] input rows (x forward; grad_y for grad_x)
    ihist_ptr,  # [B, R_in, K - 1] input history (read if HAS_IHIST)
    wd_ptr,  # [E, K, C] taps of every (entry, slot) cell, zero where no path (packed per call)
    rows_ptr,  # [G * C] output row of each slot (-1: padding)
    ptr_ptr,  # [G + 1] CSR pointer of the blocks' entries
    other_ptr,  # [E] input row of each entry
    order_ptr,  # [G] the block each group of n_tiles programs routes (heaviest first)
    out_ptr,  # [B, R_out, T] output rows
    ohist_ptr,  # [B, R_out, K - 1] output at times -(K-1)..-1 (written if HAS_OHIST)
    out2_ptr,  # [B, R_out2, T] output of the rows >= split (out itself for a single output)
    T,
    R_in,
    R_out,
    n_tiles,
    t_origin,
    R_out2,
    out_row0,
    out2_row0,
    split,
    in2_ptr,  # [B, R_in2, T] second part of the input rows (read if IN2)
    R_in2,
    in_row0,
    in2_row0,
    in_split,
    K: tl.constexpr,
    BT: tl.constexpr,
    C: tl.constexpr,
    REVERSE: tl.constexpr,
    HAS_IHIST: tl.constexpr,
    HAS_OHIST: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    PREFETCH: tl.constexpr,
    ACCUMULATE: tl.constexpr = False,
    IN2: tl.constexpr = False,
    xb_ptr=None,  # [B, R_inb, T] input of a second term (read if TERMB)
    ihistb_ptr=None,  # [B, R_inb, K - 1] its history (read if HAS_IHISTB)
    wdb_ptr=None,  # [Eb, K, C] its packed taps
    ptrb_ptr=None,  # [G + 1] CSR pointer of its entries (same blocks of output rows)
    otherb_ptr=None,  # [Eb] its input row of each entry
    R_inb=0,
    TERMB: tl.constexpr = False,
    HAS_IHISTB: tl.constexpr = False,
):
    """Forward (causal, ``REVERSE=False``) or input gradient (anti-causal) of one block.

    Output row ``d`` goes to ``out[b, out_row0 + d]`` if ``d < split``, else to
    ``out2[b, out2_row0 + d - split]``, added to what is there if ``ACCUMULATE``.  With IN2
    the input rows are read from two tensors the same way (see ``_block_accumulate``).  With
    TERMB (forward) a second term, whose layout cuts the output rows into the same blocks,
    adds its entries into the same tile before the one store."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    blk = tl.load(order_ptr + pid // n_tiles)
    t0 = t_origin + (pid % n_tiles) * BT
    t = t0 + tl.arange(0, BT)
    cc = tl.arange(0, C)
    rows = tl.load(rows_ptr + blk * C + cc)
    start = tl.load(ptr_ptr + blk)
    end = tl.load(ptr_ptr + blk + 1)
    acc = tl.zeros([C, BT], dtype=ACC_DTYPE)
    if REVERSE:
        interior = (t0 >= 0) & (t0 + BT + K - 1 <= T)
    else:
        interior = (t0 >= K - 1) & (t0 + BT <= T)
    if interior:
        acc = _block_accumulate(acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end,
                                b, R_in, T, t, cc, in2_ptr, R_in2, in_row0, in2_row0, in_split,
                                K, C, REVERSE, False, HAS_IHIST, PREFETCH, IN2)
    else:
        acc = _block_accumulate(acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end,
                                b, R_in, T, t, cc, in2_ptr, R_in2, in_row0, in2_row0, in_split,
                                K, C, REVERSE, True, HAS_IHIST, PREFETCH, IN2)
    if TERMB:
        startb = tl.load(ptrb_ptr + blk)
        endb = tl.load(ptrb_ptr + blk + 1)
        if interior:
            acc = _block_accumulate(acc, xb_ptr, ihistb_ptr, wdb_ptr, otherb_ptr, startb, endb,
                                    b, R_inb, T, t, cc, xb_ptr, R_inb, 0, 0, R_inb,
                                    K, C, REVERSE, False, HAS_IHISTB, PREFETCH, False)
        else:
            acc = _block_accumulate(acc, xb_ptr, ihistb_ptr, wdb_ptr, otherb_ptr, startb, endb,
                                    b, R_inb, T, t, cc, xb_ptr, R_inb, 0, 0, R_inb,
                                    K, C, REVERSE, True, HAS_IHISTB, PREFETCH, False)
    ok = (rows >= 0)[:, None]
    # one pointer per row: rows < split into out (from row out_row0), the others into out2
    first = rows < split
    row_ptr = tl.where(first, out_ptr + (b * R_out + out_row0 + rows) * T,
                       out2_ptr + (b * R_out2 + out2_row0 - split + rows) * T)
    optrs = row_ptr[:, None] + t[None, :]
    omask = ok & ((t >= 0) & (t < T))[None, :]
    if ACCUMULATE:
        acc += tl.load(optrs, mask=omask, other=0.0).to(ACC_DTYPE)
    tl.store(optrs, acc, mask=omask)
    if HAS_OHIST:
        hbase = (b * R_out + rows[:, None]) * (K - 1) + K - 1
        tl.store(ohist_ptr + hbase + t[None, :], acc,
                 mask=ok & ((t < 0) & (t >= 1 - K))[None, :])


@triton.jit
def _pack_taps_kernel(
    w_ptr,  # [P, K] path kernels
    path_ptr,  # [E * C] path of (entry, slot), n_paths where none
    out_ptr,  # [E, K, C] taps of every (entry, slot) cell
    n_out,  # E * K * C
    n_paths,
    K: tl.constexpr,
    C: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``out[e, k, c] = w[path(e, c), k]``, zero where the cell has no path: one pass."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n_out
    c = i % C
    ek = i // C
    p = tl.load(path_ptr + (ek // K) * C + c, mask=ok, other=n_paths)
    v = tl.load(w_ptr + p * K + ek % K, mask=ok & (p < n_paths), other=0.0)
    tl.store(out_ptr + i, v, mask=ok)


@triton.jit
def _grad_w_tap(acc, g, x_ptr, hist_ptr, xbase, hbase, t, T, k: tl.constexpr,
                K: tl.constexpr, HAS_HIST: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """``acc [C, BT] += g [C, BT] · xx[t - k]`` (taps ``k >= K`` leave ``acc`` as it is)."""
    if k < K:
        tt = t - k
        xv = tl.load(x_ptr + xbase + tt, mask=(tt >= 0) & (t < T), other=0.0).to(ACC_DTYPE)
        if HAS_HIST:
            xv += tl.load(hist_ptr + hbase + tt, mask=(tt < 0) & (tt >= 1 - K),
                          other=0.0).to(ACC_DTYPE)
        acc += g * xv[None, :]
    return acc


@triton.jit
def _grad_w_store(acc, gw_ptr, pj, ok, k: tl.constexpr, K: tl.constexpr):
    if k < K:
        tl.store(gw_ptr + pj * K + k, tl.sum(acc, axis=1), mask=ok)


@triton.jit
def _grad_w_tap_group(x_ptr, hist_ptr, gy_ptr, gw_ptr, s, rows, pj, row_ok, ok, T, S, D, B,
                      gy2_ptr, D2, gy_row0, gy2_row0, gy_split, K0: tl.constexpr,
                      K: tl.constexpr, BT: tl.constexpr, C: tl.constexpr,
                      HAS_HIST: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Taps ``K0 .. K0 + 7`` of one entry: one ``[C, BT]`` accumulator per tap over all of
    time, summed over time once at the end."""
    tb = tl.arange(0, BT)
    a0 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a1 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a2 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a3 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a4 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a5 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a6 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    a7 = tl.zeros([C, BT], dtype=ACC_DTYPE)
    for bb in range(B):
        b = s * 0 + bb  # int64 offsets
        xbase = (b * S + s) * T
        hbase = (b * S + s) * (K - 1) + K - 1
        gptr = tl.where(rows < gy_split, gy_ptr + (b * D + gy_row0 + rows) * T,
                        gy2_ptr + (b * D2 + gy2_row0 - gy_split + rows) * T)
        for t0 in range(0, T, BT):
            t = t0 + tb
            g = tl.load(gptr[:, None] + t[None, :],
                        mask=row_ok[:, None] & (t < T)[None, :], other=0.0).to(ACC_DTYPE)
            a0 = _grad_w_tap(a0, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0, K, HAS_HIST, ACC_DTYPE)
            a1 = _grad_w_tap(a1, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 1, K, HAS_HIST,
                             ACC_DTYPE)
            a2 = _grad_w_tap(a2, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 2, K, HAS_HIST,
                             ACC_DTYPE)
            a3 = _grad_w_tap(a3, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 3, K, HAS_HIST,
                             ACC_DTYPE)
            a4 = _grad_w_tap(a4, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 4, K, HAS_HIST,
                             ACC_DTYPE)
            a5 = _grad_w_tap(a5, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 5, K, HAS_HIST,
                             ACC_DTYPE)
            a6 = _grad_w_tap(a6, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 6, K, HAS_HIST,
                             ACC_DTYPE)
            a7 = _grad_w_tap(a7, g, x_ptr, hist_ptr, xbase, hbase, t, T, K0 + 7, K, HAS_HIST,
                             ACC_DTYPE)
    _grad_w_store(a0, gw_ptr, pj, ok, K0, K)
    _grad_w_store(a1, gw_ptr, pj, ok, K0 + 1, K)
    _grad_w_store(a2, gw_ptr, pj, ok, K0 + 2, K)
    _grad_w_store(a3, gw_ptr, pj, ok, K0 + 3, K)
    _grad_w_store(a4, gw_ptr, pj, ok, K0 + 4, K)
    _grad_w_store(a5, gw_ptr, pj, ok, K0 + 5, K)
    _grad_w_store(a6, gw_ptr, pj, ok, K0 + 6, K)
    _grad_w_store(a7, gw_ptr, pj, ok, K0 + 7, K)


@triton.jit
def _block_grad_w_kernel(
    x_ptr,  # [B, S, T] input rows
    hist_ptr,  # [B, S, K - 1] input history (read if HAS_HIST)
    gy_ptr,  # [B, D, T] gradient of the output rows
    rows_ptr,  # [G * C] destination row of each slot (-1: padding)
    ent_blk_ptr,  # [E] block of each entry
    other_ptr,  # [E] source row of each entry
    path_ptr,  # [E * C] path of (entry, slot), n_paths where none
    gw_ptr,  # [P, K] gradient of the path kernels (ACC_DTYPE)
    T,
    S,
    D,
    B,
    n_paths,
    gy2_ptr,  # [B, D2, T] second part of the output gradient
    D2,
    gy_row0,
    gy2_row0,
    gy_split,
    K: tl.constexpr,
    BT: tl.constexpr,
    C: tl.constexpr,
    HAS_HIST: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    """``gw[path(e, c), k] = Σ_{b,t} gy[b, row_c, t] · xx[b, src_e, t - k]`` for one entry,
    where gradient row ``d`` is row ``gy_row0 + d`` of ``gy`` if ``d < gy_split``, else row
    ``gy2_row0 + d - gy_split`` of ``gy2``.

    Taps go in groups of 8, each a pass over time with one ``[C, BT]`` accumulator per tap:
    no padding of ``K`` to a power of two (at K = 6 the padded ``[8, C, BT]`` accumulator
    spent a quarter of its loads and multiply-adds on zero taps)."""
    e = tl.program_id(0).to(tl.int64)
    blk = tl.load(ent_blk_ptr + e)
    s = tl.load(other_ptr + e)
    cc = tl.arange(0, C)
    rows = tl.load(rows_ptr + blk * C + cc)
    pj = tl.load(path_ptr + e * C + cc)
    ok = pj < n_paths
    row_ok = (rows >= 0) & ok
    for k0 in tl.static_range(0, K, 8):
        _grad_w_tap_group(x_ptr, hist_ptr, gy_ptr, gw_ptr, s, rows, pj, row_ok, ok, T, S, D, B,
                          gy2_ptr, D2, gy_row0, gy2_row0, gy_split, k0, K, BT, C, HAS_HIST,
                          ACC_DTYPE)

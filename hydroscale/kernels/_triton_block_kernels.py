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
    acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end, b, R_in, t, cc,
    in2_ptr, in_row0, in2_row0, in_split, in_sb, in_sr, in_st, in2_sb, in2_sr, in2_st, T,
    K: tl.constexpr, C: tl.constexpr, REVERSE: tl.constexpr, MASKED: tl.constexpr,
    HAS_IHIST: tl.constexpr, PREFETCH: tl.constexpr, IN2: tl.constexpr,
):
    """``acc [C, BT] += Σ_entries Σ_k wd[e, k, :] · in[other, t ∓ k]`` (masks only if MASKED).

    Input row ``r`` is read through the strides ``(in_sb, in_sr, in_st)`` of batch, row and
    time (an output gradient may be an expanded, stride-0 tensor: no copy).  With PREFETCH
    the next entry's input row is read one iteration ahead, off the chain of dependent loads
    (row id, then inputs).  With IN2 input row ``r`` is row ``in_row0 + r`` of ``in`` if ``r <
    in_split``, else row ``in2_row0 + r - in_split`` of ``in2`` (with its own strides: an
    output gradient in two parts, no copy to join them)."""
    if PREFETCH:
        r_next = tl.load(other_ptr + start, mask=start < end, other=0)
    for e in range(start, end):
        if PREFETCH:
            r = r_next
            r_next = tl.load(other_ptr + tl.minimum(e + 1, end - 1))
        else:
            r = tl.load(other_ptr + e)
        if IN2:
            first = r < in_split
            xp = tl.where(first, in_ptr + b * in_sb + (in_row0 + r) * in_sr,
                          in2_ptr + b * in2_sb + (in2_row0 - in_split + r) * in2_sr)
            st = tl.where(first, in_st, in2_st)
        else:
            xp = in_ptr + b * in_sb + r * in_sr
            st = in_st
        xp += t * st
        wp = wd_ptr + e * (K * C) + cc
        for k in tl.static_range(K):
            if REVERSE:
                tt = t + k
                lag = k
            else:
                tt = t - k
                lag = -k
            if MASKED:
                xv = tl.load(xp + lag * st, mask=(tt >= 0) & (tt < T), other=0.0)
                if HAS_IHIST:
                    hp = ihist_ptr + (b * R_in + r) * (K - 1) + K - 1
                    xv += tl.load(hp + tt, mask=(tt < 0) & (tt >= 1 - K), other=0.0)
            else:
                xv = tl.load(xp + lag * st)
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
    in_row0,
    in2_row0,
    in_split,
    in_sb,  # strides of in (batch, row, time)
    in_sr,
    in_st,
    in2_sb,  # strides of in2
    in2_sr,
    in2_st,
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
    xb_sb=0,  # strides of xb (batch, row, time): the history launch reads zeros, stride 0
    xb_sr=0,
    xb_st=0,
    TERMB: tl.constexpr = False,
    HAS_IHISTB: tl.constexpr = False,
    n_split=1,  # SPLIT: programs per (block, tile), each over its share of the entries
    split_stride=0,  # SPLIT: elements between the outputs of consecutive shares
    SPLIT: tl.constexpr = False,
    t_stop=0,  # HAS_STOP: no output step from t_stop on is stored (a time piece)
    HAS_STOP: tl.constexpr = False,
):
    """Forward (causal, ``REVERSE=False``) or input gradient (anti-causal) of one block.

    Output row ``d`` goes to ``out[b, out_row0 + d]`` if ``d < split``, else to
    ``out2[b, out2_row0 + d - split]``, added to what is there if ``ACCUMULATE``.  The input
    rows are read through their strides, with IN2 from two tensors the same way (see
    ``_block_accumulate``).  With
    TERMB (forward) a second term, whose layout cuts the output rows into the same blocks,
    adds its entries into the same tile before the one store.  With SPLIT, ``n_split``
    programs share each (block, tile): program ``s`` sums the ``s``-th of ``n_split``
    consecutive parts of the block's entries (and of TERMB's) and stores its partial sum
    ``s * split_stride`` elements further into ``out`` (the launcher adds the parts up): a
    launch with few blocks then no longer waits on its heaviest block's whole loop."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    if SPLIT:
        sp = pid % n_split
        pid = pid // n_split
    blk = tl.load(order_ptr + pid // n_tiles)
    t0 = t_origin + (pid % n_tiles) * BT
    t = t0 + tl.arange(0, BT)
    cc = tl.arange(0, C)
    rows = tl.load(rows_ptr + blk * C + cc)
    start = tl.load(ptr_ptr + blk)
    end = tl.load(ptr_ptr + blk + 1)
    if SPLIT:
        per = (end - start + n_split - 1) // n_split
        start = start + sp * per
        end = tl.minimum(end, start + per)
    acc = tl.zeros([C, BT], dtype=ACC_DTYPE)
    if REVERSE:
        interior = (t0 >= 0) & (t0 + BT + K - 1 <= T)
    else:
        interior = (t0 >= K - 1) & (t0 + BT <= T)
    if interior:
        acc = _block_accumulate(acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end,
                                b, R_in, t, cc, in2_ptr, in_row0, in2_row0, in_split,
                                in_sb, in_sr, in_st, in2_sb, in2_sr, in2_st, T,
                                K, C, REVERSE, False, HAS_IHIST, PREFETCH, IN2)
    else:
        acc = _block_accumulate(acc, in_ptr, ihist_ptr, wd_ptr, other_ptr, start, end,
                                b, R_in, t, cc, in2_ptr, in_row0, in2_row0, in_split,
                                in_sb, in_sr, in_st, in2_sb, in2_sr, in2_st, T,
                                K, C, REVERSE, True, HAS_IHIST, PREFETCH, IN2)
    if TERMB:  # a forward input, read through its strides
        startb = tl.load(ptrb_ptr + blk)
        endb = tl.load(ptrb_ptr + blk + 1)
        if SPLIT:
            perb = (endb - startb + n_split - 1) // n_split
            startb = startb + sp * perb
            endb = tl.minimum(endb, startb + perb)
        if interior:
            acc = _block_accumulate(acc, xb_ptr, ihistb_ptr, wdb_ptr, otherb_ptr, startb, endb,
                                    b, R_inb, t, cc, xb_ptr, 0, 0, R_inb, xb_sb, xb_sr, xb_st,
                                    xb_sb, xb_sr, xb_st, T, K, C, REVERSE, False, HAS_IHISTB,
                                    PREFETCH, False)
        else:
            acc = _block_accumulate(acc, xb_ptr, ihistb_ptr, wdb_ptr, otherb_ptr, startb, endb,
                                    b, R_inb, t, cc, xb_ptr, 0, 0, R_inb, xb_sb, xb_sr, xb_st,
                                    xb_sb, xb_sr, xb_st, T, K, C, REVERSE, True, HAS_IHISTB,
                                    PREFETCH, False)
    ok = (rows >= 0)[:, None]
    # one pointer per row: rows < split into out (from row out_row0), the others into out2
    first = rows < split
    row_ptr = tl.where(first, out_ptr + (b * R_out + out_row0 + rows) * T,
                       out2_ptr + (b * R_out2 + out2_row0 - split + rows) * T)
    if SPLIT:
        row_ptr += sp.to(tl.int64) * split_stride
    optrs = row_ptr[:, None] + t[None, :]
    if HAS_STOP:
        omask = ok & ((t >= 0) & (t < t_stop))[None, :]
    else:
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
def _grad_w_tap(acc, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, k: tl.constexpr,
                K: tl.constexpr, HAS_HIST: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """``acc [NE, C, BT] += g [C, BT] · xx[entry, t - k]`` for the ``NE`` entries' input rows
    (``xbase``, ``hbase``: ``[NE, 1]`` row offsets); taps ``k >= K`` leave ``acc`` as it is."""
    if k < K:
        tt = (t - k)[None, :]
        ok = ent_ok[:, None]
        xv = tl.load(x_ptr + xbase + tt, mask=ok & (tt >= 0) & (tt + k < T),
                     other=0.0).to(ACC_DTYPE)
        if HAS_HIST:
            xv += tl.load(hist_ptr + hbase + tt, mask=ok & (tt < 0) & (tt >= 1 - K),
                          other=0.0).to(ACC_DTYPE)
        acc += g[None, :, :] * xv[:, None, :]
    return acc


@triton.jit
def _grad_w_store(acc, gw_ptr, pj, ok, k: tl.constexpr, K: tl.constexpr):
    if k < K:
        tl.store(gw_ptr + pj * K + k, tl.sum(acc, axis=2), mask=ok)


@triton.jit
def _grad_w_tap_group(x_ptr, hist_ptr, gy_ptr, gw_ptr, s, ent_ok, rows, pj, ok, T, S, B,
                      gy2_ptr, gy_row0, gy2_row0, gy_split, gy_sb, gy_sr, gy_st, gy2_sb,
                      gy2_sr, gy2_st, K0: tl.constexpr, K: tl.constexpr,
                      BT: tl.constexpr, C: tl.constexpr, NE: tl.constexpr,
                      HAS_HIST: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """Taps ``K0 .. K0 + 7`` of ``NE`` entries: one ``[NE, C, BT]`` accumulator per tap over
    all of time, summed over time once at the end.  Each gradient tile ``[C, BT]`` is loaded
    once for the ``NE`` entries."""
    tb = tl.arange(0, BT)
    a0 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a1 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a2 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a3 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a4 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a5 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a6 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    a7 = tl.zeros([NE, C, BT], dtype=ACC_DTYPE)
    row_ok = rows >= 0
    first = rows < gy_split
    gst = tl.where(first, gy_st, gy2_st)[:, None]  # [C, 1]: time stride of each row
    for bb in range(B):
        b = tl.max(s, axis=0) * 0 + bb  # an int64 scalar: int64 offsets
        xbase = ((b * S + s) * T)[:, None]
        hbase = ((b * S + s) * (K - 1) + K - 1)[:, None]
        gptr = tl.where(first, gy_ptr + b * gy_sb + (gy_row0 + rows) * gy_sr,
                        gy2_ptr + b * gy2_sb + (gy2_row0 - gy_split + rows) * gy2_sr)
        for t0 in range(0, T, BT):
            t = t0 + tb
            g = tl.load(gptr[:, None] + t[None, :] * gst,
                        mask=row_ok[:, None] & (t < T)[None, :], other=0.0).to(ACC_DTYPE)
            a0 = _grad_w_tap(a0, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0, K,
                             HAS_HIST, ACC_DTYPE)
            a1 = _grad_w_tap(a1, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 1, K,
                             HAS_HIST, ACC_DTYPE)
            a2 = _grad_w_tap(a2, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 2, K,
                             HAS_HIST, ACC_DTYPE)
            a3 = _grad_w_tap(a3, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 3, K,
                             HAS_HIST, ACC_DTYPE)
            a4 = _grad_w_tap(a4, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 4, K,
                             HAS_HIST, ACC_DTYPE)
            a5 = _grad_w_tap(a5, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 5, K,
                             HAS_HIST, ACC_DTYPE)
            a6 = _grad_w_tap(a6, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 6, K,
                             HAS_HIST, ACC_DTYPE)
            a7 = _grad_w_tap(a7, g, x_ptr, hist_ptr, xbase, hbase, ent_ok, t, T, K0 + 7, K,
                             HAS_HIST, ACC_DTYPE)
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
    gy_ptr,  # [B, D, T] gradient of the output rows (any strides)
    rows_ptr,  # [G * C] destination row of each slot (-1: padding)
    ent_blk_ptr,  # [E] block of each entry
    other_ptr,  # [E] source row of each entry
    path_ptr,  # [E * C] path of (entry, slot), n_paths where none
    gw_ptr,  # [P, K] gradient of the path kernels (ACC_DTYPE)
    T,
    S,
    B,
    n_paths,
    gy2_ptr,  # [B, D2, T] second part of the output gradient (any strides)
    gy_row0,
    gy2_row0,
    gy_split,
    gy_sb,  # strides of gy (batch, row, time)
    gy_sr,
    gy_st,
    gy2_sb,  # strides of gy2
    gy2_sr,
    gy2_st,
    first_ptr,  # [n_programs] first entry of each program's run of NE (one block's)
    ptr_ptr,  # [G + 1] CSR pointer of the blocks' entries
    K: tl.constexpr,
    BT: tl.constexpr,
    C: tl.constexpr,
    NE: tl.constexpr,
    HAS_HIST: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    """``gw[path(e, c), k] = Σ_{b,t} gy[b, row_c, t] · xx[b, src_e, t - k]`` for up to ``NE``
    entries of one block, where gradient row ``d`` is row ``gy_row0 + d`` of ``gy`` if ``d <
    gy_split``, else row ``gy2_row0 + d - gy_split`` of ``gy2``, each read through its
    strides.

    The entries share the block's ``C`` gradient rows, so each gradient tile is loaded once
    for ``NE`` entries (the kernel reads far more gradient than input: ``C`` rows per entry).
    Taps go in groups of 8, each a pass over time with one ``[NE, C, BT]`` accumulator per
    tap: no padding of ``K`` to a power of two (at K = 6 the padded ``[8, C, BT]`` accumulator
    spent a quarter of its loads and multiply-adds on zero taps)."""
    e0 = tl.load(first_ptr + tl.program_id(0))
    blk = tl.load(ent_blk_ptr + e0)
    end = tl.load(ptr_ptr + blk + 1)
    e = e0 + tl.arange(0, NE)
    ent_ok = e < end
    s = tl.load(other_ptr + e, mask=ent_ok, other=0)
    cc = tl.arange(0, C)
    rows = tl.load(rows_ptr + blk * C + cc)
    pj = tl.load(path_ptr + e[:, None] * C + cc[None, :], mask=ent_ok[:, None], other=n_paths)
    ok = pj < n_paths
    for k0 in tl.static_range(0, K, 8):
        _grad_w_tap_group(x_ptr, hist_ptr, gy_ptr, gw_ptr, s, ent_ok, rows, pj, ok, T, S, B,
                          gy2_ptr, gy_row0, gy2_row0, gy_split, gy_sb, gy_sr, gy_st, gy2_sb,
                          gy2_sr, gy2_st, k0, K, BT, C, NE, HAS_HIST, ACC_DTYPE)

"""Triton kernels of the path convolution (``@triton.jit`` functions only).

Time is cut into blocks of ``L`` steps (``L`` a power of two >= max(16, K)).  For one path the
output block ``m`` is a small matmul of the two input blocks it depends on with a Toeplitz
matrix of the path's taps::

    out[m*L + i] = Σ_{c < 2L} in[m*L + c - L] · w[i - c + L]          (causal, forward)
    out[m*L + i] = Σ_{c < 2L} in[m*L + c]     · w[c - i]              (anti-causal, grad_x)

so a tile of ``BM`` blocks of one output row is ``A [BM, 2L] @ W [2L, L]`` per path, summed
over the paths of that row on tensor cores, without atomics.  The input tile ``A`` of a path is
a sliding window over one contiguous row (coalesced, L1-resident); the Toeplitz ``W`` is a
gather of the ``K`` taps, unmasked from a zero-padded copy ``[P + 1, 2L]`` of the taps (and
tiles whose input times all lie in ``[0, T)`` load without masks either).  With ``PATHS > 1``
the tiles of ``PATHS`` paths are stacked along the reduction axis
(``[BM, PATHS·2L] @ [PATHS·2L, L]``) so more loads are in flight per iteration.  ``grad_w`` is
the correlation ``Aᵀ @ GY [2L, L]`` summed over time tiles, then reduced along its diagonals.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _accumulate_paths(
    acc,  # [BM, L] accumulator of the output tile
    in_ptr,  # [B, R_in, T] input rows
    ihist_ptr,  # [B, R_in, K - 1] input history (read if MASK_IN and HAS_IHIST)
    w_ptr,  # [P, K] path kernels, or [P + 1, 2L] zero-padded taps at columns L..L+K-1 if PADDED
    ent_path_ptr,  # [P] int64 path id of each entry
    ent_in_ptr,  # [P] int64 input row of each entry
    start,
    end,
    b,
    R_in,
    T,
    K,
    t_in,  # [BM, PATHS * 2L] input time of each input-tile element
    lag,  # [PATHS * 2L, L] tap index of each Toeplitz element
    slot,  # [PATHS * 2L] path slot of each reduction column
    L: tl.constexpr,
    PATHS: tl.constexpr,
    MASK_IN: tl.constexpr,
    PADDED: tl.constexpr,
    HAS_IHIST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Σ over the entries ``start..end`` of one output row of ``A [BM, 2L] @ W [2L, L]``.

    ``MASK_IN=False`` (interior tiles, all input times in ``[0, T)``) and ``PADDED`` (taps
    outside ``0..K-1`` read as the zeros of the padding) drop the per-element masks."""
    in_ok = (t_in >= 0) & (t_in < T)
    hist_ok = (t_in < 0) & (t_in >= 1 - K)
    lag_ok = (lag >= 0) & (lag < K)
    w_off = lag + L
    if PATHS == 1:
        for e in range(start, end):
            p = tl.load(ent_path_ptr + e)
            r = tl.load(ent_in_ptr + e)
            base = (b * R_in + r) * T
            if MASK_IN:
                a = tl.load(in_ptr + base + t_in, mask=in_ok, other=0.0)
                if HAS_IHIST:
                    hbase = (b * R_in + r) * (K - 1)
                    a += tl.load(ihist_ptr + hbase + (t_in + K - 1), mask=hist_ok, other=0.0)
            else:
                a = tl.load(in_ptr + base + t_in)
            if PADDED:
                wt = tl.load(w_ptr + p * (2 * L) + w_off)
            else:
                wt = tl.load(w_ptr + p * K + lag, mask=lag_ok, other=0.0)
            acc += tl.dot(a, wt, input_precision=PRECISION)
    else:
        # PATHS paths per iteration, stacked along the reduction axis: more loads in flight;
        # empty slots read path 0 with a zero input tile
        for e0 in range(start, end, PATHS):
            ent = e0 + slot
            valid = ent < end
            p = tl.load(ent_path_ptr + ent, mask=valid, other=0)
            r = tl.load(ent_in_ptr + ent, mask=valid, other=0)
            base = (b * R_in + r) * T
            if MASK_IN:
                a = tl.load(in_ptr + base[None, :] + t_in, mask=valid[None, :] & in_ok, other=0.0)
                if HAS_IHIST:
                    hbase = (b * R_in + r) * (K - 1)
                    a += tl.load(ihist_ptr + hbase[None, :] + (t_in + K - 1),
                                 mask=valid[None, :] & hist_ok, other=0.0)
            else:
                a = tl.load(in_ptr + base[None, :] + t_in, mask=valid[None, :], other=0.0)
            if PADDED:
                wt = tl.load(w_ptr + p[:, None] * (2 * L) + w_off)
            else:
                wt = tl.load(w_ptr + p[:, None] * K + lag, mask=valid[:, None] & lag_ok,
                             other=0.0)
            acc += tl.dot(a, wt, input_precision=PRECISION)
    return acc


@triton.jit
def _path_conv_fwd_kernel(
    in_ptr,  # [B, R_in, T] input rows (x forward; grad_y for grad_x)
    ihist_ptr,  # [B, R_in, K - 1] input history, time -(K-1)..-1 (read if HAS_IHIST)
    w_ptr,  # [P, K] path kernels, or [P + 1, 2L] zero-padded taps if PADDED
    row_ptr,  # [R_out + 1] int64 CSR pointer of the entries of each output row
    ent_path_ptr,  # [P] int64 path id of each entry (row order)
    ent_in_ptr,  # [P] int64 input row of each entry
    out_ptr,  # [B, R_out, T] output rows
    ohist_ptr,  # [B, R_out, K - 1] output at time -(K-1)..-1 (written if HAS_OHIST)
    T,
    K,
    R_in,
    R_out,
    n_tiles,
    t_origin,
    L: tl.constexpr,
    BM: tl.constexpr,
    REVERSE: tl.constexpr,
    PATHS: tl.constexpr,
    PADDED: tl.constexpr,
    HAS_IHIST: tl.constexpr,
    HAS_OHIST: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    row = pid // n_tiles
    tile = pid % n_tiles
    t0 = t_origin + tile * (BM * L)

    # column q of the input tile is offset c = q % 2L of path slot q // 2L of the iteration
    m = tl.arange(0, BM)
    q = tl.arange(0, PATHS * 2 * L)
    c = q % (2 * L)
    slot = q // (2 * L)
    i = tl.arange(0, L)
    if REVERSE:
        t_lo = t0
        lag = c[:, None] - i[None, :]
    else:
        t_lo = t0 - L
        lag = i[None, :] - c[:, None] + L
    t_in = t_lo + m[:, None] * L + c[None, :]

    start = tl.load(row_ptr + row)
    end = tl.load(row_ptr + row + 1)
    acc = tl.zeros([BM, L], dtype=ACC_DTYPE)
    if PADDED:
        if (t_lo >= 0) & (t_lo + (BM + 1) * L <= T):  # interior tile: no input masks
            acc = _accumulate_paths(acc, in_ptr, ihist_ptr, w_ptr, ent_path_ptr, ent_in_ptr,
                                    start, end, b, R_in, T, K, t_in, lag, slot, L, PATHS,
                                    False, True, HAS_IHIST, PRECISION)
        else:
            acc = _accumulate_paths(acc, in_ptr, ihist_ptr, w_ptr, ent_path_ptr, ent_in_ptr,
                                    start, end, b, R_in, T, K, t_in, lag, slot, L, PATHS,
                                    True, True, HAS_IHIST, PRECISION)
    else:
        acc = _accumulate_paths(acc, in_ptr, ihist_ptr, w_ptr, ent_path_ptr, ent_in_ptr,
                                start, end, b, R_in, T, K, t_in, lag, slot, L, PATHS,
                                True, False, HAS_IHIST, PRECISION)

    t_out = t0 + m[:, None] * L + i[None, :]
    obase = (b * R_out + row) * T
    tl.store(out_ptr + obase + t_out, acc, mask=(t_out >= 0) & (t_out < T))
    if HAS_OHIST:
        hbase = (b * R_out + row) * (K - 1)
        tl.store(ohist_ptr + hbase + (t_out + K - 1), acc, mask=(t_out < 0) & (t_out >= 1 - K))


@triton.jit
def _path_conv_grad_w_kernel(
    x_ptr,  # [B, S, T] input rows
    hist_ptr,  # [B, S, K - 1] input history (read if HAS_HIST)
    gy_ptr,  # [B, D, T] gradient of the output rows
    order_ptr,  # [P] int64 path ids in processing order (sorted by destination)
    src_ptr,  # [P] int64 source row of each path
    dst_ptr,  # [P] int64 destination row of each path
    gw_ptr,  # [P, K] gradient of the path kernels (ACC_DTYPE)
    T,
    K,
    S,
    D,
    B,
    n_tiles,
    L: tl.constexpr,
    BM: tl.constexpr,
    HAS_HIST: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    p = tl.load(order_ptr + tl.program_id(0))
    s = tl.load(src_ptr + p)
    d = tl.load(dst_ptr + p)

    m = tl.arange(0, BM)
    c = tl.arange(0, 2 * L)
    i = tl.arange(0, L)
    g = tl.zeros([2 * L, L], dtype=ACC_DTYPE)
    for bb in range(B):
        b = s * 0 + bb  # int64: row offsets exceed 2**31 on continental networks
        xbase = (b * S + s) * T
        hbase = (b * S + s) * (K - 1)
        gbase = (b * D + d) * T
        for tile in range(n_tiles):
            t0 = tile * (BM * L)
            t_in = t0 + m[:, None] * L + c[None, :] - L
            a = tl.load(x_ptr + xbase + t_in, mask=(t_in >= 0) & (t_in < T), other=0.0)
            if HAS_HIST:
                hist_ok = (t_in < 0) & (t_in >= 1 - K)
                a += tl.load(hist_ptr + hbase + (t_in + K - 1), mask=hist_ok, other=0.0)
            t_out = t0 + m[:, None] * L + i[None, :]
            gy = tl.load(gy_ptr + gbase + t_out, mask=t_out < T, other=0.0)
            g += tl.dot(tl.trans(a), gy, input_precision=PRECISION)

    # grad_w[k] = Σ of g[c, i] over the diagonal i - c + L = k (one small reduction per tap:
    # a [2L, L, L] one-hot contraction would spill registers)
    lag = i[None, :] - c[:, None] + L
    for k in tl.static_range(L):
        if k < K:
            tl.store(gw_ptr + p * K + k, tl.sum(tl.sum(tl.where(lag == k, g, 0.0), axis=1), axis=0))

"""Launchers of the Triton path-convolution kernels (forward, grad_x/grad_hist, grad_w)."""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ._blocks import RowBlocks
from ._launch import get_launch_config, use_blocks
from ._layout import PathLayout
from ._row_target import RowTarget
from ._tap_reuse import packed_once
from ._triton_block_kernels import _block_conv_kernel, _block_grad_w_kernel, _pack_taps_kernel
from ._triton_kernels import _path_conv_fwd_kernel, _path_conv_grad_w_kernel

__all__ = ["path_conv_forward", "path_conv_forward_into", "path_conv_forward_pair_into",
           "path_conv_backward_input", "path_conv_backward_weight"]


def _block_len(k: int) -> int:
    """Time-block length ``L``: a power of two >= max(16, K) (tl.dot needs dims >= 16)."""
    return max(16, triton.next_power_of_2(k))


def _pick_bm(n_blocks: int, max_bm: int) -> int:
    """Blocks per tile: the largest of 16..max_bm that wastes the fewest padded blocks."""
    best, best_waste = 16, None
    bm = 16
    while bm <= max_bm:
        waste = triton.cdiv(n_blocks, bm) * bm - n_blocks
        if best_waste is None or waste <= best_waste:
            best, best_waste = bm, waste
        bm *= 2
    return best


def _padded_taps(w: torch.Tensor, blk: int) -> torch.Tensor:
    """``[P + 1, 2L]`` zeros with the taps at columns ``L..L+K-1``: every Toeplitz element
    ``w[lag]``, ``lag in (-L, 2L)``, then reads ``padded.view(-1)[p * 2L + L + lag]`` without a
    mask (out-of-range lags land on padding zeros of row p or p + 1)."""
    n_paths, k = w.shape
    padded = w.new_zeros(n_paths + 1, 2 * blk)
    padded[:n_paths, blk : blk + k] = w
    return padded


def _acc_dtype(dtype: torch.dtype) -> tuple[torch.dtype, tl.dtype]:
    if dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def _precision(dtype: torch.dtype, precision: str) -> str:
    return precision if dtype == torch.float32 else "ieee"


def _register_cap(cap: int) -> dict:
    """The ``maxnreg`` launch option (a register cap per thread), if one is set."""
    return {"maxnreg": cap} if cap else {}


def _block_order(cfg, rb: RowBlocks) -> torch.Tensor:
    """The order in which the block kernels start the blocks."""
    return rb.heavy_first if cfg.block_heavy_first else torch.arange(rb.n_blocks,
                                                                      device=rb.ptr.device)


def _packed_taps(w: torch.Tensor, rb: RowBlocks) -> torch.Tensor:
    """``[E, K, C]`` taps of every (entry, slot) cell of the blocks, zeros where no path
    (one Triton pass: a torch gather needed a copy of ``w`` with a zero row, the gather and a
    transposing copy, ~10 ms of a 1M-reach forward); packed once per ``w`` and ``rb`` within
    :func:`~._tap_reuse.reuse_packed_taps`."""
    def pack() -> torch.Tensor:
        n_paths, k = w.shape
        out = torch.empty(rb.other.numel(), k, rb.c, dtype=w.dtype, device=w.device)
        n_out = out.numel()
        if n_out:
            block = 1024
            _pack_taps_kernel[(triton.cdiv(n_out, block),)](
                w, rb.path, out, n_out, n_paths, K=k, C=rb.c, BLOCK=block)
        return out

    return packed_once(w, rb, pack)


def path_conv_forward(
    x: torch.Tensor, w: torch.Tensor, layout: PathLayout, hist: torch.Tensor | None, precision: str
) -> torch.Tensor:
    """``y [B, D, T]`` (float32, or float64 for float64 inputs) from contiguous ``x [B, S, T]``,
    ``w [P, K]`` and ``hist [B, S, K - 1]`` of one dtype; ``precision`` as resolved by
    :func:`~hydroscale.kernels.path_conv` (the launchers keep no default of their own)."""
    batch, n_src, n_t = x.shape
    k = w.shape[1]
    acc_torch, acc_tl = _acc_dtype(x.dtype)
    y = torch.empty(batch, layout.n_dst, n_t, dtype=acc_torch, device=x.device)
    if layout.n_dst == 0 or n_t == 0 or batch == 0:
        return y
    cfg = get_launch_config()
    has_hist = hist is not None and k > 1
    if use_blocks(cfg, k):
        _block_forward(cfg, x, w, layout, hist, y, 0, y, 0, layout.n_dst, False)
        return y
    blk = _block_len(k)
    bm = _pick_bm(triton.cdiv(n_t, blk), cfg.conv_bm)
    n_tiles = triton.cdiv(n_t, bm * blk)
    grid = (layout.n_dst * n_tiles, batch)
    taps = _padded_taps(w, blk) if cfg.conv_padded_taps else w
    _path_conv_fwd_kernel[grid](
        x, hist if has_hist else x, taps,
        layout.dst_ptr, layout.by_dst_path, layout.by_dst_src,
        y, y,
        n_t, k, n_src, layout.n_dst, n_tiles, 0,
        L=blk, BM=bm, REVERSE=False, PATHS=cfg.conv_paths,
        PADDED=cfg.conv_padded_taps, HAS_IHIST=has_hist, HAS_OHIST=False,
        PRECISION=_precision(x.dtype, precision), ACC_DTYPE=acc_tl, num_warps=cfg.conv_warps,
    )
    return y


def path_conv_forward_into(
    x: torch.Tensor,
    w: torch.Tensor,
    layout: PathLayout,
    hist: torch.Tensor | None,
    target,
) -> bool:
    """The forward written (or added) straight into ``target`` (a ``RowTarget``) by the block
    kernels; False, doing nothing, where the launch configuration picks another algorithm
    or a target is not a contiguous tensor of the kernels' output dtype."""
    acc_torch, _ = _acc_dtype(x.dtype)
    cfg = get_launch_config()
    outs = (target.first, target.second)
    if not use_blocks(cfg, w.shape[1]) or any(
            o.dtype != acc_torch or not o.is_contiguous() for o in outs):
        return False
    if layout.n_dst and x.shape[0] and x.shape[2]:
        _block_forward(cfg, x, w, layout, hist, target.first, target.first_row, target.second,
                       target.second_row, target.split, target.accumulate,
                       steps=target.window(x.shape[2]))
    return True


def path_conv_forward_pair_into(term_a: tuple, term_b: tuple, target) -> bool:
    """Two terms ``(x, w, layout, hist)`` written (added) into ``target`` by one launch of the
    block kernel: each block's tile sums both terms' entries before its one store, so the
    output is not stored, read back and stored again.  False, doing nothing, unless the block
    kernels apply to both and the two layouts cut the destination rows into the same blocks
    (the same rows and block order, e.g. a router's runoff and transfer calls)."""
    (xa, wa, la, ha), (xb, wb, lb, hb) = term_a, term_b
    cfg = get_launch_config()
    k = wa.shape[1]
    acc_torch, _ = _acc_dtype(xa.dtype)
    if (wb.shape[1] != k or _acc_dtype(xb.dtype)[0] != acc_torch or not use_blocks(cfg, k)
            or not _same_dst_blocks(la, lb) or any(
                o.dtype != acc_torch or not o.is_contiguous()
                for o in (target.first, target.second))):
        return False
    if la.n_dst and xa.shape[0] and xa.shape[2]:
        _block_forward(cfg, xa, wa, la, ha, target.first, target.first_row, target.second,
                       target.second_row, target.split, target.accumulate, (xb, wb, lb, hb),
                       steps=target.window(xa.shape[2]))
    return True


def _same_dst_blocks(la: PathLayout, lb: PathLayout) -> bool:
    """Whether the two layouts' destination blocks hold the same rows (``row_blocks`` cuts
    them from ``n_dst`` and ``dst_order`` alone)."""
    if la.n_dst != lb.n_dst:
        return False
    oa, ob = la.dst_order or (None, None), lb.dst_order or (None, None)
    return all(a is b or (a is not None and b is not None and np.array_equal(a, b))
               for a, b in zip(oa, ob))


def _block_forward(cfg, x, w, layout, hist, out, out_row0, out2, out2_row0, split,
                   accumulate, term_b: tuple | None = None, steps: tuple | None = None) -> None:
    """Launch the block forward kernel: destination row ``d`` into ``out[:, out_row0 + d]``
    if ``d < split``, else into ``out2[:, out2_row0 + d - split]`` (written, or added when
    ``accumulate``), output steps ``steps = (a, b)`` only (default all); ``term_b``, a second
    term ``(x, w, layout, hist)`` with the same destination blocks, is summed in the same
    launch.  With ``block_split_history`` the histories' share is computed by
    :func:`_history_share` (on CUDA with ``block_history_stream``, on a second stream, beside
    the launch without them) and then added."""
    k = w.shape[1]
    a, b = steps if steps is not None else (0, x.shape[2])
    hb = None if term_b is None else term_b[3]
    if a >= k - 1:  # the histories do not reach these steps
        hist, hb = None, None
        term_b = None if term_b is None else (*term_b[:3], None)
    if not (cfg.block_split_history and k > 1 and (hist is not None or hb is not None)):
        _block_launch(cfg, x, w, layout, hist, out, out_row0, out2, out2_row0, split,
                      accumulate, term_b, (a, b))
        return
    plain_b = None if term_b is None else (*term_b[:3], None)
    side = _side_stream(x.device) if cfg.block_history_stream and x.is_cuda else None
    if side is None:
        share = _history_share(cfg, x, w, layout, hist, term_b, out.dtype)
    else:
        for lay in (layout, None if term_b is None else term_b[2]):
            if lay is not None:  # built (and cached) on the main stream
                lay.blocks("dst", cfg.block_rows)
        main = torch.cuda.current_stream(x.device)
        side.wait_stream(main)  # the histories and taps are written
        with torch.cuda.stream(side):
            share = _history_share(cfg, x, w, layout, hist, term_b, out.dtype)
        share.record_stream(main)  # read by the main stream's additions below
    _block_launch(cfg, x, w, layout, None, out, out_row0, out2, out2_row0, split, accumulate,
                  plain_b, (a, b))
    if side is not None:
        main.wait_stream(side)
    _write_parts(share[:, :, a:min(b, k - 1)], out, out_row0, out2, out2_row0, split, True, a)


_SIDE_STREAMS: dict = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream that runs the history launches of ``device`` (one per device, made once)."""
    key = torch.device(device).index
    if key is None:
        key = torch.cuda.current_device()
    if key not in _SIDE_STREAMS:
        _SIDE_STREAMS[key] = torch.cuda.Stream(device=key)
    return _SIDE_STREAMS[key]


_ZEROS: dict = {}


def _zero(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A zero scalar of ``dtype`` on ``device``, made once (read only, through stride-0
    views: no fill launch per call)."""
    key = (str(device), dtype)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros((), dtype=dtype, device=device)
    return _ZEROS[key]


def _history_share(cfg, x, w, layout, hist, term_b, dtype: torch.dtype) -> torch.Tensor:
    """The inputs' histories' share ``[B, n_dst, K - 1]`` of the output, which only reaches
    its first ``K - 1`` steps: one launch of ``K - 1`` steps over zero inputs (a stride-0
    view, nothing copied: a transfer buffer's history has ``n_exit f`` rows) with the
    histories, whose output is ``Σ_{k > t} w_k hist[K - 1 + t - k]``.  A term without history
    is left out of the launch."""
    k1 = w.shape[1] - 1
    terms = [tm for tm in ((x, w, layout, hist), term_b) if tm is not None and tm[3] is not None]
    (xa, wa, la, ha), term = terms[0], (terms[1] if len(terms) > 1 else None)

    def zeros(xt):  # the inputs after the history: zeros, read through stride 0
        return _zero(xt.device, xt.dtype).expand(xt.shape[0], xt.shape[1], k1)

    if term is not None:
        term = (zeros(term[0]), *term[1:])
    n_dst = layout.n_dst
    ys = torch.empty(x.shape[0], n_dst, k1, device=x.device, dtype=dtype)
    _block_launch(cfg, zeros(xa), wa, la, ha, ys, 0, ys, 0, n_dst, False, term)
    return ys


def _tiles(cfg, n_t: int) -> tuple[int, int]:
    """``(steps per tile, tiles)`` of a block forward launch over ``n_t`` steps."""
    bt = min(cfg.block_time, max(16, triton.next_power_of_2(n_t)))
    return bt, triton.cdiv(n_t, bt)


def _block_launch(cfg, x, w, layout, hist, out, out_row0, out2, out2_row0, split,
                  accumulate, term_b: tuple | None = None, steps: tuple | None = None
                  ) -> None:
    """One launch of the block forward kernel (see :func:`_block_forward`) over the output
    steps ``steps = (a, b)`` (default all): tiles from step ``a``, stores below ``b``."""
    batch, n_src, n_t = x.shape
    k = w.shape[1]
    has_hist = hist is not None and k > 1
    rb = layout.blocks("dst", cfg.block_rows)
    a, b = steps if steps is not None else (0, n_t)
    if b <= a:
        return
    bt, n_tiles = _tiles(cfg, b - a)
    second = {}
    if term_b is not None:
        xb, wb, lb, hb = term_b
        rbb = lb.blocks("dst", cfg.block_rows)
        has_hb = hb is not None and k > 1
        second = dict(xb_ptr=xb, ihistb_ptr=hb if has_hb else xb, wdb_ptr=_packed_taps(wb, rbb),
                      ptrb_ptr=rbb.ptr, otherb_ptr=rbb.other, R_inb=xb.shape[1],
                      xb_sb=xb.stride(0), xb_sr=xb.stride(1), xb_st=xb.stride(2), TERMB=True,
                      HAS_IHISTB=has_hb)
    n_split = _entry_splits(cfg, rb, n_tiles * batch)
    o1, o2, row0, row2, cut = out, out2, out_row0, out2_row0, split
    if n_split > 1:  # partial sums [n_split, B, n_dst, T], added up below
        n_dst = layout.n_dst
        o1 = o2 = parts = torch.empty(n_split, batch, n_dst, n_t,
                                      dtype=_acc_dtype(x.dtype)[0], device=x.device)
        row0, row2, cut = 0, 0, n_dst
        second.update(n_split=n_split, split_stride=batch * n_dst * n_t, SPLIT=True)
    _block_conv_kernel[(rb.n_blocks * n_tiles * n_split, batch)](
        x, hist if has_hist else x, _packed_taps(w, rb), rb.rows, rb.ptr, rb.other,
        _block_order(cfg, rb), o1, o1, o2,
        n_t, n_src, o1.shape[-2], n_tiles, a, o2.shape[-2], row0, row2, cut,
        x, 0, 0, n_src, *x.stride(), *x.stride(),
        K=k, BT=bt, C=rb.c, REVERSE=False, HAS_IHIST=has_hist, HAS_OHIST=False,
        ACC_DTYPE=_acc_dtype(x.dtype)[1], PREFETCH=cfg.block_prefetch,
        num_warps=cfg.block_warps, ACCUMULATE=accumulate and n_split == 1,
        t_stop=b, HAS_STOP=b < n_t, **second, **_register_cap(cfg.block_max_registers),
    )
    if n_split > 1:
        _write_parts(parts[..., a:b].sum(0), out, out_row0, out2, out2_row0, split,
                     accumulate, a)


def _entry_splits(cfg, rb: RowBlocks, per_block: int) -> int:
    """Programs per (block, tile) of a block forward launch of ``rb.n_blocks * per_block``
    programs: 1, or for a launch of fewer than ``cfg.block_small_launch`` programs as many
    as bring it there, at most ``cfg.block_small_splits`` (see ``LaunchConfig``)."""
    programs = rb.n_blocks * per_block
    if not rb.complete or programs == 0 or programs >= cfg.block_small_launch:
        return 1
    return max(1, min(cfg.block_small_splits, cfg.block_small_launch // programs))


def _write_parts(total: torch.Tensor, out: torch.Tensor, out_row0: int, out2: torch.Tensor,
                 out2_row0: int, split: int, accumulate: bool, t0: int = 0) -> None:
    """Destination rows ``total [B, n_dst, T']`` (output steps ``t0 .. t0 + T' - 1``): row
    ``d < split`` into ``out[:, out_row0 + d]``, the others into ``out2[:, out2_row0 + d -
    split]``, written or added."""
    t1 = t0 + total.shape[2]
    for dst, row0, rows in ((out, out_row0, total[:, :split]),
                            (out2, out2_row0, total[:, split:])):
        if rows.shape[1]:
            tgt = dst[:, row0:row0 + rows.shape[1], t0:t1]
            if accumulate:
                tgt.add_(rows)
            else:
                tgt.copy_(rows)


def _gradient_rows(grad, n_dst: int, dtype: torch.dtype) -> RowTarget:
    """The output gradient, given whole (``[B, D, T]``) or in two parts (a ``RowTarget``), as
    a ``RowTarget`` of tensors in ``dtype`` that the block kernels read through their strides
    (e.g. the expanded gradient of a sum is not copied)."""
    rows = grad if isinstance(grad, RowTarget) else RowTarget.whole(grad)
    return rows.readable(n_dst, dtype)


def _one_tensor(g: RowTarget, n_dst: int) -> torch.Tensor:
    """The gradient's one tensor, contiguous, for the Toeplitz kernels (which do not read two
    parts nor strides)."""
    if g.first is not g.second or g.first_row or g.split != n_dst:
        raise ValueError("the Toeplitz kernels take the output gradient in one tensor")
    return g.first.contiguous()


def path_conv_backward_input(
    grad_y: torch.Tensor,
    w: torch.Tensor,
    layout: PathLayout,
    n_src: int,
    *,
    want_hist: bool = True,
    precision: str,
    into: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``grad_x [B, S, T]`` and ``grad_hist [B, S, K - 1]`` (None unless ``want_hist``):
    the same kernel on the transposed layout, anti-causal in time.  ``grad_y`` is
    ``[B, D, T]``, or a ``RowTarget`` holding it in two parts (block kernels only).  With
    ``into`` (contiguous ``[B, S, T]`` of the accumulation dtype) ``grad_x`` is added to it in
    place (only the rows paths leave are touched) and ``into`` is returned."""
    g = _gradient_rows(grad_y, layout.n_dst, w.dtype)
    batch, n_t = g.first.shape[0], g.first.shape[2]
    k = w.shape[1]
    acc_torch, acc_tl = _acc_dtype(w.dtype)
    cfg = get_launch_config()
    blocks = use_blocks(cfg, k)
    rb = layout.blocks("src", cfg.block_rows) if blocks else None
    if into is not None:
        if into.shape != (batch, n_src, n_t) or into.dtype != acc_torch or not (
                into.is_contiguous()):
            raise ValueError(f"into must be a contiguous [B, S, T] = {(batch, n_src, n_t)} "
                             f"{acc_torch} tensor, got {tuple(into.shape)} {into.dtype}")
        gx = into
    elif not blocks or rb.complete:
        gx = torch.empty(batch, n_src, n_t, dtype=acc_torch, device=w.device)
    else:  # rows no path leaves are not written by the block kernels
        gx = torch.zeros(batch, n_src, n_t, dtype=acc_torch, device=w.device)
    # the history gradient only when asked for (a transfer buffer has n_exit f rows per call)
    gh = torch.zeros(batch, n_src, k - 1, dtype=acc_torch, device=w.device) if want_hist else None
    if n_src == 0 or batch == 0 or n_t == 0:
        if into is None:
            gx.zero_()
        return gx, gh
    has_ohist = want_hist and k > 1
    if blocks:
        bt = min(cfg.block_time, max(16, triton.next_power_of_2(n_t + k)))
        origin = -triton.cdiv(k - 1, bt) * bt if has_ohist else 0
        n_tiles = triton.cdiv(n_t - origin, bt)
        _block_conv_kernel[(rb.n_blocks * n_tiles, batch)](
            g.first, g.first, _packed_taps(w, rb), rb.rows, rb.ptr, rb.other,
            _block_order(cfg, rb), gx, gx if gh is None else gh, gx,
            n_t, g.first.shape[1], n_src, n_tiles, origin, n_src, 0, 0, n_src,
            g.second, g.first_row, g.second_row, g.split, *g.first.stride(), *g.second.stride(),
            K=k, BT=bt, C=rb.c, REVERSE=True, HAS_IHIST=False, HAS_OHIST=has_ohist,
            ACC_DTYPE=acc_tl, PREFETCH=cfg.block_prefetch, num_warps=cfg.block_warps,
            IN2=g.second is not g.first or g.first_row != 0, ACCUMULATE=into is not None,
            **_register_cap(cfg.block_max_registers),
        )
        return gx, gh
    grad_y = _one_tensor(g, layout.n_dst)
    blk = _block_len(k)
    origin = -blk if has_ohist else 0
    bm = _pick_bm(triton.cdiv(n_t - origin, blk), cfg.conv_bm)
    n_tiles = triton.cdiv(n_t - origin, bm * blk)
    grid = (n_src * n_tiles, batch)
    taps = _padded_taps(w, blk) if cfg.conv_padded_taps else w
    out = gx if into is None else torch.empty_like(gx)
    _path_conv_fwd_kernel[grid](
        grad_y, grad_y, taps,
        layout.src_ptr, layout.by_src_path, layout.by_src_dst,
        out, out if gh is None else gh,
        n_t, k, layout.n_dst, n_src, n_tiles, origin,
        L=blk, BM=bm, REVERSE=True, PATHS=cfg.conv_paths,
        PADDED=cfg.conv_padded_taps, HAS_IHIST=False, HAS_OHIST=has_ohist,
        PRECISION=_precision(w.dtype, precision), ACC_DTYPE=acc_tl, num_warps=cfg.conv_warps,
    )
    if into is not None:
        gx += out
    return gx, gh


def path_conv_backward_weight(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    layout: PathLayout,
    k: int,
    hist: torch.Tensor | None = None,
    *,
    precision: str,
) -> torch.Tensor:
    """``grad_w [P, K]``: ``Σ_{b,t} grad_y[b, dst_p, t] · xx[b, src_p, t - k]``; ``grad_y`` as
    in :func:`path_conv_backward_input`."""
    batch, n_src, n_t = x.shape
    g = _gradient_rows(grad_y, layout.n_dst, x.dtype)
    acc_torch, acc_tl = _acc_dtype(x.dtype)
    gw = torch.zeros(layout.n_paths, k, dtype=acc_torch, device=x.device)
    if layout.n_paths == 0 or batch == 0 or n_t == 0:
        return gw
    cfg = get_launch_config()
    has_hist = hist is not None and k > 1
    if use_blocks(cfg, k):
        rb = layout.blocks("dst", cfg.block_rows)
        if rb.other.numel():
            runs = rb.entry_runs(cfg.block_grad_w_entries)
            _block_grad_w_kernel[(runs.numel(),)](
                x, hist if has_hist else x, g.first, rb.rows, rb.block, rb.other, rb.path, gw,
                n_t, n_src, batch, layout.n_paths, g.second, g.first_row, g.second_row,
                g.split, *g.first.stride(), *g.second.stride(), runs, rb.ptr,
                K=k, BT=min(cfg.block_grad_w_time, max(16, triton.next_power_of_2(n_t))),
                C=rb.c, NE=cfg.block_grad_w_entries, HAS_HIST=has_hist,
                ACC_DTYPE=acc_tl, num_warps=cfg.block_grad_w_warps,
                **_register_cap(cfg.block_grad_w_max_registers),
            )
        return gw
    grad_y = _one_tensor(g, layout.n_dst)
    blk = _block_len(k)
    bm = _pick_bm(triton.cdiv(n_t, blk), cfg.grad_w_bm)
    n_tiles = triton.cdiv(n_t, bm * blk)
    _path_conv_grad_w_kernel[(layout.n_paths,)](
        x, hist if has_hist else x, grad_y,
        layout.by_dst_path, layout.src, layout.dst,
        gw,
        n_t, k, n_src, layout.n_dst, batch, n_tiles,
        L=blk, BM=bm, HAS_HIST=has_hist,
        PRECISION=_precision(x.dtype, precision), ACC_DTYPE=acc_tl, num_warps=cfg.grad_w_warps,
    )
    return gw

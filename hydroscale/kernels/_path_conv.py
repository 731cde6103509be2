"""The public block-sparse causal path convolution, its autograd Function and backend choice."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import torch

from . import _reference as ref
from ._launch import get_launch_config, use_blocks
from ._layout import PathLayout
from ._row_target import RowTarget

try:  # Triton is optional: importing hydroscale.kernels must work without it
    from . import _triton_ops
except ImportError:  # pragma: no cover - depends on the environment
    _triton_ops = None

__all__ = ["BACKENDS", "RowTarget", "path_conv", "path_conv_into", "path_conv_sum",
           "path_conv_sum_into", "select_backend", "triton_available"]

logger = logging.getLogger(__name__)

ENV_VAR = "HYDROSCALE_KERNEL_BACKEND"
BACKENDS = ("torch", "triton")
PRECISIONS = ("ieee", "tf32", "tf32x3")
_TRITON_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def triton_available() -> bool:
    """Whether the Triton kernels can be imported."""
    return _triton_ops is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_backend(device: torch.device | str, explicit: str | None = None) -> str:
    """The kernel backend for tensors on ``device``: ``"torch"`` or ``"triton"``.

    ``explicit`` (``"auto"``/None means no choice), else ``$HYDROSCALE_KERNEL_BACKEND``, else
    Triton on CUDA when importable and torch otherwise.  Triton on CPU needs
    ``TRITON_INTERPRET=1`` (slow; for tests).
    """
    dev = torch.device(device)
    name = explicit if explicit not in (None, "auto") else os.environ.get(ENV_VAR) or None
    if name in (None, "auto"):
        return "triton" if dev.type == "cuda" and triton_available() else "torch"
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {BACKENDS} or 'auto'")
    if name == "triton":
        if not triton_available():
            raise RuntimeError(
                "backend 'triton' requested but triton is not importable; "
                "pip install 'hydroscale[triton]' or use backend='torch'"
            )
        if dev.type != "cuda" and not _interpreting():
            raise RuntimeError(
                f"backend 'triton' needs CUDA tensors, got device {dev}; set TRITON_INTERPRET=1 "
                "to run the kernels on CPU (slow) or use backend='torch'"
            )
    return name


def warm_up(device: torch.device | str) -> bool:
    """Load the kernel compiler's per-process state now, by one tiny Triton launch where
    :func:`select_backend` picks Triton: its cache key (a hash of the Triton installation,
    ~0.4 s on an H200 host), its back end's imports (~0.1 s), the driver and the launcher.
    A fresh worker process otherwise pays them in its first aggregation; it calls this on a
    thread while it builds its routers.  Returns whether a kernel was launched."""
    dev = torch.device(device)
    if dev.type != "cuda" or select_backend(dev) != "triton":
        return False
    from ._hash import hash_uniform

    hash_uniform(torch.zeros(1, dtype=torch.int64, device=dev), 0, 1, 0, backend="triton")
    return True


def _check(
    x: torch.Tensor, w: torch.Tensor, layout: PathLayout, hist: torch.Tensor | None
) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be [B, S, T], got {tuple(x.shape)}")
    if w.ndim != 2:
        raise ValueError(f"w must be [P, K], got {tuple(w.shape)}")
    if x.shape[1] != layout.n_src:
        raise ValueError(f"x must have S = layout.n_src = {layout.n_src} rows, got {x.shape[1]}")
    if w.shape[0] != layout.n_paths:
        raise ValueError(
            f"w must have P = layout.n_paths = {layout.n_paths} rows, got {w.shape[0]}"
        )
    if w.shape[1] < 1:
        raise ValueError(f"w needs at least one tap, got shape {tuple(w.shape)}")
    if not (x.is_floating_point() and w.is_floating_point()):
        raise TypeError(f"x and w must be floating point, got {x.dtype} and {w.dtype}")
    if x.device != w.device or x.device != layout.device:
        raise ValueError(
            f"x ({x.device}), w ({w.device}) and layout ({layout.device}) must share a device; "
            "use layout.to(device)"
        )
    if hist is not None:
        want = (x.shape[0], x.shape[1], w.shape[1] - 1)
        if tuple(hist.shape) != want:
            raise ValueError(f"hist must be [B, S, K - 1] = {want}, got {tuple(hist.shape)}")
        if hist.device != x.device:
            raise ValueError(f"hist is on {hist.device} but x is on {x.device}")


def _forward_term(x, w, layout, hist, backend, precision, out=None):
    """One term's forward: a new output, or added into ``out`` (in place, no temporary with
    the block kernels)."""
    if out is None:
        if backend == "triton":
            return _triton_ops.path_conv_forward(x, w, layout, hist, precision=precision)
        return ref.torch_forward(x, w, layout, hist)
    if backend == "triton" and _triton_ops.path_conv_forward_into(
            x, w, layout, hist, dataclasses.replace(RowTarget.whole(out), accumulate=True)):
        return out
    out += _forward_term(x, w, layout, hist, backend, precision).to(out.dtype)
    return out


def _backward_term(grad_y, x, w, hist, layout, backend, precision, need_x, need_w, need_hist,
                   into=None):
    """``(grad_x, grad_w, grad_hist)`` of one term (None where not needed); ``grad_y`` is
    ``[B, D, T]`` or a :class:`RowTarget` holding it in two parts, which the block kernels
    read where it is (the other algorithms get it joined).  With ``into`` (and ``need_x``)
    ``grad_x`` is added to ``into`` in place and None is returned for it."""
    if isinstance(grad_y, RowTarget) and not (
            backend == "triton" and use_blocks(get_launch_config(), w.shape[1])):
        grad_y = grad_y.joined(layout.n_dst)
    into = into if need_x else None
    gx = gw = gh = None
    if backend == "triton":
        if need_x or need_hist:
            gx, gh = _triton_ops.path_conv_backward_input(
                grad_y, w, layout, x.shape[1], want_hist=need_hist, precision=precision,
                into=into,
            )
        if need_w:
            gw = _triton_ops.path_conv_backward_weight(
                grad_y, x, layout, w.shape[1], hist, precision=precision
            )
    else:
        if need_x or need_hist:
            gx, gh = ref.torch_backward_input(grad_y.to(x.dtype), w, layout)
            if into is not None:
                into += gx.to(into.dtype)
        if need_w:
            gw = ref.torch_backward_weight(grad_y.to(x.dtype), x, layout, w.shape[1], hist)
    gx = gx.to(x.dtype) if need_x and into is None else None
    gh = gh.to(hist.dtype) if need_hist else None
    gw = gw.to(w.dtype) if need_w else None
    return gx, gw, gh


class _PathConvFunction(torch.autograd.Function):
    """``y = Σ_i conv(x_i, w_i, layout_i, hist_i)`` over one or more terms into one output
    (the terms' tensors flattened as ``x_0, w_0, hist_0, x_1, ...``): a sum of convolutions
    with no sum op, and each term's backward reads the one output gradient."""

    @staticmethod
    def forward(ctx, layouts, backend, precision, *flat):  # noqa: D102
        ctx.layouts, ctx.backend, ctx.precision = layouts, backend, precision
        ctx.save_for_backward(*flat)
        y = None
        for i, layout in enumerate(layouts):
            x, w, hist = flat[3 * i : 3 * i + 3]
            y = _forward_term(x, w, layout, hist, backend, precision, out=y)
        return y

    @staticmethod
    def backward(ctx, grad_y):  # noqa: D102
        return (None, None, None, *_backward_terms(ctx, grad_y, 3))


def _backward_terms(ctx, grad, first_input: int, read_in_place=(), into=None) -> list:
    """The gradients of every term's ``(x, w, hist)`` (flattened inputs from ``first_input``
    of the Function) from the output gradient ``grad``.  The terms flagged in
    ``read_in_place`` read their input from ``ctx.first`` (not saved) and add its gradient
    into ``into`` in place (None is returned for it)."""
    flat = ctx.saved_tensors
    grads: list = []
    for i, layout in enumerate(ctx.layouts):
        x, w, hist = flat[3 * i : 3 * i + 3]
        need = ctx.needs_input_grad[first_input + 3 * i : first_input + 3 * i + 3]
        in_place = i < len(read_in_place) and read_in_place[i]
        if in_place:
            x, need = ctx.first, (into is not None, *need[1:])
        grads += _backward_term(grad, x, w, hist, layout, ctx.backend, ctx.precision, *need,
                                into=into if in_place else None)
    return grads


class _PathConvSumIntoFunction(torch.autograd.Function):
    """:class:`_PathConvFunction` with the rows written (added) in place into a
    :class:`RowTarget`'s two tensors (marked dirty and returned); the backward reads the
    output gradient from their two gradients where they are, and passes those through to the
    tensors' earlier values.

    A term flagged in ``read_in_place`` (its input given as None) reads its input rows from
    ``first`` itself (rows that earlier calls wrote and later ones will not overwrite): its
    input is not saved (a saved ``first`` would fail autograd's version check once a later
    call writes other rows of it), and its input gradient is added in place into
    ``first``'s gradient, which is passed on: no gradient of ``first``'s size per call."""

    @staticmethod
    def forward(ctx, first, second, target, layouts, backend, precision,  # noqa: D102
                read_in_place, *flat):
        ctx.rows = (target.first_row, target.second_row, target.split)
        ctx.layouts, ctx.backend, ctx.precision = layouts, backend, precision
        ctx.read_in_place = read_in_place
        # detached: the same storage, without the cycle ctx -> first -> its grad_fn -> ctx
        ctx.first = first.detach() if any(read_in_place) else None
        ctx.save_for_backward(*flat)
        terms = [(first if flat[3 * i] is None else flat[3 * i], flat[3 * i + 1], layout,
                  flat[3 * i + 2]) for i, layout in enumerate(layouts)]
        if not (len(terms) == 2 and backend == "triton"
                and _triton_ops.path_conv_forward_pair_into(*terms, target)):
            for i, term in enumerate(terms):
                _write_term(*term, dataclasses.replace(
                    target, accumulate=target.accumulate or i > 0), backend, precision)
        ctx.mark_dirty(first, second)
        return first, second

    @staticmethod
    def backward(ctx, g_first, g_second):  # noqa: D102
        r1, r2, split = ctx.rows
        into = None
        if any(ctx.read_in_place) and ctx.needs_input_grad[0]:
            # the gradient of first's earlier value: this one plus what the in-place reads add
            g_first = g_first.contiguous()
            into = g_first
        # read in place by the block kernels (the expanded gradient of a sum too)
        grad = RowTarget(g_first, r1, g_second, r2, split)
        grads = _backward_terms(ctx, grad, 7, ctx.read_in_place, into)
        return (g_first, g_second, None, None, None, None, None, *grads)


def path_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    layout: PathLayout,
    hist: torch.Tensor | None = None,
    backend: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    r"""Block-sparse causal convolution along paths (differentiable in ``x``, ``w``, ``hist``).

    .. math::
        y[b, d, t] = \sum_{p:\,dst_p = d} \sum_{k=0}^{K-1} w[p, k]\; xx[b, src_p, t - k]

    where ``xx`` is ``x`` preceded along time by ``hist`` (the last ``K - 1`` steps of the
    previous time chunk; zeros when None), so that chunked evaluation equals unchunked.

    Parameters
    ----------
    x : Tensor ``[B, S, T]``
        Input signal per source row (e.g. runoff, m³/s per step).
    w : Tensor ``[P, K]``
        Causal kernel of each path of ``layout`` (tap ``k`` = delay of ``k`` steps).
    layout : PathLayout
        The paths (``S = layout.n_src``, ``D = layout.n_dst``, ``P = layout.n_paths``).
    hist : Tensor ``[B, S, K - 1]``, optional
        Input history: ``hist[..., j]`` is the input at time ``j - (K - 1)``.
    backend : {"auto", "torch", "triton"}
        See :func:`select_backend`.
    precision : {"ieee", "tf32", "tf32x3"}, optional
        Triton matmul precision for float32 inputs (default ``"tf32x3"``: float32 accuracy on
        tensor cores; ``"tf32"`` is faster but measured 1e-2 relative error on the 1M-reach
        workload).  bf16/fp16 inputs are multiplied in their precision with float32
        accumulation; float64 always uses ``"ieee"``.  It applies to the Toeplitz kernels only:
        the block kernels (``LaunchConfig.conv_algorithm``) always multiply-add in float32
        (float64 for float64 inputs).

    Returns
    -------
    Tensor ``[B, D, T]``
        Same dtype as ``x`` (float32 for bf16/fp16 inputs on the Triton backend).
    """
    x, w, hist, name, precision = _prepare(x, w, layout, hist, backend, precision)
    return _PathConvFunction.apply((layout,), name, precision, x, w, hist)


def path_conv_sum(
    terms: Sequence[tuple[torch.Tensor, torch.Tensor, PathLayout, torch.Tensor | None]],
    backend: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    r"""The sum of several path convolutions into the same destination rows, differentiable.

    ``terms`` are ``(x_i [B, S_i, T], w_i [P_i, K], layout_i, hist_i)`` as for
    :func:`path_conv`, their layouts with the same ``D = n_dst``; returns
    ``y [B, D, T] = Σ_i path_conv(x_i, w_i, layout_i, hist_i)``.  With the block kernels the
    later terms add into the first term's output in place, and the backward hands every term
    the same output gradient: no sum op, no temporary per term, no gradient copies.
    """
    layouts, name, precision, flat = _prepare_terms(terms, backend, precision, "path_conv_sum")
    return _PathConvFunction.apply(layouts, name, precision, *flat)


def path_conv_sum_into(
    terms: Sequence[tuple[torch.Tensor, torch.Tensor, PathLayout, torch.Tensor | None]],
    target: RowTarget,
    backend: str = "auto",
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`path_conv_sum` with its rows written (added, with ``target.accumulate``) in
    place into ``target``'s two tensors, differentiable; returns ``(target.first,
    target.second)`` (use these: they carry the gradient).

    The backward reads the output gradient from the two tensors' gradients where they are
    (the block kernels take it in two parts: no tensor joins them) and passes those
    gradients through to the tensors' earlier values unchanged.  That is exact for rows
    added to, and for rows overwritten whose earlier values were never used (e.g. a fresh
    output filled range by range): do not overwrite rows that something already read.
    ``target.first`` and ``target.second`` must be different tensors (a zero-row tensor for
    an unused part).

    A term's input may be ``target.first`` itself (e.g. a buffer of transfer rows, each
    written by one call and read by later ones): its rows are read in place, and their
    gradient is added in place into ``target.first``'s gradient rather than returned as a
    tensor of its full size per call.  The rows a call reads must not be among those it
    writes, nor be written by any later call.
    """
    layouts, name, precision, flat = _prepare_terms(terms, backend, precision,
                                                    "path_conv_sum_into", same_dtype=False)
    _check_target(target, layouts[0].n_dst, flat[0])
    if target.steps is not None and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (*flat, target.first, target.second)):
        raise ValueError("RowTarget.steps writes part of the output: a forward without "
                         "gradients only (call it under torch.no_grad())")
    if target.first is target.second:
        raise ValueError("path_conv_sum_into needs two different target tensors (give a "
                         "zero-row tensor as the unused one)")
    read_in_place = tuple(flat[3 * i] is target.first for i in range(len(layouts)))
    flat = [None if j % 3 == 0 and read_in_place[j // 3] else t for j, t in enumerate(flat)]
    return _PathConvSumIntoFunction.apply(target.first, target.second, target, layouts, name,
                                          precision, read_in_place, *flat)


def _prepare_terms(terms, backend, precision, caller, same_dtype=True):
    """``(layouts, backend, precision, [x_0, w_0, hist_0, x_1, ...])`` of checked terms that
    share batch, time steps, destination rows and (if ``same_dtype``) dtype."""
    if not terms:
        raise ValueError(f"{caller} needs at least one term")
    prepared, layouts, name = [], [], None
    for i, (x, w, layout, hist) in enumerate(terms):
        x, w, hist, name_i, precision_i = _prepare(x, w, layout, hist, backend, precision)
        if i and (name_i != name or layout.n_dst != layouts[0].n_dst
                  or (x.shape[0], x.shape[2]) != (prepared[0].shape[0], prepared[0].shape[2])
                  or (same_dtype and x.dtype != prepared[0].dtype)):
            raise ValueError(
                f"{caller} term {i} (x {tuple(x.shape)} {x.dtype}, {layout.n_dst} "
                f"destinations) does not match term 0 (x {tuple(prepared[0].shape)} "
                f"{prepared[0].dtype}, {layouts[0].n_dst} destinations): the terms need the "
                "same batch, time steps and destination rows (and dtype, but for "
                "path_conv_sum_into)")
        name, precision = name_i, precision_i
        prepared += [x, w, hist]
        layouts.append(layout)
    return tuple(layouts), name, precision, prepared


def _prepare(x, w, layout, hist, backend, precision):
    """Checked, contiguous inputs in the backend's dtypes, the backend and the precision."""
    _check(x, w, layout, hist)
    name = select_backend(x.device, backend)
    if name == "triton":
        if x.dtype not in _TRITON_DTYPES:
            raise TypeError(f"triton backend supports {_TRITON_DTYPES}, got x of {x.dtype}")
        if precision is None:
            precision = "tf32x3"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if w.dtype != x.dtype:
            w = w.to(x.dtype)
        if hist is not None and hist.dtype != x.dtype:
            hist = hist.to(x.dtype)
    else:
        w = w.to(x.dtype)
        if hist is not None:
            hist = hist.to(x.dtype)
    x = x.contiguous()
    w = w.contiguous()
    hist = hist.contiguous() if hist is not None else None
    return x, w, hist, name, precision


def path_conv_into(
    x: torch.Tensor,
    w: torch.Tensor,
    layout: PathLayout,
    target: RowTarget,
    hist: torch.Tensor | None = None,
    backend: str = "auto",
    precision: str | None = None,
) -> None:
    """:func:`path_conv` without gradients, its rows written (or added) into ``target`` in
    place: the block kernels store them there directly, so an inference pass needs no output
    tensor per call, no copy into a larger one and no separate sum of two calls.  Other
    algorithms and the torch backend compute the output and copy (add) it.

    Raises RuntimeError when gradients are being recorded for an input (use
    :func:`path_conv_sum_into`).
    """
    if torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, w, hist)):
        raise RuntimeError("path_conv_into records no gradients; use path_conv_sum_into (or "
                           "path_conv) for inputs that require grad, or call it under "
                           "torch.no_grad()")
    _check_target(target, layout.n_dst, x)
    with torch.no_grad():
        x, w, hist, name, precision = _prepare(x, w, layout, hist, backend, precision)
        _write_term(x, w, layout, hist, target, name, precision)


def _check_target(target: RowTarget, n: int, x: torch.Tensor) -> None:
    if not 0 <= target.split <= n:
        raise ValueError(f"RowTarget.split must lie in [0, {n}], got {target.split}")
    a, b = target.window(x.shape[2])
    if not 0 <= a <= b <= x.shape[2]:
        raise ValueError(f"RowTarget.steps must be (a, b) with 0 <= a <= b <= T={x.shape[2]}, "
                         f"got {target.steps}")
    for what, (t, row0, rows) in zip(("first", "second"), target.parts(n)):
        if t.ndim != 3 or t.shape[0] != x.shape[0] or t.shape[2] != x.shape[2] or not (
                0 <= row0 and row0 + rows <= t.shape[1]):
            raise ValueError(
                f"RowTarget.{what} {tuple(t.shape)} cannot take {rows} rows from row {row0} "
                f"of a [B={x.shape[0]}, T={x.shape[2]}] output")


def _write_term(x, w, layout, hist, target: RowTarget, backend, precision) -> None:
    """One term's rows written (added) into ``target``: by the block kernels in place, else
    computed and copied (added)."""
    if backend == "triton" and _triton_ops.path_conv_forward_into(x, w, layout, hist, target):
        return
    y = _forward_term(x, w, layout, hist, backend, precision)
    a, b = target.window(x.shape[2])
    d0 = 0
    for out, row0, rows in target.parts(layout.n_dst):
        dst, part = out[:, row0 : row0 + rows, a:b], y[:, d0 : d0 + rows, a:b]
        d0 += rows
        if target.accumulate:
            dst += part.to(dst.dtype)
        else:
            dst.copy_(part)

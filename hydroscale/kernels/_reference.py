"""Plain torch versions of the path convolution: the reference and the CPU backend.

They process the paths in chunks (grouped 1-D convolutions, then ``index_add_`` into the
output rows) so memory stays bounded at ``~_CHUNK_ELEMENTS`` per gathered tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._layout import PathLayout

__all__ = [
    "path_conv_reference",
    "torch_forward",
    "torch_backward_input",
    "torch_backward_weight",
]

_CHUNK_ELEMENTS = 1 << 24


def _chunks(n_paths: int, per_path: int) -> tuple[range, int]:
    step = max(1, _CHUNK_ELEMENTS // max(1, per_path))
    return range(0, n_paths, step), step


def _extended(x: torch.Tensor, hist: torch.Tensor | None, k: int) -> torch.Tensor:
    """``xx = [hist, x]`` along time, ``[B, S, K - 1 + T]`` (zeros when ``hist`` is None)."""
    if hist is None:
        return F.pad(x, (k - 1, 0))
    return torch.cat([hist.to(x.dtype), x], dim=-1)


def torch_forward(
    x: torch.Tensor, w: torch.Tensor, layout: PathLayout, hist: torch.Tensor | None = None
) -> torch.Tensor:
    """``y[b, d, t] = Σ_{p: dst_p = d} Σ_k w[p, k] xx[b, src_p, t - k]``, ``[B, D, T]``.

    Differentiable through torch autograd (this is :func:`path_conv_reference`).
    """
    batch, _, n_t = x.shape
    k = w.shape[1]
    xx = _extended(x, hist, k)
    wf = w.to(x.dtype).flip(-1).unsqueeze(1)  # conv1d correlates: flip for a convolution
    y = x.new_zeros(batch, layout.n_dst, n_t)
    starts, step = _chunks(layout.n_paths, batch * (n_t + k - 1))
    for p0 in starts:
        src = layout.src[p0 : p0 + step]
        dst = layout.dst[p0 : p0 + step]
        part = F.conv1d(xx[:, src], wf[p0 : p0 + step], groups=src.numel())
        y = y.index_add(1, dst, part)
    return y


def torch_backward_input(
    grad_y: torch.Tensor, w: torch.Tensor, layout: PathLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients w.r.t. ``x`` ``[B, S, T]`` and ``hist`` ``[B, S, K - 1]``.

    ``g[b, s, t] = Σ_{p: src_p = s} Σ_k w[p, k] grad_y[b, dst_p, t + k]`` for
    ``t in [-(K-1), T)``; the negative times are the history part.
    """
    batch, _, n_t = grad_y.shape
    k = w.shape[1]
    gyp = F.pad(grad_y, (k - 1, k - 1))
    wc = w.to(grad_y.dtype).unsqueeze(1)
    g = grad_y.new_zeros(batch, layout.n_src, n_t + k - 1)
    starts, step = _chunks(layout.n_paths, batch * (n_t + 2 * k - 2))
    for p0 in starts:
        src = layout.src[p0 : p0 + step]
        dst = layout.dst[p0 : p0 + step]
        part = F.conv1d(gyp[:, dst], wc[p0 : p0 + step], groups=dst.numel())
        g.index_add_(1, src, part)
    return g[..., k - 1 :], g[..., : k - 1]


def torch_backward_weight(
    grad_y: torch.Tensor, x: torch.Tensor, layout: PathLayout, k: int,
    hist: torch.Tensor | None = None,
) -> torch.Tensor:
    """``grad_w[p, k] = Σ_{b, t} grad_y[b, dst_p, t] xx[b, src_p, t - k]``, ``[P, K]``."""
    batch, _, n_t = x.shape
    xx = _extended(x, hist, k)
    gw = x.new_zeros(layout.n_paths, k)
    starts, step = _chunks(layout.n_paths, batch * k * n_t)
    for p0 in starts:
        src = layout.src[p0 : p0 + step]
        dst = layout.dst[p0 : p0 + step]
        win = xx[:, src].unfold(-1, n_t, 1)  # [B, Pc, K, T]; row j is lag K - 1 - j
        corr = torch.einsum("bpjt,bpt->pj", win, grad_y[:, dst])
        gw[p0 : p0 + step] = corr.flip(-1)
    return gw


def path_conv_reference(
    x: torch.Tensor, w: torch.Tensor, layout: PathLayout, hist: torch.Tensor | None = None
) -> torch.Tensor:
    """The path convolution in plain torch ops, differentiable by torch autograd.

    Same contract as :func:`~hydroscale.kernels.path_conv`; used by the tests as the reference
    of the hand-written backward passes, and as the building block of the torch backend.
    """
    return torch_forward(x, w, layout, hist)

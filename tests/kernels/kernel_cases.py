"""Helpers of the kernel tests: where Triton runs, a dense float64 brute-force oracle, random
path sets."""

from __future__ import annotations

import os

import pytest
import torch

from hydroscale.kernels import triton_available


def _triton_device() -> str | None:
    """Where the Triton kernels can run here: CUDA, the CPU interpreter, or nowhere."""
    if not triton_available():
        return None
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "cpu"
    return None


TRITON_DEVICE = _triton_device()
requires_triton = pytest.mark.skipif(
    TRITON_DEVICE is None, reason="needs triton with CUDA, or TRITON_INTERPRET=1 on CPU"
)


def brute_force(x, w, src, dst, n_dst, hist=None):
    """Dense float64 loop over paths and taps:
    y[b, d, t] = Σ_{p: dst_p = d} Σ_k w[p, k] xx[b, src_p, t - k]."""
    x = x.detach().double().cpu()
    w = w.detach().double().cpu()
    batch, n_srcs, n_t = x.shape
    n_taps = w.shape[1]
    if hist is None:
        hist = torch.zeros(batch, n_srcs, n_taps - 1, dtype=torch.float64)
    xx = torch.cat([hist.detach().double().cpu(), x], dim=-1)
    y = torch.zeros(batch, n_dst, n_t, dtype=torch.float64)
    for p in range(w.shape[0]):
        for k in range(n_taps):
            start = n_taps - 1 - k
            y[:, int(dst[p]), :] += w[p, k] * xx[:, int(src[p]), start : start + n_t]
    return y


def random_paths(n_src, n_dst, n_paths, seed, empty_dst=(), heavy_dst=None, heavy=0):
    """Random (src, dst) pairs; ``empty_dst`` rows get no path, ``heavy_dst`` gets ``heavy``."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([d for d in range(n_dst) if d not in set(empty_dst)])
    dst = allowed[torch.randint(0, allowed.numel(), (n_paths,), generator=g)]
    if heavy_dst is not None:
        dst = torch.cat([dst, torch.full((heavy,), heavy_dst)])
    src = torch.randint(0, n_src, (dst.numel(),), generator=g)
    return src, dst

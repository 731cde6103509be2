"""Fixtures of the kernel tests (helpers live in ``kernel_cases.py``)."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import random_paths

from hydroscale.kernels import PathLayout


@pytest.fixture
def make_case():
    """A random case: layout, x, w, hist (float64, CPU)."""

    def make(batch, n_src, n_dst, n_t, n_taps, n_paths, seed=0, **kw):
        src, dst = random_paths(n_src, n_dst, n_paths, seed, **kw)
        g = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(batch, n_src, n_t, generator=g, dtype=torch.float64)
        w = torch.randn(src.numel(), n_taps, generator=g, dtype=torch.float64)
        hist = torch.randn(batch, n_src, n_taps - 1, generator=g, dtype=torch.float64)
        layout = PathLayout.from_pairs(src, dst, n_src, n_dst)
        return layout, x, w, hist, src, dst

    return make

"""The Triton kernel of :func:`~._hash.hash_uniform`: one program per block of values."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._hash import _C_REACH, _C_SEED, _C_STEP, _M32, _MUL1, _MUL2


@triton.jit
def _hash_uniform_kernel(reach_ptr, out_ptr, n_values, t0, steps, seed_term,
                         C_REACH: tl.constexpr, C_STEP: tl.constexpr, MUL1: tl.constexpr,
                         MUL2: tl.constexpr, M32: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    ok = i < n_values
    row = i // steps
    t = (i - row * steps) + t0
    r = tl.load(reach_ptr + row, mask=ok, other=0)
    x = (r * C_REACH + t * C_STEP + seed_term) & M32
    x = x ^ (x >> 16)
    x = (x * MUL1) & M32
    x = x ^ (x >> 15)
    x = (x * MUL2) & M32
    x = x ^ (x >> 16)
    tl.store(out_ptr + i, (x >> 8).to(tl.float32) * (1.0 / 16777216.0), mask=ok)


def hash_uniform_triton(reach: torch.Tensor, t0: int, steps: int, seed: int) -> torch.Tensor:
    """``[n, steps]`` float32 for int64 ``reach [n]`` (contiguous), steps from ``t0``."""
    n = int(reach.numel())
    out = torch.empty(n, steps, device=reach.device, dtype=torch.float32)
    total, block = n * steps, 1024
    seed_term = (int(seed) * _C_SEED) & _M32
    _hash_uniform_kernel[(triton.cdiv(total, block),)](
        reach, out, total, int(t0), int(steps), seed_term, C_REACH=_C_REACH, C_STEP=_C_STEP,
        MUL1=_MUL1, MUL2=_MUL2, M32=_M32, BLOCK=block)
    return out

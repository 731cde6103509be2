"""Uniform ``[0, 1)`` float32 numbers from a 32-bit counter hash of (seed, reach, step): the
synthetic runoff of benchmarks and tests, the same value for a reach and step whatever the
device, partition or time chunk.

:func:`hash_uniform` runs one fused Triton kernel on CUDA (a write of 4 bytes per value:
synthetic runoff generation no longer costs a dozen ``[n, T]`` int64 passes next to
routing) and :func:`hash_uniform_reference`, the same arithmetic in torch int64 ops,
elsewhere; both give the same bits.
"""

from __future__ import annotations

import torch

__all__ = ["hash_uniform", "hash_uniform_reference"]

_M32 = 0xFFFFFFFF
_C_REACH, _C_STEP, _C_SEED = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_MUL1, _MUL2 = 0x7FEB352D, 0x846CA68B


def hash_uniform_reference(reach: torch.Tensor, t0: int, t1: int, seed: int) -> torch.Tensor:
    """``[n, t1 - t0]`` float32 in ``[0, 1)`` for reach indices ``reach [n]`` and steps
    ``t0:t1`` (the "lowbias32" finaliser in int64 arithmetic masked to 32 bits)."""
    t = torch.arange(t0, t1, device=reach.device, dtype=torch.int64)
    x = (reach.to(torch.int64)[:, None] * _C_REACH + t[None, :] * _C_STEP
         + (int(seed) & _M32) * _C_SEED) & _M32
    x ^= x >> 16
    x = (x * _MUL1) & _M32
    x ^= x >> 15
    x = (x * _MUL2) & _M32
    x ^= x >> 16
    return (x >> 8).to(torch.float32) * (1.0 / 16777216.0)


def hash_uniform(reach: torch.Tensor, t0: int, t1: int, seed: int,
                 backend: str | None = None) -> torch.Tensor:
    """:func:`hash_uniform_reference`'s values; one Triton kernel on CUDA (``backend``
    ``"triton"`` forces it, e.g. under ``TRITON_INTERPRET=1``; ``"torch"`` the reference)."""
    use = backend or ("triton" if reach.is_cuda else "torch")
    n, steps = int(reach.numel()), int(t1) - int(t0)
    if use == "torch" or n == 0 or steps <= 0:
        return hash_uniform_reference(reach, t0, t1, seed)
    from ._triton_hash import hash_uniform_triton

    return hash_uniform_triton(reach.to(torch.int64).contiguous(), int(t0), steps,
                               int(seed) & _M32)

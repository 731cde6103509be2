"""The synthetic-runoff hash: the Triton kernel (run by the interpreter on CPU) gives the same
bits as the torch int64 reference, which matches values computed by hand from the
"lowbias32" finaliser in Python integers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.kernels import hash_uniform, hash_uniform_reference

M = 0xFFFFFFFF


def _by_hand(reach: int, t: int, seed: int) -> float:
    x = (reach * 0x9E3779B1 + t * 0x85EBCA77 + (seed & M) * 0xC2B2AE3D) & M
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M
    x ^= x >> 15
    x = (x * 0x846CA68B) & M
    x ^= x >> 16
    return (x >> 8) / 16777216.0


def test_reference_matches_python_integers():
    reach = torch.tensor([0, 1, 7, 2**31 + 5, 9_999_999])
    got = hash_uniform_reference(reach, 3, 9, 12345).numpy()
    want = np.array([[_by_hand(int(r), t, 12345) for t in range(3, 9)] for r in reach])
    assert np.array_equal(got, want.astype(np.float32))
    assert got.min() >= 0.0 and got.max() < 1.0


@pytest.mark.parametrize("n, t0, t1, seed", [(1, 0, 1, 0), (37, 5, 1030, 7), (300, 0, 9, 2**40)])
def test_triton_kernel_equals_reference(n, t0, t1, seed):
    pytest.importorskip("triton")
    # on a GPU the compiled kernel; on a CPU the interpreter (TRITON_INTERPRET=1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    reach = torch.as_tensor(np.random.default_rng(n).integers(0, 2**33, n), device=dev)
    want = hash_uniform_reference(reach, t0, t1, seed)
    got = hash_uniform(reach, t0, t1, seed, backend="triton")
    assert got.dtype == torch.float32 and got.shape == (n, t1 - t0)
    assert torch.equal(got, want)

"""extend_recursive: path kernels extended by a first-order recursive filter, against a
direct convolution with the filter's impulse response (numpy), and its gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_cases import TRITON_DEVICE, requires_triton

from hydroscale.irf import irf_kernel, irf_recursion
from hydroscale.kernels import extend_recursive, extend_recursive_reference


def _case(n, m, n_reach, length, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    prev = torch.rand(n, length, generator=g, dtype=dtype)
    k = 0.02 + 0.2 * torch.rand(n_reach, generator=g, dtype=torch.float64)
    x = 0.3 * torch.rand(n_reach, generator=g, dtype=torch.float64)
    params = torch.stack([k, x], -1)
    parent = torch.randperm(n, generator=g)[:m]  # every row extended at most once
    slot = torch.randint(0, n_reach, (m,), generator=g)
    return prev, params, parent, slot


def _direct(prev, params, parent, slot, substeps):
    """np.convolve of each parent row with the Muskingum kernel of its reach, cut to L."""
    length = prev.shape[1]
    h = irf_kernel("muskingum", params, length, substeps, allow_unstable=True).numpy()
    p = prev.detach().double().numpy()
    rows = [np.convolve(p[a], h[b])[:length] for a, b in zip(parent.tolist(), slot.tolist())]
    return np.stack(rows) if rows else np.zeros((0, length))


@pytest.mark.parametrize("length", [1, 7, 144, 300])
def test_reference_equals_direct_convolution(length):
    prev, params, parent, slot = _case(9, 7, 4, length, seed=length)
    coef = irf_recursion("muskingum", params, 24, allow_unstable=True)
    got = extend_recursive_reference(prev, coef, parent, slot)
    np.testing.assert_allclose(got.numpy(), _direct(prev, params, parent, slot, 24),
                               rtol=1e-12, atol=1e-14)


def test_reference_gradcheck():
    prev, params, parent, slot = _case(5, 4, 3, 9, seed=1)
    coef = irf_recursion("muskingum", params, 4, allow_unstable=True)
    assert torch.autograd.gradcheck(
        lambda a, c: extend_recursive_reference(a, c, parent, slot),
        (prev.requires_grad_(True), coef.requires_grad_(True)))


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n, m, length", [(13, 11, 5), (20, 17, 144), (9, 8, 300), (3, 0, 6)])
def test_triton_equals_direct_convolution_and_reference_gradients(dtype, n, m, length):
    """Values against np.convolve; gradients w.r.t. the kernels and the coefficients against
    autograd through the tap-by-tap reference (several rows per program, the last program
    part-full, one and two time chunks, no rows at all)."""
    dev = TRITON_DEVICE
    prev, params, parent, slot = _case(n, m, 6, length, seed=n + length)
    coef = irf_recursion("muskingum", params, 24, allow_unstable=True)
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    a = prev.to(dev, dtype).detach().requires_grad_(True)
    c = coef.to(dev, dtype).detach().requires_grad_(True)
    got = extend_recursive(a, c, parent.to(dev), slot.to(dev), backend="triton")
    want = _direct(prev, params, parent, slot, 24)
    np.testing.assert_allclose(got.detach().double().cpu().numpy(), want, **tol)
    w = torch.randn(m, length, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (got * w.to(dev, dtype)).sum().backward()
    a0 = prev.clone().requires_grad_(True)
    c0 = coef.clone().requires_grad_(True)
    (extend_recursive_reference(a0, c0, parent, slot) * w).sum().backward()
    np.testing.assert_allclose(a.grad.double().cpu().numpy(), a0.grad.numpy(), **tol)
    scale = float(c0.grad.abs().max()) if m else 1.0
    np.testing.assert_allclose(c.grad.double().cpu().numpy() / scale,
                               c0.grad.numpy() / scale, **tol)
    # rows of prev that no path extends get no gradient
    spare = np.setdiff1d(np.arange(n), parent.numpy())
    assert float(a.grad[torch.as_tensor(spare, device=dev)].abs().sum()) == 0.0


@requires_triton
def test_triton_gradcheck():
    prev, params, parent, slot = _case(6, 5, 3, 20, seed=4)
    coef = irf_recursion("muskingum", params, 4, allow_unstable=True)
    dev = TRITON_DEVICE
    assert torch.autograd.gradcheck(
        lambda a, c: extend_recursive(a, c, parent.to(dev), slot.to(dev), backend="triton"),
        (prev.to(dev).requires_grad_(True), coef.to(dev).requires_grad_(True)))


def test_bad_shapes_are_named():
    prev, params, parent, slot = _case(4, 3, 2, 5, seed=0)
    coef = irf_recursion("muskingum", params, 4, allow_unstable=True)
    with pytest.raises(ValueError, match=r"coef \[R, 3\]"):
        extend_recursive(prev, coef[:, :2], parent, slot, backend="torch")
    with pytest.raises(ValueError, match="share a dtype"):
        extend_recursive(prev.float(), coef, parent, slot, backend="torch")

"""The level-pool Triton loop (hydroscale.kernels.level_pool_steps, through
route_level_pool(backend="triton")) against the torch loop of route_level_pool on hand-built
cases (spill, orifice only, empty start, full start, overtopping) and random inflow; the
torch-fallback backward against the torch loop's autograd.  On CPU under TRITON_INTERPRET=1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_cases import TRITON_DEVICE, requires_triton

from hydroscale.kernels import level_pool_steps
from hydroscale.routing import LEVEL_POOL_PARAMS, route_level_pool

DT = 3600.0 / 7  # not a float32 number: the kernel must step with the float64 value


def _params(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    cols = dict(area=rng.uniform(2e5, 2e6, n), max_elevation=np.full(n, 12.0),
                weir_elevation=rng.uniform(9.0, 11.0, n), weir_coefficient=rng.uniform(0.3, 1.6, n),
                weir_length=rng.uniform(5.0, 30.0, n), dam_length=rng.uniform(5.0, 20.0, n),
                orifice_elevation=rng.uniform(3.0, 6.0, n),
                orifice_coefficient=rng.uniform(0.1, 0.7, n), orifice_area=rng.uniform(0.5, 3, n))
    return torch.tensor(np.stack([cols[c] for c in LEVEL_POOL_PARAMS], 1))


def _cases(seed: int = 0):
    """Lakes: 0 spilling over its weir, 1 orifice only (below the weir), 2 empty (below the
    orifice, filling), 3 full (above the maximum: overtopping), the rest random."""
    n = 7
    p = _params(n, seed)
    h0 = torch.tensor([11.5, 7.0, 2.0, 12.8, 9.0, 10.0, 6.0], dtype=torch.float64)
    rng = np.random.default_rng(seed + 1)
    s = 37
    x = torch.tensor(rng.uniform(0.0, 40.0, (2, n, s)))
    x[:, 2] = 60.0  # the empty lake fills
    x[:, 1, 10:20] = 0.0  # the orifice-only lake drains for a while
    return x, p, h0


@requires_triton
def test_kernel_equals_torch_loop():
    x, p, h0 = _cases()
    dev = TRITON_DEVICE
    want, h_want = route_level_pool(x, p, DT, h0, backend="torch")
    got, h_got = route_level_pool(x.to(dev), p.to(dev), DT, h0.to(dev), backend="triton")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_got.cpu(), h_want, rtol=1e-12, atol=1e-12)
    # the cases are what they say: spill, orifice only, filling, overtopping
    assert h0[0] > p[0, 2] and float(want[0, 0, 0]) > 0
    assert h0[2] < p[2, 6] and float(want[0, 2, 0]) == 0.0 and h_want[0, 2] > h0[2]
    assert h0[3] > p[3, 1]
    # mass balance closes: A (H_end - H_0) = (sum inflow - sum outflow) dt
    area = p[:, 0]
    torch.testing.assert_close(area * (h_got.cpu() - h0), (x - got.cpu()).sum(-1) * DT,
                               rtol=1e-9, atol=1e-6)


@requires_triton
def test_kernel_reads_and_writes_through_strides():
    """A time-major inflow ([B, S, L] transposed) and a time-major output buffer."""
    x, p, h0 = _cases(3)
    dev = TRITON_DEVICE
    want, h_want = route_level_pool(x, p, DT, h0, backend="torch")
    tm = x.transpose(1, 2).contiguous().to(dev).transpose(1, 2)  # strides (S L, 1, L)
    out = torch.empty(2, x.shape[2], x.shape[1], dtype=torch.float64,
                      device=dev).transpose(1, 2)
    got, h_got = level_pool_steps(tm, p.to(dev), DT, h0.to(dev).expand(2, -1), out=out)
    assert got.data_ptr() == out.data_ptr() and got.stride() == out.stride()
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_got.cpu(), h_want, rtol=1e-12, atol=1e-12)


@requires_triton
@pytest.mark.parametrize("start", ["cases", "tie"])
def test_adjoint_kernel_equals_torch_autograd(start):
    """Every parameter's, the inflow's and the start level's gradient; "tie": lakes starting
    exactly full (the weir head's min at its kink, torch splits the gradient)."""
    x, p, h0 = _cases(5)
    x = x[:, :, :12]
    if start == "tie":
        h0 = p[:, 1].clone()
    dev = TRITON_DEVICE
    w = torch.linspace(0.5, 1.5, 12, dtype=torch.float64)

    def grads(backend: str, device: str):
        xl = x.clone().to(device).requires_grad_(True)
        pl = p.clone().to(device).requires_grad_(True)
        hl = h0.clone().to(device).requires_grad_(True)
        q, h = route_level_pool(xl, pl, DT, hl, backend=backend)
        ((q * w.to(device)).sum() + h.sum()).backward()
        return [t.grad.cpu() for t in (xl, pl, hl)]

    for got, want in zip(grads("triton", dev), grads("torch", "cpu")):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kernel_checks_its_inputs():
    x, p, h0 = _cases()
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match="float64"):
        level_pool_steps(x.float(), p, DT, h0.expand(2, -1))
    with pytest.raises(ValueError, match=r"params must be \[L=7, 9\]"):
        level_pool_steps(x, p[:, :8], DT, h0.expand(2, -1))

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from hydroscale.irf import (
    IRFSpec,
    UnstableParametersError,
    average_substeps,
    from_bounded,
    get_irf,
    irf_kernel,
    list_irfs,
    muskingum_coefficients,
    register_irf,
    spread_to_substeps,
    substep_kernel_to_step,
    to_bounded,
)

f64 = torch.float64


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=f64)


def _box_average_of_cdf(cdf, k: int, dt: float) -> float:
    """(1/dt) ∫_{k dt}^{(k+1) dt} [F(t) - F(t - dt)] dt by adaptive quadrature."""
    g = lambda t: cdf(t) - (cdf(t - dt) if t > dt else 0.0)  # noqa: E731
    val, _ = integrate.quad(g, k * dt, (k + 1) * dt, epsabs=1e-13, epsrel=1e-12, limit=200)
    return val / dt


@pytest.mark.parametrize("k,x,f", [(2.0, 0.2, 1), (0.1, 0.25, 24), (1.3, 0.0, 3), (0.5, 0.5, 1)])
def test_muskingum_matches_difference_equation(k: float, x: float, f: int) -> None:
    n = 80
    # the impulse response equals the recursion whatever the signs of the coefficients
    h = irf_kernel("muskingum", {"k": _t(k), "x": _t(x)}, n, f, allow_unstable=True)[0].numpy()
    dt = 1.0 / f
    den = 2 * k * (1 - x) + dt
    c0, c1, c2 = (dt - 2 * k * x) / den, (dt + 2 * k * x) / den, (2 * k * (1 - x) - dt) / den
    inflow = np.zeros(n)
    inflow[0] = 1.0
    q = np.zeros(n)
    q[0] = c0 * inflow[0]
    for t in range(n - 1):
        q[t + 1] = c0 * inflow[t + 1] + c1 * inflow[t] + c2 * q[t]
    np.testing.assert_allclose(h, q, rtol=0, atol=1e-12)
    got = [float(c) for c in muskingum_coefficients(_t(k), _t(x), dt)]
    np.testing.assert_allclose(got, [c0, c1, c2], rtol=1e-14)


@pytest.mark.parametrize("tau,f", [(0.7, 1), (2.5, 4), (0.05, 24)])
def test_linear_storage_closed_form(tau: float, f: int) -> None:
    n = 60
    h = irf_kernel("linear_storage", {"tau": _t(tau)}, n, f)[0].numpy()
    dt = 1.0 / f
    a = math.exp(-dt / tau)
    want = np.empty(n)
    want[0] = 1 - tau / dt * (1 - a)
    want[1:] = tau / dt * (1 - a) ** 2 * a ** np.arange(n - 1)
    np.testing.assert_allclose(h, want, rtol=1e-9, atol=1e-13)


def test_nash_cascade_one_reservoir_is_linear_storage() -> None:
    h1 = irf_kernel("nash_cascade", {"tau": _t(1.7), "n": _t(1.0)}, 40, 3)
    h2 = irf_kernel("linear_storage", {"tau": _t(1.7)}, 40, 3)
    torch.testing.assert_close(h1, h2, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("tau,n,f", [(0.8, 3.0, 2), (1.5, 2.5, 1)])
def test_nash_cascade_vs_quadrature(tau: float, n: float, f: int) -> None:
    taps = 25
    h = irf_kernel("nash_cascade", {"tau": _t(tau), "n": _t(n)}, taps, f)[0].numpy()
    cdf = stats.gamma(a=n, scale=tau).cdf
    want = [_box_average_of_cdf(cdf, k, 1.0 / f) for k in range(taps)]
    np.testing.assert_allclose(h, want, atol=1e-10)


@pytest.mark.parametrize("L,D,c,f", [(5000.0, 2.0e6, 4000.0, 2), (20000.0, 5.0e5, 9000.0, 4)])
def test_hayami_vs_inverse_gaussian_quadrature(L: float, D: float, c: float, f: int) -> None:
    taps = 40
    h = irf_kernel("hayami", {"L": _t(L), "D": _t(D), "c": _t(c)}, taps, f)[0].numpy()
    mu, lam = L / c, L * L / (2 * D)
    cdf = stats.invgauss(mu / lam, scale=lam).cdf
    want = [_box_average_of_cdf(cdf, k, 1.0 / f) for k in range(taps)]
    np.testing.assert_allclose(h, want, atol=1e-9)


def test_pure_lag_integer_and_fractional() -> None:
    h = irf_kernel("pure_lag", {"delay": _t(2.0, 0.0, 0.25)}, 12, 2).numpy()
    want = np.zeros((3, 12))
    want[0, 4] = 1.0
    want[1, 0] = 1.0
    want[2, 0], want[2, 1] = 0.5, 0.5  # a half-sub-step delay splits the box in two
    np.testing.assert_allclose(h, want, atol=1e-14)


@pytest.mark.parametrize(
    "name,params",
    [
        ("muskingum", {"k": _t(0.5, 2.0), "x": _t(0.1, 0.05)}),
        ("linear_storage", {"tau": _t(0.3, 3.0)}),
        ("nash_cascade", {"tau": _t(0.3, 1.0), "n": _t(2.0, 4.0)}),
        ("hayami", {"L": _t(3000.0, 8000.0), "D": _t(1e6, 3e6), "c": _t(3000.0, 5000.0)}),
        ("pure_lag", {"delay": _t(0.0, 3.3)}),
    ],
)
def test_kernels_conserve_mass(name: str, params: dict) -> None:
    h = irf_kernel(name, params, 4000, 4)
    torch.testing.assert_close(h.sum(-1), torch.ones(2, dtype=f64), rtol=0, atol=1e-9)


def test_kernel_gradients_finite_differences() -> None:
    k = torch.tensor([0.6, 1.1], dtype=f64, requires_grad=True)
    x = torch.tensor([0.15, 0.2], dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda k, x: irf_kernel("muskingum", {"k": k, "x": x}, 20, 2), (k, x)
    )
    length = torch.tensor([4000.0], dtype=f64, requires_grad=True)
    d = torch.tensor([1.5e6], dtype=f64, requires_grad=True)
    c = torch.tensor([3500.0], dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, cc: irf_kernel("hayami", {"L": a, "D": b, "c": cc}, 15, 2), (length, d, c)
    )


def test_unstable_muskingum_rejected_unless_allowed() -> None:
    params = {"k": _t(0.05, 1.0), "x": _t(0.3, 0.2)}  # row 0: dt = 1 > 2k(1-x) = 0.07
    with pytest.raises(UnstableParametersError, match=r"1 reach\(es\), ids \[11\].*allow_unst"):
        irf_kernel("muskingum", params, 10, 1, labels=torch.tensor([11, 12]))
    h = irf_kernel("muskingum", params, 10, 1, allow_unstable=True)
    assert h[0, 2] < 0 < h[1, 2]  # C2 < 0 makes the tail oscillate
    with pytest.raises(UnstableParametersError, match="0 <= x <= 0.5"):
        irf_kernel("muskingum", {"k": _t(1.0), "x": _t(0.7)}, 10, 1)


def test_bad_params_named() -> None:
    with pytest.raises(ValueError, match=r"missing \['x'\]"):
        irf_kernel("muskingum", {"k": _t(1.0)}, 4, 1)
    with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
        irf_kernel("muskingum", torch.ones(3, 3), 4, 1)
    with pytest.raises(ValueError, match="non-finite"):
        irf_kernel("linear_storage", {"tau": _t(float("nan"))}, 4, 1)
    with pytest.raises(UnstableParametersError, match="tau must be > 0"):
        irf_kernel("linear_storage", {"tau": _t(-1.0)}, 4, 1)


def test_registry() -> None:
    assert {"muskingum", "hayami", "nash_cascade", "linear_storage", "pure_lag"} <= set(
        list_irfs()
    )
    with pytest.raises(KeyError, match="registered IRFs: .*muskingum"):
        get_irf("musk")
    with pytest.raises(ValueError, match="already registered"):
        register_irf(get_irf("muskingum"))
    with pytest.raises(ValueError, match="bounds must name exactly"):
        IRFSpec("bad", lambda p, n, f: p, params=("a",), bounds={"b": (0.0, 1.0)})


def test_custom_irf_registration() -> None:
    def two_tap(p, n, f):  # half now, half one sub-step later
        h = torch.zeros(*p["w"].shape, n, dtype=f64)
        h[..., 0] = p["w"]
        h[..., 1] = 1 - p["w"]
        return h

    spec = IRFSpec("two_tap_test", two_tap, params=("w",), bounds={"w": (0.0, 1.0)})
    register_irf(spec, overwrite=True)
    h = irf_kernel("two_tap_test", {"w": _t(0.25)}, 3, 1)
    np.testing.assert_allclose(h.numpy(), [[0.25, 0.75, 0.0]])


def test_substep_kernel_to_step_equals_box_routing() -> None:
    f, steps = 4, 10
    h = irf_kernel("linear_storage", {"tau": _t(0.9)}, steps * f, f)[0]
    H = substep_kernel_to_step(h, f)
    for s in range(3):  # unit inflow during step s, averaged outflow per step
        r = torch.zeros(steps, dtype=f64)
        r[s] = 1.0
        fine = spread_to_substeps(r, f)
        out = torch.stack(
            [(h[: t + 1].flip(0) * fine[: t + 1]).sum() for t in range(steps * f)]
        )
        want = average_substeps(out, f)
        torch.testing.assert_close(want[s:], H[: steps - s], rtol=0, atol=1e-14)


def test_bounded_transform_round_trip() -> None:
    lo, hi = _t(0.1, 0.0), _t(5.0, 0.5)
    v = _t(2.0, 0.3)
    torch.testing.assert_close(to_bounded(from_bounded(v, lo, hi), lo, hi), v)
    with pytest.raises(ValueError, match="outside"):
        from_bounded(_t(6.0, 0.3), lo, hi)


def test_muskingum_from_length_gives_nonnegative_coefficients() -> None:
    from hydroscale.irf import muskingum_from_length

    length = torch.tensor([1.0, 500.0, 2700.0, 61000.0], dtype=f64)
    p = muskingum_from_length(length, 1.0, 3600.0, 12, x=0.2)
    # 2700 m at 1 m/s is 0.75 h; 1 m is raised to dt / (2 (1 - x)) = 1/19.2 h
    np.testing.assert_allclose(p["k"].numpy(), [1 / 19.2, 500 / 3600, 0.75, 61000 / 3600])
    x_long = 1 / 12 / (2 * 61000 / 3600)
    np.testing.assert_allclose(p["x"].numpy(), [0.2, 0.2, 1 / 12 / 1.5, x_long])
    c0, c1, c2 = muskingum_coefficients(p["k"], p["x"], 1 / 12)
    assert torch.all(c0 >= -1e-15) and torch.all(c2 >= -1e-15)
    irf_kernel("muskingum", p, 8, 12)  # passes the stability check


def test_python_numbers_are_float64_parameters() -> None:
    from hydroscale.irf import stack_params

    p = stack_params(get_irf("muskingum"), {"k": 0.1, "x": [0.2, 0.3]})
    assert p.dtype == torch.float64 and p.shape == (2, 2)
    assert float(p[0, 0]) == 0.1  # exactly the Python float, no float32 rounding
    assert stack_params(get_irf("muskingum"), [[0.1, 0.2]]).dtype == torch.float64


@pytest.mark.parametrize("f", [1, 24])
def test_recursions_reproduce_their_kernels_and_mass(f: int) -> None:
    """Every registered IRF with a recursive form: the filter's impulse response is the
    kernel, and (b0 + b1) / (1 - a1) is its mass (1 for the catalogue's)."""
    from hydroscale.irf import irf_recursion, list_irfs

    params = {"muskingum": {"k": _t(0.5 / 24, 2.0), "x": _t(0.1, 0.3)},
              "linear_storage": {"tau": _t(0.05, 3.0)}}
    with_recursion = [n for n in list_irfs() if get_irf(n).recursion is not None]
    assert set(with_recursion) == set(params)
    for name in with_recursion:
        h = irf_kernel(name, params[name], 50, f, allow_unstable=True)
        b0, b1, a1 = irf_recursion(name, params[name], f, allow_unstable=True).unbind(-1)
        y = [b0]
        y.append(b1 + a1 * b0)
        for _ in range(48):
            y.append(a1 * y[-1])
        # atol: the ramp form of the linear reservoir rounds its tail taps to ~1e-14
        torch.testing.assert_close(torch.stack(y, -1), h, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close((b0 + b1) / (1 - a1), torch.ones(2, dtype=f64), rtol=0,
                                   atol=1e-12)
    assert irf_recursion("hayami", {"L": _t(3000.0, 8000.0), "D": _t(1e6, 3e6),
                                    "c": _t(3000.0, 5000.0)}, f) is None

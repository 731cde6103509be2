"""RAPID mode against a time-stepping implementation of RAPID's published matrix recursion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.network import RiverNetwork
from hydroscale.routing.rapid import route_rapid

# 9 reaches, two confluences of three and two branches; ids deliberately unordered
IDS = [40, 10, 20, 30, 50, 60, 70, 80, 90]
DOWN = [50, 40, 40, 40, 90, 70, 90, 90, 0]


def rapid_recursion(ids, down_ids, qext, k, x, dt, dtR, qinit):
    """RAPID (David et al. 2011, eq. 7-9): per sub-step solve (I - C1 N) Q+ = b, dense numpy.

    ``b = C2 N Q + (C1 + C2) Qext + C3 Q``; Qout = mean of the f start-of-sub-step states.
    """
    n, steps = qext.shape
    f = int(round(dt / dtR))
    pos = {r: i for i, r in enumerate(ids)}
    net = np.zeros((n, n))
    for i, d in enumerate(down_ids):
        if d != 0:
            net[pos[d], i] = 1.0
    den = k * (1 - x) + dtR / 2
    c1, c2, c3 = (dtR / 2 - k * x) / den, (dtR / 2 + k * x) / den, (k * (1 - x) - dtR / 2) / den
    a = np.eye(n) - np.diag(c1) @ net
    q = qinit.astype(float).copy()
    qout = np.zeros((n, steps))
    for t in range(steps):
        for _ in range(f):
            qout[:, t] += q / f
            b = c2 * (net @ q) + (c1 + c2) * qext[:, t] + c3 * q
            q = np.linalg.solve(a, b)
    return qout, q


@pytest.mark.parametrize("f", [1, 3, 12])
def test_rapid_mode_equals_matrix_recursion(f):
    rng = np.random.default_rng(f)
    net = RiverNetwork.from_arrays(IDS, DOWN)
    n, steps, dt = len(IDS), 20, 3 * 3600.0
    k = rng.uniform(1800.0, 9 * 3600.0, n)  # non-uniform k (s)
    x = rng.uniform(0.0, 0.45, n)  # and x; some C1 or C3 are negative at f = 1
    qext = rng.uniform(0.0, 5.0, (2, n, steps))
    qinit = rng.uniform(0.0, 3.0, (2, n))
    qout, qfinal = route_rapid(net, qext, k, x, dt, dt / f, qinit=qinit)
    assert qout.dtype == torch.float64 and qout.shape == (2, n, steps)
    for b in range(2):
        ref_out, ref_final = rapid_recursion(IDS, DOWN, qext[b], k, x, dt, dt / f, qinit[b])
        np.testing.assert_allclose(qout[b].numpy(), ref_out, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(qfinal[b].numpy(), ref_final, rtol=1e-6, atol=1e-9)


def test_steady_state_and_unbatched_shape():
    """Constant inflow from a steady Qinit stays steady: Q = accumulated inflow (closed form)."""
    net = RiverNetwork.from_arrays(IDS, DOWN)
    n = len(IDS)
    lat = np.arange(1.0, n + 1.0)
    acc = np.array([lat[[i for i in range(n) if _downstream_path(i, net)[j]]].sum()
                    for j in range(n)])
    qout, qfinal = route_rapid(
        net, np.repeat(lat[:, None], 5, 1), np.full(n, 7200.0), np.full(n, 0.3), 3600.0, 900.0,
        qinit=acc,
    )
    assert qout.shape == (n, 5) and qfinal.shape == (n,)
    np.testing.assert_allclose(qout.numpy(), np.repeat(acc[:, None], 5, 1), rtol=1e-12)
    np.testing.assert_allclose(qfinal.numpy(), acc, rtol=1e-12)


def _downstream_path(i, net):
    """Boolean [N]: the reaches on the path from reach i to its outlet (i included)."""
    out = np.zeros(net.n_reaches, bool)
    j = i
    while j >= 0:
        out[j] = True
        j = int(net.downstream[j])
    return out


def test_rapid_mode_errors():
    net = RiverNetwork.from_arrays(IDS, DOWN)
    n = len(IDS)
    with pytest.raises(ValueError, match="whole multiple"):
        route_rapid(net, np.ones((n, 2)), np.full(n, 3600.0), np.full(n, 0.2), 3600.0, 1000.0)
    k = np.full(n, 3600.0)
    k[2] = -1.0
    with pytest.raises(ValueError, match=r"reaches \[20\]"):
        route_rapid(net, np.ones((n, 2)), k, np.full(n, 0.2), 3600.0, 900.0)


def test_rapid_mode_gradients_match_finite_differences():
    net = RiverNetwork.from_arrays(IDS, DOWN)
    n = len(IDS)
    rng = np.random.default_rng(3)
    qext = torch.tensor(rng.uniform(0, 5, (n, 3)), requires_grad=True)
    k = torch.tensor(rng.uniform(1800, 7200, n), requires_grad=True)
    x = torch.tensor(rng.uniform(0.05, 0.4, n), requires_grad=True)
    q0 = torch.tensor(rng.uniform(0, 2, n), requires_grad=True)

    w = torch.tensor(rng.uniform(-1, 1, (n, 3)))

    def f(qe, kk, xx, qi):
        qout, qfinal = route_rapid(net, qe, kk, xx, 3600.0, 1200.0, qinit=qi)
        return (qout * w).sum() + qfinal.sum() / 10.0

    assert torch.autograd.gradcheck(f, (qext, k, x, q0), eps=1e-6, atol=1e-6, rtol=1e-5,
                                    fast_mode=True)

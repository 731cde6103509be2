"""Parameter models: bounds (IRF defaults, per reach, SI units), the sigmoid map, rows, the MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.irf import get_irf
from hydroscale.models import AttributeMLP, FreeParameters, resolve_bounds
from hydroscale.network import RiverNetwork, continental_forest


def test_default_bounds_are_the_irf_bounds():
    low, high = resolve_bounds("muskingum", dtype=torch.float64)
    spec = get_irf("muskingum")
    assert low.tolist() == [spec.bounds["k"][0], spec.bounds["x"][0]]
    assert high.tolist() == [spec.bounds["k"][1], spec.bounds["x"][1]]


def test_si_bounds_convert_with_the_step():
    # k in seconds with an hourly step -> steps; c in m/s -> m/step; D in m²/s -> m²/step
    low, high = resolve_bounds("muskingum", {"k": (1800.0, 7200.0)}, dt=3600.0,
                               dtype=torch.float64)
    assert low.tolist() == [0.5, 0.0] and high.tolist() == [2.0, 0.5]
    low, high = resolve_bounds("hayami", {"c": (0.5, 2.0), "D": (10.0, 1000.0)}, dt=100.0,
                               dtype=torch.float64)
    assert low.tolist() == [10.0, 1000.0, 50.0]
    assert high.tolist() == [1.0e5, 1.0e5, 200.0]


def test_bound_errors():
    with pytest.raises(ValueError, match="unknown \\['tau'\\]"):
        resolve_bounds("muskingum", {"tau": (1, 2)})
    with pytest.raises(ValueError, match="low < high"):
        resolve_bounds("muskingum", {"k": (2.0, 1.0)})
    with pytest.raises(ValueError, match=r"\[N=3\]"):
        resolve_bounds("muskingum", {"k": (np.ones(4), 2 * np.ones(4))}, n=3)


def test_free_parameters_init_and_range():
    m = FreeParameters("muskingum", 4, init={"k": [0.5, 1.0, 2.0, 4.0], "x": 0.2},
                       dtype=torch.float64)
    p = m()
    np.testing.assert_allclose(p[:, 0].detach().numpy(), [0.5, 1.0, 2.0, 4.0], rtol=1e-12)
    np.testing.assert_allclose(p[:, 1].detach().numpy(), 0.2, rtol=1e-12)
    np.testing.assert_allclose(m(rows=[3, 1]).detach().numpy(), p[[3, 1]].detach().numpy())
    with torch.no_grad():
        m.raw.fill_(50.0)
    assert torch.all(m() <= m.high) and torch.all(m() >= m.low)
    # the midpoint is the default start
    mid = FreeParameters("linear_storage", 2, dtype=torch.float64)()
    lo, hi = get_irf("linear_storage").bounds["tau"]
    np.testing.assert_allclose(mid.detach().numpy(), (lo + hi) / 2)


def test_free_parameters_per_reach_bounds_and_gradient():
    low = np.array([0.5, 1.0, 1.5])
    m = FreeParameters("linear_storage", 3, bounds={"tau": (low, low + 1)}, dtype=torch.float64)
    np.testing.assert_allclose(m()[:, 0].detach().numpy(), low + 0.5)
    m().sum().backward()
    # d/draw (low + w sigmoid(raw)) at raw = 0 is w / 4 = 0.25
    np.testing.assert_allclose(m.raw.grad.numpy(), 0.25)
    with pytest.raises(ValueError, match="strictly inside the bounds"):
        m.set_values({"tau": [0.5, 1.5, 2.0]})


def test_attribute_mlp():
    net = continental_forest(200, seed=4)
    m = AttributeMLP("muskingum", net, ["length"], log=["length"], hidden=(8,), seed=1,
                     dtype=torch.float64)
    p = m()
    assert p.shape == (200, 2)
    assert torch.all(p > m.low) and torch.all(p < m.high)
    # same reaches through the network, or through standardised attributes
    x = (np.log1p(net.attrs["length"]) - np.log1p(net.attrs["length"]).mean())
    x = x / np.log1p(net.attrs["length"]).std(ddof=1)
    np.testing.assert_allclose(m(torch.as_tensor(x)[:, None]).detach().numpy(),
                               p.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(m(rows=[5, 7]).detach().numpy(), p[[5, 7]].detach().numpy())
    # deterministic in the seed, different across seeds
    same = AttributeMLP("muskingum", net, ["length"], log=["length"], hidden=(8,), seed=1,
                        dtype=torch.float64)
    other = AttributeMLP("muskingum", net, ["length"], log=["length"], hidden=(8,), seed=2,
                         dtype=torch.float64)
    assert torch.equal(same(), p)
    assert not torch.equal(other(), p)
    p.sum().backward()
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in m.parameters())


def test_attribute_mlp_fits_a_function_of_the_attribute():
    """Gradient descent on the MLP recovers k = 0.5 + length / 1000 km (a smooth target)."""
    ids = np.arange(1, 65)
    length = np.linspace(100.0, 2000.0, 64)
    net = RiverNetwork.from_arrays(ids, np.zeros(64, dtype=int), length=length)
    m = AttributeMLP("linear_storage", net, ["length"], hidden=(16,), seed=0,
                     bounds={"tau": (0.4, 2.6)}, dtype=torch.float64)
    target = torch.as_tensor(0.5 + length / 1000.0)[:, None]
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(1000):
        opt.zero_grad()
        loss = ((m() - target) ** 2).mean()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(m().detach().numpy(), target.numpy(), atol=0.05)


def test_attribute_mlp_errors():
    net = continental_forest(20, seed=1)
    with pytest.raises(ValueError, match="no attribute\\(s\\) \\['slope'\\]"):
        AttributeMLP("muskingum", net, ["slope"])
    m = AttributeMLP("muskingum", net, ["length"])
    with pytest.raises(ValueError, match="attributes must be \\[N, A=1\\]"):
        m(torch.zeros(20, 2))

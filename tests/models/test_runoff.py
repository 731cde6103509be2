"""Runoff models: the bucket model against a hand-computed case and its water balance; the
LSTM's shapes, normalisation, quick-flow head and that it can fit the bucket model's runoff."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hydroscale.models.runoff import BucketModel, LSTMRunoff, RunoffModel, synthetic_forcings


def test_bucket_hand_computed():
    # capacity 10 mm, k = 0.1, start half full (5 mm); P = [10, 0], E = [2, 2]
    m = BucketModel([10.0], [0.1], initial_fill=0.5)
    f = torch.tensor([[[[10.0, 2.0], [0.0, 2.0]]]], dtype=torch.float64)
    out = m(f, return_fluxes=True)
    # step 0: S = 15, ET = 2 * 1 = 2 -> 13, excess 3 -> 10, base 1 -> 9; runoff 4
    # step 1: S = 9, ET = 2 * 0.9 = 1.8 -> 7.2, excess 0, base 0.72 -> 6.48; runoff 0.72
    np.testing.assert_allclose(out["runoff"].numpy().ravel(), [4.0, 0.72], rtol=1e-14)
    np.testing.assert_allclose(out["et"].numpy().ravel(), [2.0, 1.8], rtol=1e-14)
    np.testing.assert_allclose(out["storage"].numpy().ravel(), [6.48], rtol=1e-14)


def test_bucket_water_balance():
    f = torch.as_tensor(synthetic_forcings(5, 200, seed=2), dtype=torch.float64)[None]
    cap = np.linspace(20.0, 150.0, 5)
    m = BucketModel(cap, np.linspace(0.02, 0.2, 5), initial_fill=0.3)
    out = m(f, return_fluxes=True)
    p = f[..., 0].sum(-1)
    lhs = p + 0.3 * torch.as_tensor(cap)
    rhs = out["et"].sum(-1) + out["runoff"].sum(-1) + out["storage"]
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-12)
    assert bool((out["runoff"] >= 0).all())


def test_bucket_errors():
    with pytest.raises(ValueError, match="capacity_mm"):
        BucketModel([0.0, 1.0], [0.1, 0.1])
    with pytest.raises(ValueError, match="recession"):
        BucketModel([1.0], [1.5])
    with pytest.raises(ValueError, match=r"forcings must be \[B, C, T, F=2\]"):
        BucketModel([1.0], [0.1])(torch.zeros(1, 1, 3))


def test_lstm_interface_and_normalisation():
    torch.manual_seed(0)
    m = LSTMRunoff(2, 3, hidden=8)
    assert isinstance(m, RunoffModel)
    f = torch.rand(2, 4, 7, 2) * 10
    s = torch.rand(4, 3)
    m.fit_normalisation(f, s)
    want = torch.cat([f.reshape(-1, 2).mean(0), s.mean(0)])
    torch.testing.assert_close(m.x_mean, want)
    y = m(f, s)
    assert y.shape == (2, 4, 7) and bool((y >= 0).all())
    with pytest.raises(ValueError, match="static attributes"):
        m(f)
    with pytest.raises(ValueError, match=r"static must be \[C=4, S=3\]"):
        m(f, torch.rand(5, 3))


def test_lstm_quick_flow_head_hand_computed():
    """precip_col: q = P * sigmoid(a.h + b) + scale * softplus(c.h + d); with a = c = 0 the
    hidden state drops out and q is linear in the step's rain (any storm size)."""
    torch.manual_seed(0)
    m = LSTMRunoff(2, 1, hidden=5, output_scale=2.0, precip_col=1).double()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.copy_(torch.tensor([0.3, -0.8], dtype=torch.float64))
    f = torch.rand(3, 4, 6, 2, dtype=torch.float64) * 5
    f[0, 0, 2, 1] = 500.0  # a storm far beyond the others
    s = torch.rand(4, 1, dtype=torch.float64)
    m.fit_normalisation(f, s)
    want = f[..., 1] / (1 + np.exp(0.8)) + 2.0 * np.log1p(np.exp(0.3))
    torch.testing.assert_close(m(f, s), want, rtol=1e-12, atol=1e-12)
    plain = LSTMRunoff(2, 1, hidden=5)
    assert plain.head.out_features == 1 and m.head.out_features == 2
    with pytest.raises(ValueError, match=r"precip_col must be None or in \[0, 2\), got 2"):
        LSTMRunoff(2, precip_col=2)


def test_lstm_learns_bucket_runoff():
    # an LSTM fitted for 40 Adam steps on 4 cells explains most of the bucket model's variance
    torch.manual_seed(0)
    c, t = 4, 150
    f = torch.as_tensor(synthetic_forcings(c, t, seed=1))[None]
    cap = torch.linspace(30.0, 120.0, c)
    k = torch.linspace(0.03, 0.15, c)
    truth = BucketModel(cap, k)(f).float()
    static = torch.stack([cap, k], dim=1)
    m = LSTMRunoff(2, 2, hidden=12, output_scale=float(truth.mean()))
    m.fit_normalisation(f, static)
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    warm = 20
    mse0 = None
    for _ in range(40):
        opt.zero_grad()
        err = ((m(f, static) - truth)[..., warm:] ** 2).mean()
        mse0 = float(err.detach()) if mse0 is None else mse0
        err.backward()
        opt.step()
    with torch.no_grad():
        err = ((m(f, static) - truth)[..., warm:] ** 2).mean()
    assert float(err) < 0.5 * mse0

from __future__ import annotations

import numpy as np
import torch

from hydroscale.calibration.metrics import bias, kge, nse, score, varies, volume_error


def test_nse_kge_hand_computed():
    obs = np.array([1.0, 2.0, 3.0, 4.0])
    sim = np.array([2.0, 3.0, 4.0, 5.0])  # obs + 1
    # NSE = 1 - 4 / 5; r = 1, alpha = 1, beta = 3.5 / 2.5
    np.testing.assert_allclose(nse(sim, obs), 1 - 4 / 5)
    np.testing.assert_allclose(kge(sim, obs), 1 - 0.4)
    np.testing.assert_allclose(nse(obs, obs), 1.0)
    np.testing.assert_allclose(kge(obs, obs), 1.0)
    # 2 * obs: r = 1, alpha = 2, beta = 2 -> 1 - sqrt(2)
    np.testing.assert_allclose(kge(2 * obs, obs), 1 - np.sqrt(2.0))
    np.testing.assert_allclose(nse(np.full(4, 2.5), obs), 0.0)


def test_nan_observations_ignored_batched_and_torch_grad():
    obs = np.array([[1.0, np.nan, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    sim = np.array([[1.5, 100.0, 3.0, 4.5], [1.0, 2.0, 1.0, 1.0]])
    got = nse(sim, obs)
    keep = [0, 2, 3]
    o, s = obs[0, keep], sim[0, keep]
    np.testing.assert_allclose(got[0], 1 - ((s - o) ** 2).sum() / ((o - o.mean()) ** 2).sum())
    assert np.isnan(got[1])  # constant observations
    st = torch.tensor(sim[0], requires_grad=True)
    v = nse(st, torch.tensor(obs[0]))
    v.backward()
    np.testing.assert_allclose(v.item(), got[0])
    assert st.grad[1].item() == 0.0 and st.grad[0].item() < 0.0
    np.testing.assert_allclose(kge(torch.tensor(sim[0]), torch.tensor(obs[0])).item(),
                               kge(sim[0], obs[0]))


def test_score_gives_nse_only_where_the_reference_varies():
    """Three gauges over 4 steps, by hand: a varying reference, a constant one (float32
    rounding on top: NSE would be about -1e11), and one with a missing step."""
    obs = np.array([[1.0, 2.0, 3.0, 2.0],
                    [50.0, 50.0 + 3e-6, 50.0, 50.0 - 2e-6],
                    [4.0, np.nan, 4.0, 6.0]])
    sim = np.array([[1.0, 3.0, 3.0, 1.0],
                    [49.0, 49.0, 49.0, 49.0],
                    [5.0, 100.0, 5.0, 5.0]])
    s = score(sim, obs)
    np.testing.assert_array_equal(s["varies"], [True, False, True])
    np.testing.assert_array_equal(s["steps"], [4, 4, 3])
    # gauge 0: mean 2, Σ(o - 2)² = 2, Σ(s - o)² = 2  ->  NSE 0
    # gauge 2: valid steps 4, 4, 6: mean 14/3, Σ(o - m)² = 8/3, Σ(s - o)² = 1 + 1 + 1 = 3
    np.testing.assert_allclose(s["nse"][[0, 2]], [0.0, 1.0 - 3.0 / (8.0 / 3.0)])
    assert np.isnan(s["nse"][1]) and nse(sim[1], obs[1]) < -1e9  # what NSE alone would say
    # bias = mean(sim - obs) over valid steps; volume error = Σ sim / Σ obs - 1
    np.testing.assert_allclose(s["bias"], [0.0, -1.00000025, 1.0 / 3.0])
    np.testing.assert_allclose(s["volume_error"], [0.0, 196.0 / 200.000001 - 1.0, 15.0 / 14.0 - 1])
    np.testing.assert_allclose(bias(sim, obs), s["bias"])
    np.testing.assert_allclose(volume_error(sim, obs), s["volume_error"])


def test_varies_thresholds():
    t = np.array([[10.0, 10.05, 10.0], [10.0, 10.2, 10.0], [0.0, 0.0005, 0.0],
                  [0.0, 0.002, 0.0], [5.0, np.nan, np.nan], [np.nan] * 3])
    # 0.5 % of the mean: constant; 2 %: varies; 0.0005 m³/s below the floor; 0.002 above it;
    # fewer than two valid steps: never
    np.testing.assert_array_equal(varies(t), [False, True, False, True, False, False])
    np.testing.assert_array_equal(varies(t, rel=0.001), [True, True, False, True, False, False])

from __future__ import annotations

import numpy as np
import torch

from hydroscale.calibration.metrics import kge, nse


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

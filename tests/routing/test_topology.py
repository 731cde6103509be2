"""Deep and wide networks (a 5,000-reach chain, a 5,000-headwater star, a caterpillar) through
every engine ``hydroscale.route``'s ``auto`` may pick on a CPU, against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hydroscale
from hydroscale.network import RiverNetwork
from hydroscale.network.synthetic import caterpillar_ids, chain_ids, star_ids
from hydroscale.routing import LevelRouter, route_oracle

T, F = 6, 2


def _chain(n: int) -> RiverNetwork:
    return RiverNetwork.from_arrays(*chain_ids(n))


def _star(headwaters: int) -> RiverNetwork:
    return RiverNetwork.from_arrays(*star_ids(headwaters + 1))


def _caterpillar(stem: int) -> RiverNetwork:
    return RiverNetwork.from_arrays(*caterpillar_ids(stem))


def _case(net: RiverNetwork, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = net.n_reaches
    runoff = rng.random((n, T))
    params = {"k": rng.uniform(0.3, 1.5, n), "x": rng.uniform(0.1, 0.3, n)}
    return runoff, params


def _rel(q: np.ndarray, q0: np.ndarray) -> float:
    return float(np.abs(q - q0).max() / np.abs(q0).max())


# The block-sparse "torch" engine aggregates O(N x cluster size) path kernels on a chain:
# shorter chains keep its cases to seconds.
SIZES = {"chain": 5000, "star": 5000, "caterpillar": 2500}
TORCH_SIZES = {"chain": 1200, "star": 5000, "caterpillar": 600}
MAKE = {"chain": _chain, "star": _star, "caterpillar": _caterpillar}


def _deep_case(kind: str, size: int):
    net = MAKE[kind](size)
    runoff, params = _case(net, seed=size)
    p = np.stack([params["k"], params["x"]], 1)
    q0 = route_oracle(net, torch.tensor(runoff), "muskingum", torch.tensor(p), substeps=F,
                      allow_unstable=True).numpy()
    return net, runoff, params, q0


@pytest.fixture(scope="module", params=sorted(SIZES))
def deep_case(request):
    return _deep_case(request.param, SIZES[request.param])


@pytest.mark.parametrize("engine", [None, "levels"])
def test_deep_and_wide_networks_route_exactly(deep_case, engine, one_torch_thread):
    net, runoff, params, q0 = deep_case
    q = hydroscale.route(net, runoff, "muskingum", params, substeps=F, engine=engine,
                         allow_unstable=True)
    assert q.shape == q0.shape
    assert _rel(q, q0) < 1e-6


@pytest.mark.parametrize("kind", sorted(TORCH_SIZES))
def test_deep_and_wide_networks_route_exactly_block_sparse(kind, one_torch_thread):
    net, runoff, params, q0 = _deep_case(kind, TORCH_SIZES[kind])
    engine = "torch"
    q = hydroscale.route(net, runoff, "muskingum", params, substeps=F, engine=engine,
                         allow_unstable=True)
    assert q.shape == q0.shape
    assert _rel(q, q0) < 1e-6


def test_auto_takes_the_block_sparse_engine_when_substep_arrays_do_not_fit(
        monkeypatch, caplog, one_torch_thread):
    net = _chain(1000)
    runoff, params = _case(net, seed=3)
    # "levels" needs >= 2 B N T f sub-step values (~0.17 MB here); "torch" ~0.03 MB
    monkeypatch.setenv("HYDROSCALE_MEMORY_LIMIT", "100kB")
    with caplog.at_level("INFO", logger="hydroscale.api"):
        q = hydroscale.route(net, runoff.astype(np.float32), "muskingum", params, substeps=F,
                             allow_unstable=True)
    assert "engine torch (levels does not fit" in caplog.text
    p = np.stack([params["k"], params["x"]], 1)
    q0 = route_oracle(net, torch.tensor(runoff, dtype=torch.float32).double(), "muskingum",
                      torch.tensor(p), substeps=F, allow_unstable=True).numpy()
    assert _rel(q.astype(np.float64), q0) < 1e-5


def test_chain_scan_gradients_match_the_oracle():
    # 2 rounds; the stem is one chain of 40: blocks of 16, then a scan over the 3 blocks
    net = _caterpillar(40)
    rng = np.random.default_rng(7)
    n = net.n_reaches
    p0 = np.stack([rng.uniform(0.3, 1.5, n), rng.uniform(0.1, 0.3, n)], 1)
    r = torch.rand(2, n, 10, dtype=torch.float64)
    w = torch.rand(2, n, 10, dtype=torch.float64)
    p1 = torch.tensor(p0, requires_grad=True)
    p2 = torch.tensor(p0, requires_grad=True)
    router = LevelRouter(net, irf="muskingum", substeps=2, window=10, allow_unstable=True)
    (router(r, p1) * w).sum().backward()
    (route_oracle(net, r, "muskingum", p2, substeps=2, allow_unstable=True) * w).sum().backward()
    assert torch.allclose(p1.grad, p2.grad, rtol=1e-9, atol=1e-12)
    rr = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: router(x, p0), (rr,), fast_mode=True)


@pytest.mark.parametrize("step_cost", [0, 10**18])  # always sweep, always scan
def test_sweep_and_scan_of_a_round_agree_with_the_oracle(monkeypatch, step_cost):
    from hydroscale.routing import levelwise

    monkeypatch.setattr(levelwise, "_STEP_COST", step_cost)
    monkeypatch.setattr(levelwise, "_FFT_BLOCK", 4096)  # FFT in many row blocks
    net = _caterpillar(70)  # stem of 70: two levels of blocks in the scan
    rng = np.random.default_rng(9)
    n = net.n_reaches
    p = torch.tensor(np.stack([rng.uniform(0.3, 1.5, n), rng.uniform(0.1, 0.3, n)], 1))
    r = torch.rand(2, n, 40, dtype=torch.float64)
    q0 = route_oracle(net, r, "muskingum", p, substeps=8, allow_unstable=True)
    for window in (3, 40):  # 24 taps (direct) and 320 taps (FFT)
        router = LevelRouter(net, irf="muskingum", substeps=8, window=window,
                             allow_unstable=True, window_tolerance=float("inf"))
        q = router(r, p)
        if window == 40:
            assert torch.allclose(q, q0, rtol=1e-9, atol=1e-12)
        else:  # a truncating window: compare with the same truncation, reach by reach
            h = router.kernels(p)
            assert h.shape[-1] == 24
            assert _rel(q.numpy(), _sweep_reference(net, r, h).numpy()) < 1e-12


def _sweep_reference(net: RiverNetwork, r: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Reach-by-reach routing with the (truncated) sub-step kernels ``h`` [N, K f], f = 8."""
    from hydroscale.irf import average_substeps, spread_to_substeps
    from hydroscale.routing import causal_conv_fft

    x = spread_to_substeps(r, 8).clone()
    q = torch.zeros_like(x)
    for lv in range(net.n_levels):
        idx = torch.as_tensor(net.topo_order[net.level_ptr[lv]: net.level_ptr[lv + 1]])
        q[:, idx] = causal_conv_fft(x[:, idx], h[idx])
        d = torch.as_tensor(np.array(net.downstream))[idx]
        ok = d >= 0
        x.index_add_(1, d[ok], q[:, idx[ok]])
    return average_substeps(q, 8)


def test_levels_auto_window_at_substeps_is_fitted_not_the_run():
    # sub-step kernels sum to 1 (not f): a fast reach's kernel is whole within 32 steps
    net = _caterpillar(30)
    n = net.n_reaches
    rng = np.random.default_rng(10)
    p = torch.tensor(np.stack([rng.uniform(0.04, 0.12, n), rng.uniform(0.1, 0.3, n)], 1))
    r = torch.rand(1, n, 200, dtype=torch.float64)
    router = LevelRouter(net, irf="muskingum", substeps=4, allow_unstable=True)
    q = router(r, p)
    assert router.window == 32
    assert float(np.max(router.truncated_mass)) < 1e-12
    q0 = route_oracle(net, r, "muskingum", p, substeps=4, allow_unstable=True)
    assert torch.allclose(q, q0, rtol=1e-9, atol=1e-12)

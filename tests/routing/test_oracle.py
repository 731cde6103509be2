from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from hydroscale.irf import UnstableParametersError, irf_kernel
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.routing import route_oracle

f64 = torch.float64


def test_chain_pure_lag_hand_computed(chain3: RiverNetwork) -> None:
    r = torch.zeros(3, 8, dtype=f64)
    r[0, 0] = 2.0  # headwater pulse
    r[1, 2] = 1.0  # middle reach pulse
    q = route_oracle(chain3, r, "pure_lag", {"delay": torch.tensor([1.0, 2.0, 0.0])})
    want = torch.zeros(3, 8, dtype=f64)
    want[0, 1] = 2.0  # reach 10: delay 1
    want[1, 3] = 2.0  # reach 20: delay 2 of reach 10's outflow ...
    want[1, 4] = 1.0  # ... and of its own pulse
    want[2] = want[1]  # reach 30: no delay
    torch.testing.assert_close(q, want, rtol=0, atol=1e-12)


def _muskingum_step_route(r_sub: np.ndarray, k: float, x: float, dt: float) -> np.ndarray:
    den = 2 * k * (1 - x) + dt
    c0, c1, c2 = (dt - 2 * k * x) / den, (dt + 2 * k * x) / den, (2 * k * (1 - x) - dt) / den
    q = np.zeros_like(r_sub)
    q[0] = c0 * r_sub[0]
    for t in range(r_sub.size - 1):
        q[t + 1] = c0 * r_sub[t + 1] + c1 * r_sub[t] + c2 * q[t]
    return q


def test_chain_muskingum_substeps_vs_time_stepping(chain3: RiverNetwork) -> None:
    f, steps = 3, 12
    rng = np.random.default_rng(0)
    r = rng.random((3, steps))
    k, x = [0.4, 0.9, 0.6], [0.1, 0.15, 0.2]
    params = {"k": torch.tensor(k, dtype=f64), "x": torch.tensor(x, dtype=f64)}
    q = route_oracle(chain3, torch.tensor(r), "muskingum", params, substeps=f).numpy()
    inflow = np.repeat(r, f, axis=1)
    outs = []
    upstream = np.zeros(steps * f)
    for j in range(3):  # the chain is stored upstream first
        out = _muskingum_step_route(inflow[j] + upstream, k[j], x[j], 1.0 / f)
        outs.append(out.reshape(steps, f).mean(1))
        upstream = out
    np.testing.assert_allclose(q, np.array(outs), rtol=0, atol=1e-12)


def _reference_route(
    net: RiverNetwork, r: np.ndarray, irf: str, params: dict, f: int
) -> np.ndarray:
    """Independent router: networkx topological sort, np.convolve per reach, sub-steps."""
    steps = r.shape[1]
    h = irf_kernel(irf, params, steps * f, f).numpy()
    g = net.to_networkx()
    pos = {int(i): n for n, i in enumerate(net.ids.tolist())}
    q_sub = {}
    for node in nx.topological_sort(g):
        j = pos[node]
        total = np.repeat(r[j], f) + sum((q_sub[u] for u in g.predecessors(node)), 0.0)
        q_sub[node] = np.convolve(total, h[j])[: steps * f]
    return np.stack([q_sub[int(i)].reshape(steps, f).mean(1) for i in net.ids.tolist()])


@pytest.mark.parametrize(
    "irf,params,f",
    [
        ("muskingum", {"k": np.linspace(0.3, 1.2, 7), "x": np.linspace(0.05, 0.2, 7)}, 2),
        ("linear_storage", {"tau": np.linspace(0.2, 2.0, 7)}, 3),
        (
            "hayami",
            {
                "L": np.full(7, 4000.0),
                "D": np.linspace(5e5, 3e6, 7),
                "c": np.linspace(2000.0, 6000.0, 7),
            },
            2,
        ),
    ],
)
def test_small_tree_vs_independent_router(small_tree, irf, params, f) -> None:
    rng = np.random.default_rng(1)
    r = rng.random((7, 10))
    tparams = {k: torch.tensor(v) for k, v in params.items()}
    q = route_oracle(small_tree, torch.tensor(r), irf, tparams, substeps=f).numpy()
    want = _reference_route(small_tree, r, irf, tparams, f)
    np.testing.assert_allclose(q, want, rtol=1e-10, atol=1e-12)


def test_mass_conservation_once_drained() -> None:
    net = continental_forest(301, seed=5, shuffle=True)
    rng = np.random.default_rng(2)
    steps, wet = 400, 20
    r = torch.zeros(2, net.n_reaches, steps, dtype=f64)
    r[..., :wet] = torch.tensor(rng.random((2, net.n_reaches, wet)))
    k = torch.tensor(rng.uniform(0.5, 1.5, net.n_reaches))
    q = route_oracle(net, r, "muskingum", {"k": k, "x": torch.full_like(k, 0.1)}, substeps=2)
    out = q[:, torch.tensor(net.outlets)].sum(dim=(1, 2))
    torch.testing.assert_close(out, r.sum(dim=(1, 2)), rtol=1e-9, atol=0)


def test_batch_and_boundary_inflow(chain3: RiverNetwork) -> None:
    f = 2
    r = torch.rand(2, 3, 6, dtype=f64)
    p = {"tau": torch.tensor([0.5, 0.7, 0.9])}
    q = route_oracle(chain3, r, "linear_storage", p, substeps=f)
    for b in range(2):
        torch.testing.assert_close(
            q[b], route_oracle(chain3, r[b], "linear_storage", p, substeps=f)
        )
    # Routing reach 10 alone and feeding its sub-step outflow into [20, 30] as boundary inflow
    up = chain3.subnetwork(np.array([0]))
    rest = chain3.subnetwork(np.array([1, 2]))
    q_up = route_oracle(
        up, r[:, :1], "linear_storage", {"tau": p["tau"][:1]}, substeps=f, return_substeps=True
    )
    bnd = torch.zeros(2, 2, 12, dtype=f64)
    bnd[:, 0] = q_up[:, 0]
    q_rest = route_oracle(
        rest, r[:, 1:], "linear_storage", {"tau": p["tau"][1:]}, substeps=f, boundary_inflow=bnd
    )
    torch.testing.assert_close(q_rest, q[:, 1:], rtol=1e-12, atol=1e-13)


def test_gradients_finite_differences(small_tree: RiverNetwork) -> None:
    r = torch.rand(7, 5, dtype=f64, requires_grad=True)
    p = torch.stack([torch.linspace(0.4, 1.0, 7), torch.linspace(0.1, 0.2, 7)], -1).to(f64)
    p.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda r, p: route_oracle(small_tree, r, "muskingum", p, substeps=2), (r, p)
    )


def test_bad_input_messages(chain3: RiverNetwork) -> None:
    with pytest.raises(ValueError, match=r"one row per reach \(3\)"):
        route_oracle(chain3, torch.zeros(4, 5), "pure_lag", {"delay": 0.0})
    with pytest.raises(ValueError, match=r"\[N, T\] or \[B, N, T\]"):
        route_oracle(chain3, torch.zeros(5), "pure_lag", {"delay": 0.0})
    with pytest.raises(UnstableParametersError, match=r"ids \[20\]"):
        route_oracle(
            chain3,
            torch.zeros(3, 5),
            "muskingum",
            {"k": torch.tensor([1.0, 0.01, 1.0]), "x": torch.tensor([0.2, 0.2, 0.2])},
        )

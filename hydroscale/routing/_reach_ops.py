"""Operations along the network on tensors ``[B, N, T]``: upstream sums, the sum over the
upstream-adjacent reaches, the downstream reach's value; and the steady state they define.

A steady start at discharge ``Q0`` is the state the network reaches when the constant lateral
inflow ``r* = Q0 - upstream(Q0)`` (each reach's discharge less what flows into it) has flowed
forever; the steady discharge of a constant inflow ``r`` is ``accumulate(r)``.  The API's
``accumulate``/``upstream``/``downstream`` (arrays, DataArrays, NaN handling) and the route's
warm starts (API and workflows) are these functions.

Index plans are built once per network and device (held while the network lives).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from ..network import RiverNetwork, format_ids

__all__ = ["accumulate_reaches", "check_steady_inflow", "downstream_reaches", "steady_discharge",
           "steady_inflow", "upstream_reaches"]

_CACHE: weakref.WeakKeyDictionary[RiverNetwork, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _cached(network: RiverNetwork, key: str, device: torch.device, build: Any) -> Any:
    per_network = _CACHE.setdefault(network, {})
    if (key, device) not in per_network:
        per_network[key, device] = build()
    return per_network[key, device]


def _index(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.int64, device=device)


def _level_plan(network: RiverNetwork, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """Per level (upstream first): (reaches with a downstream reach, their downstream reach)."""

    def build() -> list[tuple[torch.Tensor, ...]]:
        order, ptr, down = network.topo_order, network.level_ptr, network.downstream
        plan = []
        for lv in range(network.n_levels - 1):  # the top level drains nowhere
            src = order[ptr[lv] : ptr[lv + 1]]
            src = src[down[src] >= 0]
            plan.append((_index(src, device), _index(down[src], device)))
        return plan

    return _cached(network, "levels", device, build)


def _edges(network: RiverNetwork, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(downstream index [N] with -1 at outlets, edge sources [E], edge targets [E])."""

    def build() -> tuple[torch.Tensor, ...]:
        down = network.downstream
        has = np.flatnonzero(down >= 0)
        return _index(down, device), _index(has, device), _index(down[has], device)

    return _cached(network, "edges", device, build)


def accumulate_reaches(network: RiverNetwork, x: torch.Tensor) -> torch.Tensor:
    """``[B, N, T]``: each reach's value plus the values of every reach upstream of it (one
    index-add per topological level)."""
    acc = x.clone()
    for src, dst in _level_plan(network, x.device):
        acc.index_add_(1, dst, acc.index_select(1, src))
    return acc


def upstream_reaches(network: RiverNetwork, x: torch.Tensor) -> torch.Tensor:
    """``[B, N, T]``: the sum over each reach's upstream-adjacent reaches (0 at headwaters)."""
    _, src, dst = _edges(network, x.device)
    return torch.zeros_like(x).index_add_(1, dst, x.index_select(1, src))


def downstream_reaches(network: RiverNetwork, x: torch.Tensor, fill_value: Any) -> torch.Tensor:
    """``[B, N, T]``: the value of each reach's downstream reach, ``fill_value`` at outlets."""
    down, _, _ = _edges(network, x.device)
    out = x.index_select(1, down.clamp(min=0))
    outlet = (down < 0).view(1, -1, 1)
    return torch.where(outlet, torch.as_tensor(fill_value, dtype=x.dtype, device=x.device), out)


def steady_inflow(network: RiverNetwork, q0: torch.Tensor) -> torch.Tensor:
    """The constant lateral inflow ``r* = Q0 - upstream(Q0)`` ``[B, N]`` (m³/s) under which
    discharge ``q0`` ``[B, N]`` is steady; negative where ``q0`` falls downstream (the caller
    decides whether that is allowed)."""
    return q0 - upstream_reaches(network, q0[..., None])[..., 0]


def steady_discharge(network: RiverNetwork, r: torch.Tensor) -> torch.Tensor:
    """The steady discharge ``[B, N]`` (m³/s) of a constant lateral inflow ``r`` ``[B, N]``."""
    return accumulate_reaches(network, r[..., None])[..., 0]


def check_steady_inflow(network: RiverNetwork, r_star: torch.Tensor, *, where: str = "") -> None:
    """Refuse a steady inflow ``r_star`` ``[B, N]`` that is negative somewhere (the discharge
    given falls downstream there), naming the reaches; ``where`` qualifies them (e.g.
    ``" outside lakes"``).  For callers whose user did not allow losing reaches."""
    neg = r_star < 0
    if bool(neg.any()):
        j = torch.nonzero(neg)[:, 1].unique().cpu().numpy()
        raise ValueError(
            f"initial discharge is smaller than the sum of the discharges flowing into "
            f"{j.size} reach(es){where}, ids {format_ids(network.ids[j])}: the steady state "
            "that yields it needs negative lateral inflow there (r* = Q0 - upstream(Q0)); "
            "pass allow_negative=True if losing reaches are meant, or correct the discharge")

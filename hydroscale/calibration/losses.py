r"""Training losses at gauges (torch, NaN-aware), built on :mod:`.metrics`.

All losses take simulated and observed discharge ``[..., G, T]`` (G gauges, T steps; NaN
observations are ignored), drop the first ``warmup`` steps, and return a scalar to minimise:
the mean over gauges (and leading axes) of the per-gauge loss.

- ``"nse"``: :math:`1 - \mathrm{NSE}`, i.e. :math:`\sum_t (s_t-o_t)^2 / \sum_t (o_t-\bar o)^2`;
- ``"kge"``: :math:`1 - \mathrm{KGE}`;
- ``"vnmse"``: variance-normalised MSE :math:`\frac{1}{n}\sum_t (s_t-o_t)^2 / (\sigma_o +
  \epsilon)^2` (the NSE* of Kratzert et al. 2019), which stays finite for gauges with almost no
  variance.

Gauges whose loss is not finite (no valid step, zero observed variance) are left out of the
mean; a loss with no usable gauge at all is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .metrics import kge, nse

__all__ = ["LOSSES", "get_loss", "gauge_loss", "kge_loss", "nse_loss", "vnmse", "vnmse_loss"]


def _trim(sim: torch.Tensor, obs: Any, warmup: int) -> tuple[torch.Tensor, torch.Tensor]:
    o = torch.as_tensor(obs, dtype=sim.dtype, device=sim.device)
    if o.shape[-1] != sim.shape[-1]:
        raise ValueError(f"sim and obs must have the same number of steps, got "
                         f"{tuple(sim.shape)} and {tuple(o.shape)}")
    if int(warmup) != warmup or not 0 <= warmup < sim.shape[-1]:
        raise ValueError(f"warmup must be an integer in [0, T={sim.shape[-1]}), got {warmup}")
    return sim[..., warmup:], o[..., warmup:]


def vnmse(sim: Any, obs: Any, eps: float = 0.1) -> Any:
    """Variance-normalised MSE per series ``[...]`` of ``sim`` vs ``obs`` ``[..., T]``.

    ``mean_t (s - o)^2 / (std(o) + eps)^2`` over the steps where ``obs`` is finite;
    ``eps`` is in the units of the discharge (m³/s).  0 is perfect.
    """
    s = torch.as_tensor(sim)
    o = torch.as_tensor(obs, dtype=s.dtype, device=s.device)
    w = (~torch.isnan(o)).to(s.dtype)
    o0 = torch.nan_to_num(o, nan=0.0)
    n = w.sum(-1)
    mo = (o0 * w).sum(-1) / n
    var = (((o0 - mo[..., None]) ** 2) * w).sum(-1) / n
    err = (((torch.where(w > 0, s, 0.0) - o0) ** 2) * w).sum(-1) / n
    return err / (var.sqrt() + eps) ** 2


def nse_loss(sim: torch.Tensor, obs: Any, warmup: int = 0) -> torch.Tensor:
    """Mean of ``1 - NSE`` over gauges (see module docstring)."""
    return gauge_loss("nse", sim, obs, warmup)


def kge_loss(sim: torch.Tensor, obs: Any, warmup: int = 0) -> torch.Tensor:
    """Mean of ``1 - KGE`` over gauges."""
    return gauge_loss("kge", sim, obs, warmup)


def vnmse_loss(sim: torch.Tensor, obs: Any, warmup: int = 0) -> torch.Tensor:
    """Mean of :func:`vnmse` over gauges."""
    return gauge_loss("vnmse", sim, obs, warmup)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nse": lambda s, o: 1.0 - nse(s, o),
    "kge": lambda s, o: 1.0 - kge(s, o),
    "vnmse": vnmse,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-gauge loss ``fn(sim, obs) -> [...]`` by name."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


def gauge_loss(name: str, sim: torch.Tensor, obs: Any, warmup: int = 0) -> torch.Tensor:
    """Scalar loss ``name`` over the gauges of ``sim``/``obs`` ``[..., G, T]`` after warm-up."""
    fn = get_loss(name)
    s, o = _trim(torch.as_tensor(sim), obs, warmup)
    per = fn(s, o)
    ok = torch.isfinite(per.detach())
    if not bool(ok.any()):
        raise ValueError(f"loss {name!r} is undefined at every gauge (no valid observation "
                         f"after the {warmup} warm-up steps, or zero observed variance)")
    return torch.where(ok, per, 0.0).sum() / ok.sum()

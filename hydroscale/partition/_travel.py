"""Per-reach travel-time bounds (routing steps) from IRF parameters or from their bounds."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..irf import IRFSpec, get_irf, irf_kernel, stack_params
from ._cut import PartitionError

__all__ = ["travel_time_bound"]

# Mean travel time (the IRF's centroid, routing steps) of the built-in IRFs, from named columns.
_MEAN: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {
    "pure_lag": lambda p: p["delay"],
    "linear_storage": lambda p: p["tau"],
    "nash_cascade": lambda p: p["n"] * p["tau"],
    "muskingum": lambda p: p["k"],
    "hayami": lambda p: p["L"] / p["c"],
}


def _numeric_mean(spec: IRFSpec, p: np.ndarray, substeps: int, max_steps: int) -> np.ndarray:
    """Centroid of the sub-step kernel, growing the window until the mass is captured."""
    n_taps = 64 * substeps
    pt = torch.as_tensor(p, dtype=torch.float64)
    while True:
        h = irf_kernel(spec, pt, n_taps, substeps, allow_unstable=True).double()
        mass = h.sum(dim=-1)
        if bool((mass > 1.0 - 1e-9).all()) or n_taps >= max_steps * substeps:
            break
        n_taps *= 2
    k = torch.arange(n_taps, dtype=torch.float64)
    # inflow held over sub-step 0 and outflow averaged per sub-step: the delay of tap k is k dt
    return ((h * k).sum(dim=-1) / mass / substeps).numpy()


def travel_time_bound(
    irf: str | IRFSpec,
    params: Any = None,
    *,
    n_reaches: int | None = None,
    factor: float = 1.0,
    margin: float = 0.0,
    substeps: int = 1,
    max_steps: int = 4096,
) -> np.ndarray:
    """Per-reach travel-time bound in routing steps, for :func:`partition_network`.

    The travel time of a reach is its IRF's mean delay (``k`` for Muskingum, ``tau`` for a
    linear store, ``n·tau`` for a Nash cascade, ``delay`` for a pure lag, ``L/c`` for Hayami;
    the kernel's centroid for other registered IRFs), so the sum along a path is the mean
    delay of the path kernel.  The bound returned is ``factor * mean + margin``.

    Parameters
    ----------
    irf : registered IRF name or spec.
    params : ``[N, P]`` parameters or a mapping name -> ``[N]`` (routing-step units).  ``None``
        uses the IRF's calibration bounds: the largest mean over the corners of the bounds box,
        the same for every reach (pass ``n_reaches``) -- the bound that holds for any parameter
        a calibration may reach.
    n_reaches : N, needed when ``params`` is ``None`` or all scalars.
    factor, margin : safety factor and additive margin (routing steps).
    substeps, max_steps : sub-steps and longest window used for the numerical centroid of
        IRFs without a closed form.

    Returns
    -------
    float64 [N], routing steps.
    """
    spec = get_irf(irf)
    if params is None:
        if n_reaches is None:
            raise PartitionError("travel_time_bound needs n_reaches when params is None")
        corners = np.array(
            list(itertools.product(*(spec.bounds[name] for name in spec.params))),
            dtype=np.float64,
        )
        mean = _mean(spec, corners, substeps, max_steps)
        t = np.full(int(n_reaches), float(mean.max()))
    else:
        p = stack_params(spec, params, n=n_reaches).detach().to(torch.float64).cpu().numpy()
        if p.ndim != 2:
            raise PartitionError(
                f"params must be [N, {spec.n_params}] (columns {list(spec.params)}), "
                f"got shape {p.shape}"
            )
        t = _mean(spec, p, substeps, max_steps)
    if not np.isfinite(factor) or factor <= 0 or not np.isfinite(margin) or margin < 0:
        raise PartitionError(f"factor must be > 0 and margin >= 0, got {factor}, {margin}")
    return factor * t + margin


def _mean(spec: IRFSpec, p: np.ndarray, substeps: int, max_steps: int) -> np.ndarray:
    fn = _MEAN.get(spec.name)
    if fn is None:
        return _numeric_mean(spec, p, substeps, max_steps)
    return np.asarray(fn({name: p[:, i] for i, name in enumerate(spec.params)}), dtype=float)

"""Routing parameters in every form the API takes, normalised once (:func:`params_tensor`):
:func:`hydroscale.route` and :func:`hydroscale.distributed.route_distributed` both use it."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..irf import IRFSpec, stack_params
from ..network import RiverNetwork
from ._arrays import array_kind, is_dataarray, to_torch
from ._xarray import reach_alignment, reach_dim

__all__ = ["dt_seconds", "params_tensor"]


def dt_seconds(dt: Any) -> float:
    if isinstance(dt, datetime.timedelta):
        seconds = dt.total_seconds()
    elif isinstance(dt, np.timedelta64):
        seconds = float(dt / np.timedelta64(1, "s"))
    elif isinstance(dt, str):
        import pandas as pd

        seconds = pd.Timedelta(dt).total_seconds()
    elif isinstance(dt, (int, float, np.integer, np.floating)) and not isinstance(dt, bool):
        seconds = float(dt)
    else:
        raise TypeError(
            f"dt must be seconds (float), a timedelta, a numpy timedelta64 or a string like "
            f"'1D', got {dt!r}"
        )
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"dt must be a positive duration, got {dt!r}")
    return seconds


def param_values(network: RiverNetwork, value: Any, name: str) -> torch.Tensor:
    """One parameter column (scalar or ``[N]``) or table (``[N, P]``) as a tensor in network
    order; DataArrays are aligned by reach id, dask arrays computed."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be numeric, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.tensor(float(value), dtype=torch.float64)
    if isinstance(value, (list, tuple)):
        value = np.asarray(value, dtype=np.float64)
    if is_dataarray(value):
        dim = reach_dim(value.dims, name, required=False)
        if dim is not None:
            order = reach_alignment(network, value[dim].values, name, dim)
            value = value.transpose(dim, ...)
            if order is not None:
                value = value.isel({dim: order})
        value = value.data
    kind = array_kind(value, name)
    if kind == "dask":
        value = value.compute()
        kind = array_kind(value, name)
    t, _ = to_torch(value, kind)
    return t if t.is_floating_point() else t.to(torch.float64)


def params_tensor(network: RiverNetwork, spec: IRFSpec, params: Any,
                  dt: Any = None) -> torch.Tensor:
    """Per-reach parameters in every form :func:`hydroscale.route` takes, as one ``[N, P]``
    tensor (routing-step units, network order, columns in the IRF's order).

    ``params``: a mapping name -> scalar or ``[N]`` values (numpy, torch, cupy, jax, dask,
    DataArray with a reach dimension: aligned by id; lists), an ``[N, P]`` array, or a
    ``[reach, P]`` DataArray naming its columns.  Torch tensors keep their autograd graph.
    ``dt`` (seconds, timedelta, timedelta64 or ``"1D"``): the parameters are in the SI units
    the IRF declares and are converted to routing steps; None: already in steps.
    """
    n = network.n_reaches
    if params is None:
        raise ValueError(
            f"params are required: IRF {spec.name!r} takes {list(spec.params)} "
            f"(default calibration bounds {dict(spec.bounds)})"
        )
    dim = reach_dim(params.dims, "params", required=False) if is_dataarray(params) else None
    if dim is not None and params.ndim == 2:
        other = next(d for d in params.dims if d != dim)
        if other in params.coords and set(map(str, params[other].values)) == set(spec.params):
            params = {p: params.sel({other: p}) for p in spec.params}
    if isinstance(params, Mapping):
        cols = {k: param_values(network, v, f"params[{k!r}]") for k, v in params.items()}
        device = next((c.device for c in cols.values() if c.device.type != "cpu"), None)
        if device is not None:
            cols = {k: c.to(device) for k, c in cols.items()}
        for k, c in cols.items():
            if c.ndim > 1 or (c.ndim == 1 and c.shape[0] != n):
                raise ValueError(
                    f"params[{k!r}] must be a scalar or [N = {n}] values, got {tuple(c.shape)}"
                )
        p = stack_params(spec, cols, n=n)
    else:
        p = stack_params(spec, param_values(network, params, "params"))
    if tuple(p.shape) != (n, spec.n_params):
        raise ValueError(
            f"params must be [N = {n}, P = {spec.n_params}] (columns {list(spec.params)}), "
            f"got {tuple(p.shape)}"
        )
    if dt is not None:  # SI values -> routing-step units, by the IRF's declared units
        scale = spec.step_factors(dt_seconds(dt))
        p = p * torch.tensor(scale, dtype=p.dtype, device=p.device)
    return p

"""Parameter models: per-reach IRF parameters as trainable ``torch.nn.Module`` s.

Every model maps its input to IRF parameters ``[N, P]`` in routing-step units, within bounds,
through a sigmoid (:func:`hydroscale.irf.to_bounded`), so any real value of the trainable
weights gives admissible parameters:

- :class:`FreeParameters` keeps one unconstrained value per reach and parameter;
- :class:`AttributeMLP` maps reach attributes (length, slope, ...) through a small MLP, shared
  by all reaches (DiffHydro-style learned routing), so gauged reaches inform ungauged ones.

Both are called the same way, ``model(network_or_attributes=None, rows=None)``, where
``rows`` selects a subset of reaches (a cluster, for the distributed runtime).

Bounds default to the IRF's :attr:`~hydroscale.irf.IRFSpec.bounds` (routing-step units);
:func:`resolve_bounds` also takes scalars or per-reach arrays, and converts physical units
(seconds, m²/s, m/s) to routing-step units with ``dt``, by the units the IRF declares
(:attr:`~hydroscale.irf.IRFSpec.units`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..irf import IRFSpec, from_bounded, get_irf, stack_params, to_bounded
from ..network import RiverNetwork

__all__ = [
    "AttributeMLP",
    "FreeParameters",
    "ParameterModel",
    "resolve_bounds",
]

logger = logging.getLogger(__name__)

def resolve_bounds(
    irf: str | IRFSpec,
    bounds: Mapping[str, Any] | None = None,
    *,
    n: int | None = None,
    dt: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds ``[P]`` (or ``[N, P]`` when any bound is per reach).

    Parameters
    ----------
    irf : registered IRF name or spec.
    bounds : optional mapping name -> ``(low, high)``, each a scalar or an ``[N]`` array;
        parameters not named keep the IRF's default bounds (routing-step units).
    n : number of reaches, required to check per-reach bounds.
    dt : when given, the bounds in ``bounds`` are in SI units (seconds, m/s, m²/s) and are
        converted to routing-step units with the routing step ``dt`` (seconds), by the IRF's
        declared units (:meth:`~hydroscale.irf.IRFSpec.step_factors`).  The IRF's defaults
        are never converted.
    dtype : dtype of the returned tensors.
    """
    spec = get_irf(irf)
    bounds = dict(bounds or {})
    unknown = sorted(set(bounds) - set(spec.params))
    if unknown:
        raise ValueError(f"IRF {spec.name!r} has parameters {list(spec.params)}; bounds name "
                         f"unknown {unknown}")
    factors = dict(zip(spec.params, spec.step_factors(dt))) if dt is not None and bounds else {}
    lows, highs = [], []
    for name in spec.params:
        if name in bounds:
            lo, hi = bounds[name]
            lo = torch.as_tensor(lo, dtype=torch.float64)
            hi = torch.as_tensor(hi, dtype=torch.float64)
            if dt is not None:
                lo, hi = lo * factors[name], hi * factors[name]
        else:
            lo = torch.tensor(float(spec.bounds[name][0]), dtype=torch.float64)
            hi = torch.tensor(float(spec.bounds[name][1]), dtype=torch.float64)
        for v in (lo, hi):
            if v.ndim > 1 or (v.ndim == 1 and (n is None or v.shape[0] != n)):
                raise ValueError(f"bounds of {name!r} must be scalars or [N={n}] arrays, got "
                                 f"shape {tuple(v.shape)}")
        bad = ~(torch.isfinite(lo) & torch.isfinite(hi) & (lo < hi))
        if bool(bad.any()):
            rows = torch.nonzero(bad.reshape(-1)).flatten()[:10].tolist()
            raise ValueError(f"bounds of {name!r} must be finite with low < high; violated at "
                             f"rows {rows}")
        lows.append(lo)
        highs.append(hi)
    if any(v.ndim for v in lows + highs):
        size = (n,)
        low = torch.stack([v.expand(size) for v in lows], dim=-1)
        high = torch.stack([v.expand(size) for v in highs], dim=-1)
    else:
        low, high = torch.stack(lows), torch.stack(highs)
    return low.to(dtype), high.to(dtype)


class ParameterModel(nn.Module):
    """Base class: a module returning IRF parameters ``[N, P]`` within ``[low, high]``.

    Attributes
    ----------
    spec : the IRF.
    n_reaches : N.
    low, high : buffers ``[P]`` or ``[N, P]`` (routing-step units).
    """

    def __init__(
        self,
        irf: str | IRFSpec,
        n_reaches: int,
        bounds: Mapping[str, Any] | None = None,
        *,
        dt: float | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if int(n_reaches) != n_reaches or n_reaches < 1:
            raise ValueError(f"n_reaches must be a positive integer, got {n_reaches}")
        self.spec = get_irf(irf)
        self.n_reaches = int(n_reaches)
        low, high = resolve_bounds(self.spec, bounds, n=self.n_reaches, dt=dt, dtype=dtype)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def _bounds_rows(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.low.ndim == 1 or rows is None:
            return self.low, self.high
        return self.low[rows], self.high[rows]

    def as_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The parameters as a mapping name -> ``[N]`` (detached)."""
        p = self(*args, **kwargs).detach()
        return {name: p[:, i] for i, name in enumerate(self.spec.params)}

    @staticmethod
    def _rows(rows: Any, device: torch.device) -> torch.Tensor | None:
        if rows is None:
            return None
        return torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)


class FreeParameters(ParameterModel):
    """One free value per reach and parameter, mapped into the bounds by a sigmoid.

    Parameters
    ----------
    irf : registered IRF name or spec.
    n_reaches : N (or pass a :class:`~hydroscale.network.RiverNetwork` as ``network``).
    bounds, dt : see :func:`resolve_bounds`.
    init : initial parameters ``[N, P]``, ``[P]`` or mapping name -> scalar/``[N]``
        (routing-step units, strictly inside the bounds); default the middle of the bounds.
    dtype : dtype of the trainable tensor ``raw`` ``[N, P]``.

    Calling ``model()`` returns ``[N, P]``; ``model(rows=idx)`` returns ``[len(idx), P]``.
    """

    def __init__(
        self,
        irf: str | IRFSpec,
        n_reaches: int | RiverNetwork,
        bounds: Mapping[str, Any] | None = None,
        *,
        init: Any = None,
        dt: float | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if isinstance(n_reaches, RiverNetwork):
            n_reaches = n_reaches.n_reaches
        super().__init__(irf, n_reaches, bounds, dt=dt, dtype=dtype)
        raw = torch.zeros(self.n_reaches, self.spec.n_params, dtype=dtype)
        self.raw = nn.Parameter(raw)
        if init is not None:
            self.set_values(init)

    @torch.no_grad()
    def set_values(self, values: Any) -> None:
        """Set the parameters to ``values`` ``[N, P]``/``[P]``/mapping (inside the bounds)."""
        if isinstance(values, Mapping):  # python scalars would otherwise become float32
            values = {k: torch.as_tensor(np.asarray(v, dtype=np.float64))
                      for k, v in values.items()}
        v = stack_params(self.spec, values, n=self.n_reaches).to(self.raw.dtype)
        v = v.expand(self.n_reaches, self.spec.n_params)
        try:
            self.raw.copy_(from_bounded(v, self.low, self.high))
        except ValueError as err:
            raise ValueError(f"initial {self.spec.name} parameters must lie strictly inside the "
                             f"bounds low={self.low.tolist() if self.low.ndim == 1 else '[N,P]'}, "
                             f"high={self.high.tolist() if self.high.ndim == 1 else '[N,P]'}: "
                             f"{err}") from None

    def forward(self, inputs: Any = None, rows: Any = None) -> torch.Tensor:
        """Parameters ``[N, P]`` (or ``[len(rows), P]``); ``inputs`` is ignored except that a
        network must have ``N`` reaches."""
        if isinstance(inputs, RiverNetwork) and inputs.n_reaches != self.n_reaches:
            raise ValueError(f"this model holds {self.n_reaches} reaches, the network has "
                             f"{inputs.n_reaches}")
        idx = self._rows(rows, self.raw.device)
        raw = self.raw if idx is None else self.raw[idx]
        low, high = self._bounds_rows(idx)
        return to_bounded(raw, low, high)


class AttributeMLP(ParameterModel):
    """Reach attributes -> IRF parameters through an MLP shared by all reaches.

    Parameters
    ----------
    irf : registered IRF name or spec.
    network : the network whose ``attrs`` feed the model (also fixes N and the
        normalisation: each attribute is standardised by its mean and standard deviation over
        the network, after ``log1p`` for those listed in ``log``).
    attributes : names of the reach attributes to use (e.g. ``("length", "slope")``).
    hidden : hidden layer widths.
    log : attributes transformed by ``log1p`` first (positive, heavy-tailed ones).
    bounds, dt : see :func:`resolve_bounds` (per-reach bounds are allowed).
    seed : seed of the weight initialisation (the global RNG is left alone).
    dtype : dtype of the weights.

    ``model(network)`` or ``model(attributes [N, A])`` returns ``[N, P]``; ``model()`` uses the
    network given at construction; ``rows`` selects reaches.
    """

    def __init__(
        self,
        irf: str | IRFSpec,
        network: RiverNetwork,
        attributes: Sequence[str],
        *,
        hidden: Sequence[int] = (32, 32),
        log: Sequence[str] = (),
        bounds: Mapping[str, Any] | None = None,
        dt: float | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(irf, network.n_reaches, bounds, dt=dt, dtype=dtype)
        self.attributes = tuple(attributes)
        self.log = tuple(log)
        if not self.attributes:
            raise ValueError("AttributeMLP needs at least one attribute name")
        x = self._raw_attributes(network)
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0).clamp_min(1e-12))
        self.register_buffer("_x", ((x - self.mean) / self.std).to(dtype))
        gen = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = []
        width = len(self.attributes)
        for h in hidden:
            layers += [nn.Linear(width, int(h), dtype=dtype), nn.Tanh()]
            width = int(h)
        layers.append(nn.Linear(width, self.spec.n_params, dtype=dtype))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, nn.Linear):
                    bound = 1.0 / np.sqrt(m.in_features)
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen, dtype=dtype)
                                   * 2 * bound - bound)
                    m.bias.zero_()

    def _raw_attributes(self, network: RiverNetwork) -> torch.Tensor:
        missing = [a for a in self.attributes if a not in network.attrs]
        if missing:
            raise ValueError(f"the network has no attribute(s) {missing}; it has "
                             f"{sorted(network.attrs)}")
        cols = []
        for a in self.attributes:
            v = np.asarray(network.attrs[a], dtype=np.float64)
            if a in self.log:
                if np.any(v <= -1):
                    raise ValueError(f"attribute {a!r} has values <= -1, log1p is undefined")
                v = np.log1p(v)
            if not np.all(np.isfinite(v)):
                bad = network.ids[~np.isfinite(v)][:10].tolist()
                raise ValueError(f"attribute {a!r} is not finite at reach ids {bad}")
            cols.append(v)
        return torch.as_tensor(np.stack(cols, axis=-1))

    def normalise(self, network: RiverNetwork) -> torch.Tensor:
        """Standardised attributes ``[N, A]`` of ``network`` (with this model's statistics)."""
        x = self._raw_attributes(network)
        return ((x - self.mean.cpu()) / self.std.cpu()).to(self._x.dtype).to(self._x.device)

    def forward(self, inputs: Any = None, rows: Any = None) -> torch.Tensor:
        """Parameters ``[N, P]`` from the network given at construction (``inputs=None``),
        another network, or standardised attributes ``[N, A]``."""
        if inputs is None:
            x = self._x
        elif isinstance(inputs, RiverNetwork):
            x = self.normalise(inputs)
        else:
            x = torch.as_tensor(inputs, dtype=self._x.dtype, device=self._x.device)
            if x.ndim != 2 or x.shape[1] != len(self.attributes):
                raise ValueError(f"attributes must be [N, A={len(self.attributes)}] "
                                 f"({list(self.attributes)}), got {tuple(x.shape)}")
        idx = self._rows(rows, x.device)
        if idx is not None:
            x = x[idx]
        low, high = self._bounds_rows(idx)
        if low.ndim == 2 and low.shape[0] != x.shape[0]:
            raise ValueError("per-reach bounds need inputs with the model's N reaches")
        return to_bounded(self.net(x), low, high)

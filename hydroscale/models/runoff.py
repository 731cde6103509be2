"""Runoff models: forcings on source cells -> runoff depth per cell (mm per routing step).

Every runoff model is a :class:`RunoffModel`: a ``torch.nn.Module`` whose forward maps

- ``forcings`` ``[B, C, T, F]`` (B members or training windows, C cells/HRUs/catchments,
  T routing steps, F forcing variables in the model's own units, e.g. mm per step), and
- ``static`` ``[C, S]`` static attributes (or None when ``n_static == 0``)

to a non-negative runoff depth ``[B, C, T]`` in mm per routing step, which
:class:`~hydroscale.models.interpolation.CatchmentInterpolator` turns into lateral inflow.
Plug in another model by subclassing :class:`RunoffModel` and implementing :meth:`forward`.

Built in: :class:`LSTMRunoff` (the learned model of the hybrid pipeline) and
:class:`BucketModel` (a one-store soil-moisture accounting model used as a known truth in
synthetic twins), plus :func:`synthetic_forcings` (seeded precipitation and PET).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BucketModel", "LSTMRunoff", "RunoffModel", "synthetic_forcings"]

logger = logging.getLogger(__name__)


class RunoffModel(nn.Module, ABC):
    """Interface of runoff models (see the module docstring for shapes and units).

    Attributes
    ----------
    n_forcings : F, number of forcing variables expected in the last axis.
    n_static : S, number of static attributes per cell (0 for none).
    """

    n_forcings: int
    n_static: int

    @abstractmethod
    def forward(self, forcings: torch.Tensor, static: torch.Tensor | None = None) -> torch.Tensor:
        """Runoff depth ``[B, C, T]`` (mm per step, ``>= 0``) from ``forcings [B, C, T, F]``
        and ``static [C, S]``."""

    def check_inputs(
        self, forcings: torch.Tensor, static: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate shapes; returns the inputs as tensors."""
        x = torch.as_tensor(forcings)
        if x.ndim != 4 or x.shape[-1] != self.n_forcings:
            raise ValueError(f"forcings must be [B, C, T, F={self.n_forcings}], got "
                             f"{tuple(x.shape)}")
        if self.n_static == 0:
            return x, None
        if static is None:
            raise ValueError(f"this model needs static attributes [C, S={self.n_static}]")
        s = torch.as_tensor(static, device=x.device)
        if s.shape != (x.shape[1], self.n_static):
            raise ValueError(f"static must be [C={x.shape[1]}, S={self.n_static}], got "
                             f"{tuple(s.shape)}")
        return x, s


class LSTMRunoff(RunoffModel):
    r"""An LSTM from forcings and static attributes to runoff depth, one sequence per cell.

    The inputs are standardised with stored means and standard deviations (set them with
    :meth:`fit_normalisation` on training data); static attributes are repeated along time
    and concatenated with the forcings; a linear head and a softplus give a non-negative depth
    scaled by ``output_scale`` (mm per step, e.g. the mean precipitation).

    With ``precip_col`` the head has a second, *quick-flow* term: the fraction
    ``σ(a · h_t)`` in [0, 1] of the step's precipitation ``P_t`` that runs off at once,

    .. math:: q_t = P_t\, σ(a · h_t + b) + s\, \mathrm{softplus}(c · h_t + d),

    so that storm runoff scales with the storm.  The hidden state ``h_t`` is bounded (tanh),
    so the plain head cannot produce a runoff peak much beyond those it was trained on, and
    regresses peaks towards the mean; saturation- and infiltration-excess runoff is, on the
    contrary, close to linear in the rain of the step once the soil is wet.

    Parameters
    ----------
    n_forcings, n_static : F and S.
    hidden : LSTM hidden size.
    layers : stacked LSTM layers.
    dropout : dropout between layers and before the head.
    output_scale : mm per step represented by a unit head output.
    precip_col : optional column of the forcings holding precipitation in mm per step (the
        runoff's unit): adds the quick-flow term above.
    """

    def __init__(
        self,
        n_forcings: int,
        n_static: int = 0,
        *,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.0,
        output_scale: float = 1.0,
        precip_col: int | None = None,
    ) -> None:
        super().__init__()
        if n_forcings < 1 or n_static < 0 or hidden < 1 or layers < 1:
            raise ValueError(f"need n_forcings >= 1, n_static >= 0, hidden >= 1 and layers >= 1; "
                             f"got {n_forcings}, {n_static}, {hidden}, {layers}")
        if precip_col is not None and not 0 <= precip_col < n_forcings:
            raise ValueError(f"precip_col must be None or in [0, {n_forcings}), got {precip_col}")
        self.n_forcings, self.n_static = int(n_forcings), int(n_static)
        self.precip_col = None if precip_col is None else int(precip_col)
        n_in = self.n_forcings + self.n_static
        self.lstm = nn.LSTM(n_in, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1 if self.precip_col is None else 2)
        with torch.no_grad():  # forget gate bias 1: remember by default (long memory)
            for name, p in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    p[hidden : 2 * hidden].fill_(1.0)
        self.register_buffer("x_mean", torch.zeros(n_in))
        self.register_buffer("x_std", torch.ones(n_in))
        self.register_buffer("output_scale", torch.tensor(float(output_scale)))

    @torch.no_grad()
    def fit_normalisation(self, forcings: Any, static: Any = None) -> LSTMRunoff:
        """Set the input means and standard deviations from ``forcings [..., T, F]`` and
        ``static [C, S]`` (constant columns get a unit scale)."""
        x = torch.as_tensor(forcings, dtype=torch.float64).reshape(-1, self.n_forcings)
        mean, std = [x.mean(0)], [x.std(0)]
        if self.n_static:
            s = torch.as_tensor(static, dtype=torch.float64).reshape(-1, self.n_static)
            mean.append(s.mean(0))
            std.append(s.std(0) if s.shape[0] > 1 else torch.ones(self.n_static,
                                                                   dtype=torch.float64))
        m, s = torch.cat(mean), torch.cat(std)
        s = torch.where(s > 0, s, torch.ones_like(s))
        self.x_mean.copy_(m.to(self.x_mean))
        self.x_std.copy_(s.to(self.x_std))
        return self

    def forward(self, forcings: torch.Tensor, static: torch.Tensor | None = None) -> torch.Tensor:
        x, s = self.check_inputs(forcings, static)
        b, c, t, f = x.shape
        x = x.to(self.x_mean.dtype)
        rain = None if self.precip_col is None else x[..., self.precip_col]
        if s is not None:
            s = s.to(x.dtype).unsqueeze(0).unsqueeze(2).expand(b, c, t, self.n_static)
            x = torch.cat([x, s], dim=-1)
        x = (x - self.x_mean) / self.x_std
        h, _ = self.lstm(x.reshape(b * c, t, -1))
        y = self.head(self.drop(h)).reshape(b, c, t, -1)
        slow = nn.functional.softplus(y[..., 0]) * self.output_scale
        if rain is None:
            return slow
        return rain * torch.sigmoid(y[..., 1]) + slow


class BucketModel(RunoffModel):
    """One soil-moisture store per cell (a known truth for synthetic twins).

    Each step, with precipitation ``P`` and potential evapotranspiration ``E`` (mm per step):
    ``S += P``; actual ET ``E · min(1, S / S_max)`` leaves the store; water above ``S_max``
    runs off at once (saturation excess); a fraction ``k`` of the remaining store drains as
    baseflow.  Runoff = saturation excess + baseflow (mm per step).  Volume balance holds
    exactly: ``Σ P = Σ ET + Σ runoff + ΔS``.

    Parameters
    ----------
    capacity_mm : ``[C]`` store capacity ``S_max`` (mm, > 0).
    recession : ``[C]`` baseflow fraction ``k`` per step (in [0, 1]).
    initial_fill : initial store as a fraction of capacity.
    precip_col, pet_col : columns of ``P`` and ``E`` in the forcings (F = 2 by default).
    n_forcings : F.
    """

    n_static = 0

    def __init__(
        self,
        capacity_mm: Any,
        recession: Any,
        *,
        initial_fill: float = 0.5,
        precip_col: int = 0,
        pet_col: int = 1,
        n_forcings: int = 2,
    ) -> None:
        super().__init__()
        cap = torch.as_tensor(capacity_mm, dtype=torch.float64).ravel()
        k = torch.as_tensor(recession, dtype=torch.float64).ravel()
        if cap.shape != k.shape:
            raise ValueError(f"capacity_mm and recession must both be [C], got "
                             f"{tuple(cap.shape)} and {tuple(k.shape)}")
        if not bool(torch.all(cap > 0)):
            bad = torch.nonzero(cap <= 0).ravel()[:8].tolist()
            raise ValueError(f"capacity_mm must be > 0; cells {bad} are not")
        if not bool(torch.all((k >= 0) & (k <= 1))):
            bad = torch.nonzero((k < 0) | (k > 1)).ravel()[:8].tolist()
            raise ValueError(f"recession must be in [0, 1]; cells {bad} are not")
        if not 0 <= initial_fill <= 1:
            raise ValueError(f"initial_fill must be in [0, 1], got {initial_fill}")
        self.n_forcings = int(n_forcings)
        for name, col in (("precip_col", precip_col), ("pet_col", pet_col)):
            if not 0 <= col < self.n_forcings:
                raise ValueError(f"{name} must be in [0, {self.n_forcings}), got {col}")
        self.precip_col, self.pet_col = int(precip_col), int(pet_col)
        self.initial_fill = float(initial_fill)
        self.register_buffer("capacity_mm", cap)
        self.register_buffer("recession", k)

    def forward(
        self,
        forcings: torch.Tensor,
        static: torch.Tensor | None = None,
        *,
        return_fluxes: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Runoff ``[B, C, T]`` (mm per step); with ``return_fluxes`` a dict of ``runoff``,
        ``et`` ``[B, C, T]`` and the final ``storage`` ``[B, C]`` (mm)."""
        x, _ = self.check_inputs(forcings, None)
        if x.shape[1] != self.capacity_mm.numel():
            raise ValueError(f"forcings have {x.shape[1]} cells but the model "
                             f"{self.capacity_mm.numel()}")
        x = x.to(self.capacity_mm.dtype)
        p, e = x[..., self.precip_col], x[..., self.pet_col]
        cap, k = self.capacity_mm, self.recession
        s = (self.initial_fill * cap).expand(x.shape[0], -1)
        q_all, et_all = [], []
        for t in range(x.shape[2]):
            s = s + p[:, :, t]
            et = torch.minimum(e[:, :, t] * torch.clamp(s / cap, max=1.0), s)
            s = s - et
            excess = torch.relu(s - cap)
            s = s - excess
            base = k * s
            s = s - base
            q_all.append(excess + base)
            et_all.append(et)
        q = torch.stack(q_all, dim=-1)
        if return_fluxes:
            return {"runoff": q, "et": torch.stack(et_all, dim=-1), "storage": s}
        return q


def synthetic_forcings(
    n_cells: int,
    n_steps: int,
    *,
    seed: int = 0,
    wet_fraction: float = 0.3,
    mean_storm_mm: float = 8.0,
    pet_mm: tuple[float, float] = (1.0, 4.0),
    period: float = 365.0,
) -> np.ndarray:
    """Seeded daily-like forcings ``[C, T, 2]`` (float32): precipitation and PET, mm per step.

    Storm days are shared by all cells with a seasonal probability around ``wet_fraction``;
    storm depths are exponential (mean ``mean_storm_mm``) times a lognormal per-cell factor,
    with some light rain on other days, so cells are correlated but not identical.  PET follows
    a seasonal sine between ``pet_mm`` bounds, out of phase with the wet season.
    """
    if n_cells < 1 or n_steps < 1:
        raise ValueError(f"n_cells and n_steps must be >= 1, got {n_cells}, {n_steps}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps)
    season = np.sin(2 * np.pi * t / period)
    p_wet = np.clip(wet_fraction * (1 + 0.6 * season), 0.02, 0.95)
    regional = (rng.random(n_steps) < p_wet) * rng.exponential(mean_storm_mm, n_steps)
    local = rng.lognormal(mean=-0.125, sigma=0.5, size=(n_cells, n_steps))
    drizzle = (rng.random((n_cells, n_steps)) < 0.15) * rng.exponential(1.0, (n_cells, n_steps))
    precip = regional[None, :] * local + drizzle
    lo, hi = pet_mm
    pet = lo + (hi - lo) * 0.5 * (1 - season)
    pet = pet[None, :] * rng.uniform(0.9, 1.1, size=(n_cells, 1))
    return np.stack([precip, pet], axis=-1).astype(np.float32)

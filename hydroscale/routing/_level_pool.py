r"""The level-pool reservoir of NWM / WRF-Hydro, vectorised over lakes and differentiable.

A level-pool lake is a vertical-walled pool of surface area ``A`` whose water elevation ``H``
(m above the datum of its parameters) rises with inflow ``I`` and falls with the outflow
``Q(H)`` over its outlet works:

.. math::

    A \frac{dH}{dt} = I(t) - Q(H), \qquad
    Q(H) = Q_\mathrm{weir}(H) + Q_\mathrm{orifice}(H) + Q_\mathrm{over}(H)

with (``g = 9.81`` m/s², elevations in m, lengths in m, areas in m²)

* weir: :math:`C_w L_w \min(H - E_w, E_{max} - E_w)^{3/2}` when :math:`H > E_w`
  (the weir head is capped at the lake's maximum elevation :math:`E_{max}`);
* orifice: :math:`C_o A_o \sqrt{2 g (H - E_o)}` when :math:`H > E_o`;
* overtopping: :math:`C_w (L_w L_d) (H - E_{max})^{3/2}` when :math:`H > E_{max}` (the dam
  length :math:`L_d` enters as a product with the weir length, as NWM publishes it).

The initial elevation from the initial fractional depth ``ifd`` is
:math:`H_0 = E_o + \mathrm{ifd} (E_{max} - E_o)` (NWM's rule).

Time stepping is NWM's third-order Runge-Kutta of the ``LEVELPOOL_PHYSICS`` routine (stages at
1/3 and 2/3 of the step, weights 1/4 and 3/4), with these hydroscale conventions:

* the inflow of a sub-step is its mean (hydroscale's inflows are step means, DESIGN §1), so it
  is constant within the step (NWM interpolates linearly between the previous and the current
  inflow, with rounded stage fractions 0.33/0.67/0.667);
* the reported outflow of a step is the scheme's mean outflow
  :math:`\bar Q = Q_1/4 + 3 Q_3/4`, so that ``A (H' - H) = (I - \bar Q) dt`` holds exactly:
  the storage change equals inflow minus outflow (NWM reports :math:`Q(H')` at the step's end,
  which does not close the balance);
* each outflow term is switched by its own elevation test at each stage (NWM tests the
  overtopping at the step's start elevation in its stages).

Lake state is float64 whatever the routing dtype; the time loop runs once for all lakes of a
call (``[B, L]`` tensors per step), and autograd flows to inflow, initial elevation and every
parameter.  On CUDA (``backend="triton"``, :func:`hydroscale.kernels.select_backend`) the loop
is one Triton kernel (:func:`hydroscale.kernels.level_pool_steps`, a program per block of
lakes walking every step in registers, storing the level before each step when a gradient
is wanted); its backward is the *adjoint kernel*
(:func:`hydroscale.kernels.level_pool_adjoint`: the steps walked backwards from the stored
levels, each step's RK3 stages recomputed in registers, the parameters' adjoints summed per
lake).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "GRAVITY",
    "LEVEL_POOL_PARAMS",
    "LEVEL_POOL_UNITS",
    "elevation_for_outflow",
    "initial_elevation",
    "level_pool_discharge",
    "level_pool_params",
    "route_level_pool",
]

logger = logging.getLogger(__name__)

#: gravitational acceleration of NWM's orifice equation (m s-2)
GRAVITY = 9.81

#: level-pool parameters, column order of a ``[L, P]`` parameter tensor
LEVEL_POOL_PARAMS = (
    "area",  # A, lake surface area (m2)
    "max_elevation",  # E_max, NWM LkMxE (m)
    "weir_elevation",  # E_w, NWM WeirE (m)
    "weir_coefficient",  # C_w, NWM WeirC (m^0.5 s-1)
    "weir_length",  # L_w, NWM WeirL (m)
    "dam_length",  # L_d, NWM Dam_Length (m)
    "orifice_elevation",  # E_o, NWM OrificeE (m)
    "orifice_coefficient",  # C_o, NWM OrificeC (-)
    "orifice_area",  # A_o, NWM OrificeA (m2)
)

#: SI unit of each level-pool parameter
LEVEL_POOL_UNITS = {
    "area": "m2", "max_elevation": "m", "weir_elevation": "m", "weir_coefficient": "m0.5 s-1",
    "weir_length": "m", "dam_length": "m", "orifice_elevation": "m",
    "orifice_coefficient": "1", "orifice_area": "m2",
}


def level_pool_params(params: Any, n_lakes: int | None = None) -> dict[str, torch.Tensor]:
    """Level-pool parameters as a mapping name -> float64 tensor ``[L]``.

    ``params`` is a mapping name -> ``[L]`` array or scalar (every name of
    :data:`LEVEL_POOL_PARAMS`, SI units), or an ``[L, P]`` tensor with columns in that order.
    Tensors keep their autograd graph (cast to float64).
    """
    names = LEVEL_POOL_PARAMS
    if isinstance(params, Mapping):
        missing = [k for k in names if k not in params]
        unknown = sorted(set(params) - set(names))
        if missing or unknown:
            raise ValueError(f"level-pool parameters: missing {missing}, unknown {unknown}; "
                             f"the parameters are {list(names)}")
        cols = {k: torch.as_tensor(params[k]).to(torch.float64) for k in names}
    else:
        p = torch.as_tensor(params).to(torch.float64)
        if p.ndim != 2 or p.shape[1] != len(names):
            raise ValueError(f"level-pool parameters must be [L, {len(names)}] (columns "
                             f"{list(names)}), got {tuple(p.shape)}")
        cols = {k: p[:, j] for j, k in enumerate(names)}
    n = n_lakes
    for k, v in cols.items():
        if v.ndim > 1:
            raise ValueError(f"level-pool parameter {k!r} must be a scalar or [L], got "
                             f"{tuple(v.shape)}")
        if n is None and v.ndim == 1:
            n = int(v.shape[0])
    if n is None:
        n = 1
    out = {}
    for k, v in cols.items():
        if v.ndim == 1 and v.shape[0] != n:
            raise ValueError(f"level-pool parameter {k!r} has {v.shape[0]} values for {n} lakes")
        out[k] = v.expand(n) if v.ndim == 0 else v
    with torch.no_grad():
        bad = ~torch.isfinite(torch.stack(list(out.values())))
        if bool(bad.any()):
            j, i = (int(x) for x in torch.nonzero(bad)[0])
            raise ValueError(f"level-pool parameter {names[j]!r} of lake {i} is not finite")
        if bool((out["area"] <= 0).any()):
            i = int(torch.nonzero(out["area"] <= 0)[0, 0])
            raise ValueError(f"level-pool area must be > 0 m2, lake {i} has "
                             f"{float(out['area'][i])}")
    return out


def initial_elevation(params: Mapping[str, torch.Tensor], ifd: Any) -> torch.Tensor:
    """NWM's initial elevation ``E_o + ifd (E_max - E_o)`` (m), ``[L]`` float64."""
    f = torch.as_tensor(ifd, dtype=torch.float64, device=params["area"].device)
    eo = params["orifice_elevation"]
    return eo + f * (params["max_elevation"] - eo)


def elevation_for_outflow(params: Mapping[str, torch.Tensor], outflow: Any,
                          iterations: int = 100) -> torch.Tensor:
    """The water elevation (m) at which lakes release ``outflow`` (m³/s), ``[..., L]``
    float64: the inverse of :func:`level_pool_discharge` (increasing in the elevation), by
    bisection.  An outflow <= 0 gives the lowest elevation of the outlet works (below it
    nothing flows).  A warm start's lake level: a lake releasing a known discharge."""
    q = torch.as_tensor(outflow, dtype=torch.float64, device=params["area"].device).detach()
    p = {k: v.detach() for k, v in params.items()}
    lo = torch.minimum(p["orifice_elevation"], p["weir_elevation"]).expand_as(q).clone()
    hi = torch.maximum(p["max_elevation"], lo + 1.0).expand_as(q).clone()
    for _ in range(60):  # grow the bracket until it releases enough (overtopping is unbounded)
        short = level_pool_discharge(hi, p) < q
        if not bool(short.any()):
            break
        hi = torch.where(short, lo + 2.0 * (hi - lo), hi)
    for _ in range(int(iterations)):
        mid = 0.5 * (lo + hi)
        below = level_pool_discharge(mid, p) < q
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return torch.where(q > 0, hi, lo)


def _pos_pow(x: torch.Tensor, power: float) -> torch.Tensor:
    """``x ** power`` where ``x > 0``, else 0, with a finite gradient everywhere."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)) ** power,
                       torch.zeros_like(x))


def level_pool_discharge(h: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Outflow ``Q(H)`` (m³/s) of lakes at elevation ``h`` ``[..., L]`` (m), float64."""
    we, emax = p["weir_elevation"], p["max_elevation"]
    head = torch.minimum(h - we, emax - we)
    weir = p["weir_coefficient"] * p["weir_length"] * _pos_pow(head, 1.5)
    orifice = p["orifice_coefficient"] * p["orifice_area"] * _pos_pow(
        2.0 * GRAVITY * (h - p["orifice_elevation"]), 0.5)
    over = p["weir_coefficient"] * (p["weir_length"] * p["dam_length"]) * _pos_pow(h - emax,
                                                                                   1.5)
    return weir + orifice + over


class _LevelPoolKernel(torch.autograd.Function):
    """The Triton loop forward (storing the level before each step when a gradient is
    wanted), its adjoint kernel backward."""

    @staticmethod
    def forward(ctx, x, pm, h0, dt):  # noqa: D102
        from ..kernels import level_pool_steps

        grad = any(ctx.needs_input_grad[:3])
        res = level_pool_steps(x, pm, dt, h0, return_levels=grad)
        if grad:
            ctx.save_for_backward(x, pm, res[2])
        ctx.dt = dt
        return res[0], res[1]

    @staticmethod
    def backward(ctx, gq, gh):  # noqa: D102
        from ..kernels import level_pool_adjoint

        x, pm, levels = ctx.saved_tensors
        gx, gp, g0 = level_pool_adjoint(x, pm, ctx.dt, levels, gq, gh)
        return gx, gp, g0, None


def _loop(x: torch.Tensor, p: Mapping[str, torch.Tensor], dt: float, h: torch.Tensor,
          return_elevation: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The RK3 loop in torch ops: outflow ``[B, L, S]``, end elevation ``[B, L]`` and (with
    ``return_elevation``) the elevation after every step."""
    b, n, s = x.shape
    rate = dt / p["area"]  # m per (m3/s) over one step
    outs, levels = [], []
    for t in range(s):
        i = x[:, :, t]
        q1 = level_pool_discharge(h, p)
        q2 = level_pool_discharge(h + (i - q1) * rate / 3.0, p)
        q3 = level_pool_discharge(h + (i - q2) * rate * (2.0 / 3.0), p)
        q = 0.25 * q1 + 0.75 * q3
        h = h + (i - q) * rate
        outs.append(q)
        if return_elevation:
            levels.append(h)
    out = torch.stack(outs, dim=-1) if s else x.new_zeros(b, n, 0)
    return out, h, levels


def route_level_pool(
    inflow: torch.Tensor,
    params: Any,
    dt: float,
    elevation: Any,
    *,
    return_elevation: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step level-pool lakes through time: one loop over steps for all lakes.

    Parameters
    ----------
    inflow : ``[B, L, S]`` mean inflow of each lake during each step (m³/s).
    params : level-pool parameters (:func:`level_pool_params`: a mapping or ``[L, P]``; SI).
    dt : the step (s).
    elevation : the water elevation before the first step (m), ``[L]`` or ``[B, L]``
        (:func:`initial_elevation` gives NWM's start from ``ifd``).
    return_elevation : also return the elevation after every step ``[B, L, S]`` (the torch
        loop).
    backend : ``"triton"`` (one kernel; CUDA, or the CPU interpreter), ``"torch"`` (the
        loop in torch ops), or None / ``"auto"``
        (:func:`~hydroscale.kernels.select_backend`: Triton on CUDA).

    Returns
    -------
    outflow ``[B, L, S]`` (m³/s, each step's mean: ``A (H_end - H_start) = (inflow -
    outflow) dt``), the elevation after the last step ``[B, L]`` (m), and with
    ``return_elevation`` the elevations ``[B, L, S]``; all float64.
    """
    x = torch.as_tensor(inflow)
    if x.ndim != 3:
        raise ValueError(f"lake inflow must be [B, L, S], got {tuple(x.shape)}")
    b, n, s = x.shape
    p = level_pool_params(params, n)
    p = {k: v.to(x.device) for k, v in p.items()}
    x = x.to(torch.float64)
    dt = float(dt)
    if not dt > 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    h = torch.as_tensor(elevation).to(device=x.device, dtype=torch.float64)
    if h.ndim == 1:
        h = h.unsqueeze(0).expand(b, n)
    if tuple(h.shape) != (b, n):
        raise ValueError(f"elevation must be [L={n}] or [B={b}, L={n}], got {tuple(h.shape)}")
    return step_level_pool(x, p, dt, h, return_elevation=return_elevation, backend=backend)


def step_level_pool(
    x: torch.Tensor,
    p: Mapping[str, torch.Tensor],
    dt: float,
    h: torch.Tensor,
    *,
    return_elevation: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`route_level_pool` on inputs already checked: float64 inflow ``[B, L, S]``,
    parameters from :func:`level_pool_params` (``[L]`` each, on ``x``'s device), the step
    ``dt`` (s, > 0) and the elevation ``[B, L]`` (float64).  Nothing here waits for the
    device (the parameter checks do, twice: a caller stepping the same lakes chunk after
    chunk checks them once)."""
    b, n, s = x.shape
    from ..kernels import select_backend, triton_available

    if (not return_elevation and s and select_backend(x.device, backend) == "triton"
            and triton_available()):
        pm = torch.stack([p[k] for k in LEVEL_POOL_PARAMS], 1)
        logger.debug("level pool (triton): %d lakes x %d steps (batch %d)", n, s, b)
        return _LevelPoolKernel.apply(x, pm, h, dt)
    out, h, levels = _loop(x, p, dt, h, return_elevation)
    logger.debug("level pool: %d lakes x %d steps (batch %d)", n, s, b)
    if return_elevation:
        elev = torch.stack(levels, dim=-1) if levels else x.new_zeros(b, n, 0)
        return out, h, elev
    return out, h

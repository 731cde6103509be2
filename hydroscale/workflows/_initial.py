"""The state a ``route`` workflow starts from (``routing.initial``), as offsets.

A steady start at discharge ``Q0`` [N] is the state the network reaches when the constant
lateral inflow ``r* = Q0 - Σ_upstream-adjacent Q0`` has flowed forever (see
:mod:`hydroscale.routing._restart`); by linearity and unit-mass impulse responses a run from
it routes ``r - r*`` from dry rivers and adds ``Q0``.  ``routing.initial`` picks ``Q0``:

- ``dry``: none (no offsets);
- ``steady``: the steady discharge of the first step's inflow, ``Q0 = accumulate(r0)``;
- ``discharge``: a given discharge, ``routing.initial_discharge``: ``lower_colorado`` (the
  bundled basin's NWM streamflow at its first CHRTOUT time, lake reaches passing their
  inflow through, :meth:`~hydroscale.io.LowerColorado.nwm_discharge`) or a text file of one
  value per reach (m³/s, network order).

A given ``Q0`` that falls downstream somewhere (a wave passing, a reservoir filling) needs a
negative ``r*`` there; ``routing.initial_negative`` says what then happens: ``refuse`` (an
error naming the reaches), ``allow`` (route the negative ``r*``: the start reproduces ``Q0``
exactly, and with non-negative impulse responses the discharge stays >= 0, since a longer
path never drains faster than a shorter one), or ``clip`` (``r* = max(r*, 0)``, so the start
is ``accumulate(r*)``, above ``Q0`` downstream of each clipped reach).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ._inputs import RouteInputs

__all__ = ["initial_offsets"]

logger = logging.getLogger(__name__)


def _given_discharge(source: str, inputs: RouteInputs) -> np.ndarray:
    """``routing.initial_discharge`` as ``[N]`` float64 m³/s in network order."""
    net = inputs.network
    if source == "lower_colorado":
        if inputs.basin is None:
            raise ValueError("routing.initial_discharge 'lower_colorado' is the bundled "
                             "basin's NWM streamflow: use network.source lower_colorado, or "
                             "give a file of one discharge per reach")
        return inputs.basin.nwm_discharge(0)
    try:
        q0 = np.loadtxt(source, delimiter=",", dtype=np.float64, ndmin=2)[:, 0]
    except (OSError, ValueError) as err:
        raise ValueError(f"routing.initial_discharge {source!r}: not a readable text file of "
                         f"one discharge (m³/s) per line in network order ({err})") from None
    if q0.size != net.n_reaches:
        raise ValueError(f"routing.initial_discharge {source!r} has {q0.size} values for "
                         f"{net.n_reaches} reaches (one per line, in network order)")
    bad = ~np.isfinite(q0) | (q0 < 0)
    if bad.any():
        from ..network import format_ids

        raise ValueError(f"routing.initial_discharge {source!r}: {int(bad.sum())} negative, "
                         f"NaN or infinite value(s) at reaches {format_ids(net.ids[bad])}: "
                         "give a discharge >= 0 for every reach")
    return q0


def _on_network(op: Any, net: Any, values: np.ndarray) -> np.ndarray:
    """``op`` (:func:`~hydroscale.routing.steady_inflow` / ``steady_discharge``) of float64
    values ``[N]`` in network order."""
    import torch  # here: workflows load without torch until they route

    return op(net, torch.as_tensor(values, dtype=torch.float64)[None])[0].numpy()


def initial_offsets(rt: dict[str, Any], inputs: RouteInputs
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The steady start ``routing.initial`` asks for, as (inflow ``r*`` [N], discharge
    ``Q0`` [N]), float64 m³/s in network order; (None, None) for a dry start.  The run
    routes ``r - r*`` and adds ``Q0``."""
    from ..routing import steady_discharge, steady_inflow

    net = inputs.network
    if rt["initial"] == "dry":
        return None, None
    if rt["initial"] == "steady":
        r0 = inputs.forcing.read_all(0, 1)[:, 0].astype(np.float64)
        return r0, _on_network(steady_discharge, net, r0)
    q0 = _given_discharge(rt["initial_discharge"], inputs)
    r_star = _on_network(steady_inflow, net, q0)
    neg = r_star < 0
    if not neg.any():
        return r_star, q0
    mode = rt["initial_negative"]
    what = (f"the initial discharge ({rt['initial_discharge']}) falls downstream at "
            f"{int(neg.sum())} reach(es) (sum {float(r_star[neg].sum()):.4g} m³/s, largest "
            f"{float(-r_star.min()):.4g} m³/s at reach {int(net.ids[np.argmin(r_star)])}): "
            "its steady state needs negative lateral inflow r* = Q0 - upstream(Q0) there")
    if mode == "refuse":
        from ..network import format_ids

        raise ValueError(f"{what} (reaches {format_ids(net.ids[neg])}); set "
                         "routing.initial_negative to allow (route the negative r*: the start "
                         "is exactly the discharge given) or clip (r* = 0 there: the start "
                         "exceeds it below those reaches)")
    if mode == "allow":
        logger.info("%s; routing.initial_negative allow: routed as it is, the start equals "
                    "the discharge given", what)
        return r_star, q0
    r_star = np.maximum(r_star, 0.0)
    clipped = _on_network(steady_discharge, net, r_star)
    logger.warning("%s; routing.initial_negative clip: r* = 0 there, so the start exceeds "
                   "the discharge given below them (by at most %.4g m³/s)", what,
                   float((clipped - q0).max()))
    return r_star, clipped

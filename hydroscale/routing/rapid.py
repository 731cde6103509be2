r"""RAPID mode: the matrix Muskingum of RAPID (David et al. 2011) as an exact linear engine.

RAPID routes with a sub-step :math:`\Delta t_R` (``f = Δt / Δt_R`` sub-steps per inflow
interval Δt) and, at every sub-step, solves

.. math:: (I - C_1 N)\,Q^{s+1} = C_2 N Q^{s} + (C_1 + C_2)\,Q_{ext} + C_3 Q^{s},

with :math:`N_{ji} = 1` when reach i flows into reach j, :math:`Q_{ext}` the interval's
external inflow (constant over its f sub-steps) and :math:`Q^0 = Q_{init}`.  The reported
:math:`Q_{out}` of an interval is the mean of the f discharges at the *start* of its sub-steps
(:math:`Q^{s}` for the f values of s that begin inside the interval) and :math:`Q_{final}` is the
discharge at the end of the last sub-step.  Coefficients (RAPID ``rapid_routing_param``):

.. math:: C_1 = \frac{\Delta t_R/2 - kx}{D},\; C_2 = \frac{\Delta t_R/2 + kx}{D},\;
          C_3 = \frac{k(1-x) - \Delta t_R/2}{D},\; D = k(1-x) + \Delta t_R/2.

Because everything is linear and every reach has one downstream reach, this equals, reach by
reach in topological order with :math:`U_j = \sum_{i \to j} Q_i` (sub-step states):

.. math:: Q_j = h^{up}_j ⊛ U_j + h^{lat}_j ⊛ Q_{ext,j} + \text{(free response of } Q_{init}),

with :math:`h^{up} = [C_1, (C_2 + C_1 C_3) C_3^{m-1}]` (the Muskingum kernel),
:math:`h^{lat}[m] = (C_1 + C_2) C_3^m` (lateral inflow enters both inflow terms) and free
response :math:`C_3^{s-1}(C_2 U_j^0 + C_3 Q^0_j)` for :math:`s \ge 1`.  The convolutions are
exact zero-padded FFTs in float64; the result is differentiable w.r.t. ``qext``, ``k``, ``x``
and ``qinit`` through torch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..network import RiverNetwork
from .oracle import as_batched_runoff

__all__ = ["rapid_coefficients", "route_rapid"]

logger = logging.getLogger(__name__)


def rapid_coefficients(
    k_s: torch.Tensor, x: torch.Tensor, dtR_s: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RAPID's Muskingum ``C1, C2, C3`` (float64 [N]) for ``k`` (s), ``x`` and sub-step (s)."""
    den = k_s * (1.0 - x) + dtR_s / 2.0
    c1 = (dtR_s / 2.0 - k_s * x) / den
    c2 = (dtR_s / 2.0 + k_s * x) / den
    c3 = (k_s * (1.0 - x) - dtR_s / 2.0) / den
    return c1, c2, c3


def _substeps(dt_s: float, dtR_s: float) -> int:
    if dt_s <= 0 or dtR_s <= 0:
        raise ValueError(f"dt_s and dtR_s must be > 0, got dt_s={dt_s}, dtR_s={dtR_s}")
    f = round(dt_s / dtR_s)
    if f < 1 or abs(f * dtR_s - dt_s) > 1e-9 * dt_s:
        raise ValueError(
            f"the inflow interval dt_s={dt_s} must be a whole multiple of the routing sub-step "
            f"dtR_s={dtR_s} (RAPID's ZS_TauR / ZS_dtR); choose dtR_s = dt_s / f for integer f"
        )
    return int(f)


def route_rapid(
    network: RiverNetwork,
    qext: Any,
    k_s: Any,
    x: Any,
    dt_s: float,
    dtR_s: float,
    qinit: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route external inflow exactly as RAPID's matrix Muskingum does.

    Parameters
    ----------
    network : N reaches (the rows of every array, in ``network.ids`` order).
    qext : external (lateral) inflow ``[N, T]`` or ``[B, N, T]`` (m³/s, mean of each interval).
    k_s : Muskingum k ``[N]`` (s).
    x : Muskingum x ``[N]`` (-).
    dt_s : inflow interval Δt (s), RAPID's ``ZS_TauR``.
    dtR_s : routing sub-step (s), RAPID's ``ZS_dtR``; ``dt_s / dtR_s`` must be an integer.
    qinit : initial discharge ``[N]`` or ``[B, N]`` (m³/s) at the start of the first interval;
        default 0 (RAPID without ``Qinit_file``).

    Returns
    -------
    (Qout, Qfinal) : float64 ``[..., N, T]`` (m³/s; mean over each interval of the discharges
    at the start of its sub-steps) and ``[..., N]`` (m³/s; instantaneous, end of the run),
    on the device of ``qext``, with the rank of ``qext``.

    Memory is ``O(B · N · T · f)`` float64 (like the oracle): route long runs in time chunks,
    passing ``Qfinal`` of one chunk as ``qinit`` of the next (exact, as RAPID's restarts).
    """
    f = _substeps(float(dt_s), float(dtR_s))
    n = network.n_reaches
    q, added = as_batched_runoff(qext, n, "qext")
    q = q.to(torch.float64)
    device = q.device
    bsz, _, steps = q.shape
    kk = torch.as_tensor(k_s, dtype=torch.float64, device=device)
    xx = torch.as_tensor(x, dtype=torch.float64, device=device)
    for name, v in (("k_s", kk), ("x", xx)):
        if v.shape != (n,):
            raise ValueError(f"{name} must be [N={n}], got {tuple(v.shape)}")
    bad = torch.nonzero((kk <= 0) | (xx < 0) | (xx > 0.5)).flatten()
    if bad.numel():
        i = bad[:5].tolist()
        raise ValueError(
            f"RAPID needs k > 0 s and 0 <= x <= 0.5; reaches {network.ids[i].tolist()} have "
            f"k={kk[i].tolist()}, x={xx[i].tolist()}"
        )
    if qinit is None:
        q0 = torch.zeros(bsz, n, dtype=torch.float64, device=device)
    else:
        q0 = torch.as_tensor(qinit, dtype=torch.float64, device=device)
        if q0.shape[-1:] != (n,) or q0.ndim > 2:
            raise ValueError(f"qinit must be [N={n}] or [B, N], got {tuple(q0.shape)}")
        q0 = q0.expand(bsz, n)
    c1, c2, c3 = rapid_coefficients(kk, xx, float(dtR_s))
    length = steps * f
    m = torch.arange(length, dtype=torch.float64, device=device)
    c3p = c3.unsqueeze(-1) ** m  # C3^m, [N, S]
    h_lat = (c1 + c2).unsqueeze(-1) * c3p
    h_up = torch.cat(
        [c1.unsqueeze(-1), (c2 + c1 * c3).unsqueeze(-1) * c3p[:, : length - 1]], dim=-1
    )
    ext = torch.repeat_interleave(q, f, dim=-1)  # [B, N, S], sub-step s+1 uses interval s // f
    nfft = 1 << max(1, int(2 * length - 1).bit_length())
    h_up_f = torch.fft.rfft(h_up, n=nfft)  # [N, F], once for all levels
    down = torch.tensor(network.downstream, device=device)
    has = down >= 0
    up0 = torch.zeros_like(q0).index_add(1, down[has], q0[:, has])  # U at sub-step 0 (Qinit)
    # the parts that do not depend on upstream discharge, for all reaches at once
    local = torch.fft.irfft(torch.fft.rfft(ext, n=nfft) * torch.fft.rfft(h_lat, n=nfft), n=nfft)
    local = local[..., :length] + (c2 * up0 + c3 * q0).unsqueeze(-1) * c3p
    up = torch.zeros_like(ext)  # U_j at sub-steps 1..S
    states = torch.empty(bsz, n, length, dtype=torch.float64, device=device)  # Q at 1..S
    order = torch.tensor(network.topo_order, device=device)
    ptr = network.level_ptr
    for lv in range(network.n_levels):
        idx = order[int(ptr[lv]) : int(ptr[lv + 1])]
        if lv == 0:  # headwaters: no upstream inflow
            out = local[:, idx]
        else:
            spec = torch.fft.rfft(up[:, idx], n=nfft) * h_up_f[idx]
            out = torch.fft.irfft(spec, n=nfft)[..., :length] + local[:, idx]
        states[:, idx] = out
        d = down[idx]
        keep = d >= 0
        if bool(keep.any()):
            up.index_add_(1, d[keep], out[:, keep])
    starts = torch.cat([q0.unsqueeze(-1), states[..., :-1]], dim=-1)  # Q at 0..S-1
    qout = starts.reshape(bsz, n, steps, f).mean(dim=-1)
    qfinal = states[..., -1]
    logger.debug("RAPID mode routed %d reaches, %d intervals x %d sub-steps", n, steps, f)
    if added:
        return qout[0], qfinal[0]
    return qout, qfinal

"""The float64 reference router: level by level, exact linear convolution, sub-steps.

This is the test oracle of every faster engine (DESIGN §1).  It applies the recursion
``Q_j = h_j ⊛ (r_j + Σ_{i upstream of j} Q_i)`` reach by reach in topological order, at
sub-step resolution, with the full-length kernel (no truncation) and zero-padded FFTs (no
circular wrap-around).  It favours obviousness over speed: memory is ``O(B · N · T · f)``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..irf import average_substeps, get_irf, irf_kernel, spread_to_substeps, stack_params
from ..network import RiverNetwork
from ._engines import EngineSpec, register_engine

__all__ = ["causal_conv_fft", "route_oracle", "as_batched_runoff"]

logger = logging.getLogger(__name__)


def causal_conv_fft(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Exact causal linear convolution ``y[t] = Σ_{s<=t} h[t-s] x[s]`` along the last axis.

    ``x`` ``[..., n, L]`` and ``h`` ``[n, K]`` (broadcast over leading dims); returns
    ``[..., n, L]``.  The FFT length is at least ``L + K - 1``, so nothing wraps around.
    """
    length = x.shape[-1]
    nfft = 1 << max(1, int(length + h.shape[-1] - 1).bit_length())
    y = torch.fft.irfft(torch.fft.rfft(x, n=nfft) * torch.fft.rfft(h, n=nfft), n=nfft)
    return y[..., :length]


def as_batched_runoff(
    runoff: Any, n_reaches: int, name: str = "runoff"
) -> tuple[torch.Tensor, bool]:
    """``runoff`` as a tensor ``[B, N, T]`` and whether a batch axis was added."""
    r = torch.as_tensor(runoff)
    if r.ndim == 2:
        r, added = r.unsqueeze(0), True
    elif r.ndim == 3:
        added = False
    else:
        raise ValueError(f"{name} must be [N, T] or [B, N, T], got {tuple(r.shape)}")
    if r.shape[1] != n_reaches:
        raise ValueError(
            f"{name} must have one row per reach ({n_reaches}) on axis -2, got {tuple(r.shape)}"
        )
    return r, added


def route_oracle(
    network: RiverNetwork,
    runoff: Any,
    irf: str,
    params: Any,
    *,
    substeps: int = 1,
    boundary_inflow: Any = None,
    return_substeps: bool = False,
    allow_unstable: bool = False,
) -> torch.Tensor:
    """Route lateral inflow through ``network`` exactly, in float64.

    Parameters
    ----------
    network : the river network (N reaches).
    runoff : lateral inflow ``[N, T]`` or ``[B, N, T]`` (m³/s, averaged over each routing step).
    irf : registered IRF name (``"muskingum"``, ``"hayami"``, ...).
    params : ``[N, P]`` per-reach parameters, or a mapping name -> ``[N]`` or scalar,
        in routing-step time units.
    substeps : f, route at ``dt = Δt / f``; inflow is spread evenly, outflow averaged back.
    boundary_inflow : optional extra inflow at the upstream end of reaches, at sub-step
        resolution ``[B, N, T * f]`` (m³/s), e.g. discharge from an upstream cluster.
    return_substeps : return discharge at sub-step resolution ``[..., T * f]``.
    allow_unstable : accept parameters the IRF's stability check rejects.

    Returns
    -------
    Discharge leaving each reach, float64, same rank as ``runoff`` (``[N, T]`` or ``[B, N, T]``),
    on the device of ``runoff``.
    """
    spec = get_irf(irf)
    n = network.n_reaches
    r, added = as_batched_runoff(runoff, n)
    r = r.to(torch.float64)
    device = r.device
    p = stack_params(spec, params, n=n).to(device=device, dtype=torch.float64)
    if p.shape[:-1] != (n,):
        raise ValueError(f"params must be [N={n}, P={spec.n_params}], got {tuple(p.shape)}")
    ids = torch.tensor(network.ids)
    irf_kernel(spec, p, 1, substeps, allow_unstable=allow_unstable, labels=ids)  # validate once
    inflow = spread_to_substeps(r, substeps).clone()
    length = inflow.shape[-1]
    if boundary_inflow is not None:
        b = torch.as_tensor(boundary_inflow, dtype=torch.float64, device=device)
        if b.ndim == 2:
            b = b.unsqueeze(0)
        if b.shape[1:] != inflow.shape[1:]:
            raise ValueError(
                f"boundary_inflow must be [B, N, T*f] = [*, {n}, {length}], got {tuple(b.shape)}"
            )
        inflow = inflow + b
    q = torch.zeros_like(inflow)
    order = torch.tensor(network.topo_order, device=device)
    ptr = network.level_ptr
    down = torch.tensor(network.downstream, device=device)
    for lv in range(network.n_levels):
        idx = order[int(ptr[lv]) : int(ptr[lv + 1])]
        h = irf_kernel(spec, p[idx], length, substeps, allow_unstable=True)
        out = causal_conv_fft(inflow[:, idx], h)
        q[:, idx] = out
        d = down[idx]
        has = d >= 0
        if bool(has.any()):
            inflow.index_add_(1, d[has], out[:, has])
    logger.debug("oracle routed %d reaches over %d levels", n, network.n_levels)
    if not return_substeps:
        q = average_substeps(q, substeps)
    return q[0] if added else q


def _oracle_engine(network, runoff, irf, params, substeps=1, **options):
    return route_oracle(network, runoff, irf, params, substeps=substeps, **options).to(runoff.dtype)


register_engine(EngineSpec("oracle", _oracle_engine, rank={"cpu": 0, "cuda": 0}))

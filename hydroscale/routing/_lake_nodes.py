"""Level-pool lakes as node clusters of a partition cut at the lakes: :class:`LakeNodes`.

The lake step both lake paths of the block-sparse engine share: the one-device
:class:`~hydroscale.routing.LakeRouter` (its StagedRouter's ``node_step``) and the distributed
runtime (a group of lakes, one task per time chunk).  A lake's inflow is the runoff of its
reaches, constant over the ``f`` sub-steps of each step, plus the ``f`` polyphase channels of
its inlets (the exits of the clusters feeding it); its outflow leaves as the ``f`` channels of
its outlet, an exit.  All lakes of a call run in one fused time loop
(:func:`~hydroscale.routing.route_level_pool`'s loop, float64 state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._lakes import LakeLayout
from ._level_pool import elevation_for_outflow, level_pool_params, step_level_pool
from ._nodes import NodeRun
from ._rivtree import RivTreeCluster
from ._transfer import inlet_feed, sum_inflow

__all__ = ["LakeNodes", "LakeStep"]

logger = logging.getLogger(__name__)


@dataclass
class LakeStep:
    """What one lake step did: ``lakes [l]`` (indices into the layout's lakes), the
    elevation after the last sub-step ``[B, l]`` (m), and the inflow and outflow volumes
    ``[B, l]`` (m³), float64."""

    lakes: torch.Tensor
    elevation: torch.Tensor
    inflow_volume: torch.Tensor
    outflow_volume: torch.Tensor


class LakeNodes:
    """The lakes of ``layout`` as node clusters of ``clusters`` (every lake one cluster, e.g.
    from :meth:`~hydroscale.routing.LakeLayout.cut`; a cluster may hold several lakes).

    Parameters
    ----------
    clusters : the partition (its clusters holding lakes hold nothing else).
    layout : the lakes bound to the same network.
    dt : the routing step (s); lakes step at ``dt / substeps``.
    substeps : ``f``, the sub-steps per routing step of the transfer channels.
    device : where the index tensors live.
    """

    def __init__(self, clusters: RivTreeCluster, layout: LakeLayout, *, dt: float,
                 substeps: int, device: Any = None) -> None:
        self.clusters, self.layout = clusters, layout
        self.dt, self.f = float(dt), int(substeps)
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be the routing step in seconds (> 0), got {dt}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        rl = layout.reach_lake
        lake_c = np.zeros(clusters.n_clusters, dtype=bool)
        lake_c[clusters.cluster_of[rl >= 0]] = True
        mixed = np.flatnonzero(lake_c[clusters.cluster_of] & (rl < 0))
        if mixed.size:
            raise ValueError(f"clusters {np.unique(clusters.cluster_of[mixed])[:10].tolist()} "
                             "hold lake reaches and reaches outside lakes: cut the partition "
                             "at the lakes (LakeLayout.cut)")
        self.is_lake_cluster = lake_c
        down = clusters.network.downstream
        src = np.flatnonzero((rl < 0) & (down >= 0))
        src = src[rl[down[src]] >= 0]  # reaches outside lakes draining into one
        self._feeders = (src, rl[down[src]])
        self._index: dict[Any, tuple[torch.Tensor, ...]] = {}
        self._feed: dict[int, Any] = {}
        #: float64 values of sub-step inflow built at most at a time (see :meth:`step`)
        self.max_elements = 1 << 27

    def inflow_for(self, cluster: int, outflows: dict[int, torch.Tensor]
                   ) -> torch.Tensor | None:
        """The inlet inflow ``[B, n_inlet_c, f, T]`` of lake cluster ``cluster`` from the
        outflows ``{upstream cluster: [B, n_exit, f, T]}`` feeding it (None without inlets),
        as :meth:`~hydroscale.routing.StagedRouter.inflow_for` sums them."""
        c = int(cluster)
        if c not in self._feed:
            self._feed[c] = inlet_feed(self.clusters, c, self.device)
        return sum_inflow(self._feed[c], c, outflows)

    def initial_elevation(self, run: NodeRun, batch: int,
                          params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """NWM's start elevation (``ifd``) of the run's lakes, ``[B, l]`` float64 (m)."""
        p = self.params() if params is None else params
        lakes = self.lakes_of(run)
        ifd = torch.tensor(self.layout.lakes.ifd, device=self.device)[lakes]
        eo, emax = p["orifice_elevation"][lakes], p["max_elevation"][lakes]
        return (eo + ifd * (emax - eo)).detach().unsqueeze(0).expand(batch, -1).clone()

    def run_of(self, cluster: int) -> NodeRun:
        """The :class:`NodeRun` of one cluster (its reaches, inlets and exits)."""
        cs, c = self.clusters, int(cluster)
        if not self.is_lake_cluster[c]:
            raise ValueError(f"cluster {c} holds no lake")
        (r0, r1), (e0, e1), (i0, i1) = (cs.reach_ptr_cluster[c], cs.exit_ptr_cluster[c],
                                        cs.inlet_ptr_cluster[c])
        return NodeRun(("cluster", c), np.array([c]), cs.order[r0:r1], cs.inlet_reach[i0:i1],
                       cs.exit_reach[e0:e1])

    def steady_start(self, run: NodeRun, q0: torch.Tensor,
                     params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A warm start from discharge ``q0`` ``[B, N]`` (m³/s, network order; see
        :meth:`~hydroscale.routing.LakeLayout.steady_inflow`): the constant extra inflow
        ``[B, l]`` of the run's lakes (their feeders' ``q0``: the linear reaches route the
        departure from it) and their start elevation ``[B, l]`` (releasing ``q0`` at the
        outlet), float64."""
        lakes = self.lakes_of(run)
        q0 = q0.to(self.device, torch.float64)
        src, lake = (torch.as_tensor(a, device=self.device) for a in self._feeders)
        extra = q0.new_zeros(q0.shape[0], self.layout.lakes.n_lakes).index_add(
            1, lake, q0.index_select(1, src)).index_select(1, lakes)
        outlet = torch.tensor(self.layout.outlet, device=self.device)[lakes]
        pk = {k: v.index_select(0, lakes) for k, v in params.items()}
        return extra, elevation_for_outflow(pk, q0.index_select(1, outlet))

    def lakes_of(self, run: NodeRun) -> torch.Tensor:
        """The lakes (indices, ascending) of a run."""
        return self._run_index(run)[0]

    def _run_index(self, run: NodeRun) -> tuple[torch.Tensor, ...]:
        """``(lakes [l], member -> lake [n], inlet -> lake [n_in], exit -> lake [n_exit])``
        of a run (positions among ``lakes``), built once."""
        if run.key not in self._index:
            rl = self.layout.reach_lake
            lakes = np.unique(rl[run.reaches])
            pos = [np.searchsorted(lakes, rl[a]) for a in (run.reaches, run.inlets, run.exits)]
            self._index[run.key] = tuple(torch.as_tensor(a, device=self.device)
                                         for a in (lakes, *pos))
        return self._index[run.key]

    def params(self, lake_params: Any = None) -> dict[str, torch.Tensor]:
        """Level-pool parameters of all lakes (default the layout's), float64 ``[L]`` each,
        on the device (tensors keep their graph)."""
        lp = self.layout.lakes.params if lake_params is None else lake_params
        if isinstance(lp, np.ndarray):
            lp = torch.tensor(lp)
        if torch.is_tensor(lp):
            lp = lp.to(self.device)
        p = level_pool_params(lp, self.layout.lakes.n_lakes)
        return {k: v.to(self.device) for k, v in p.items()}

    def step(self, run: NodeRun, runoff: torch.Tensor, inflow: torch.Tensor | None,
             elevation: torch.Tensor, params: dict[str, torch.Tensor],
             extra_inflow: torch.Tensor | None = None, *, out_dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, LakeStep]:
        """Step the lakes of ``run`` over one time chunk.

        Parameters
        ----------
        runoff : ``[B, n, T]`` runoff of the run's reaches (m³/s, step means).
        inflow : ``[B, n_inlet, f, T]`` sub-step inflow of its inlets, or None.
        elevation : ``[B, l]`` start elevation (m) of the run's lakes (:meth:`lakes_of`).
        params : :meth:`params` (all lakes, checked there; rows of the run's are taken: the
            step does not check them again, nor wait for the device).
        extra_inflow : optional constant inflow ``[B, l]`` (m³/s) per lake (a warm start's
            discharge of the reaches feeding it).
        out_dtype : dtype of the discharge and outflow returned (default float64; the lake
            state is float64 whatever it is).

        Returns
        -------
        discharge ``[B, n, T]`` (each reach its lake's step-mean outflow), outflow
        ``[B, n_exit, f, T]`` (the sub-step outflow at the run's exits) and the
        :class:`LakeStep`.

        The float64 sub-step inflow is built :attr:`max_elements` values at most at a time
        (the loop runs over time in pieces, carrying the elevation: a decade at 24 sub-steps
        of 10,000 lakes would be 7 GB in one piece).
        """
        lakes, mem, inl, ex = self._run_index(run)
        b, _, t = runoff.shape
        f, n_l = self.f, int(lakes.numel())
        od = out_dtype or torch.float64
        dt_sub = self.dt / f
        pk = {name: v.index_select(0, lakes) for name, v in params.items()}
        n_in = 0 if inflow is None else int(inflow.shape[1])
        piece = max(1, min(t, int(self.max_elements) // max(1, b * f * max(n_l, n_in))))
        h, dqs, outs = elevation.to(torch.float64), [], []
        vin = vout = torch.zeros(b, n_l, dtype=torch.float64, device=runoff.device)
        for a in range(0, t, piece):
            e = min(t, a + piece)
            tt = e - a
            x = runoff[..., a:e].to(torch.float64)
            # the sub-step inflow time-major, [B, tt, f, l]: each sub-step's lakes contiguous
            # (the Triton loop reads and writes them coalesced)
            sub = torch.empty(b, tt, f, n_l, dtype=torch.float64, device=x.device)
            xl = x.new_zeros(b, n_l, tt).index_add(1, mem, x)
            sub = sub.copy_(xl.transpose(1, 2)[:, :, None, :].expand(b, tt, f, n_l))
            if inflow is not None:
                sub.permute(0, 3, 2, 1).index_add_(1, inl,
                                                   inflow[..., a:e].to(torch.float64))
            if extra_inflow is not None:
                sub = sub.add_(extra_inflow.to(torch.float64)[:, None, None, :])
            out, h = step_level_pool(sub.view(b, tt * f, n_l).transpose(1, 2), pk, dt_sub, h)
            o4 = out.view(b, n_l, tt, f)  # a view of the time-major [B, tt f, l] output
            dqs.append(o4.mean(-1).index_select(1, mem).to(od))
            outs.append(o4.transpose(2, 3).index_select(1, ex).to(od))
            vin = vin + sub.sum((1, 2)) * dt_sub
            vout = vout + out.sum(-1) * dt_sub
        if not dqs:
            return (runoff.new_zeros(b, mem.numel(), 0, dtype=od),
                    runoff.new_zeros(b, ex.numel(), f, 0, dtype=od),
                    LakeStep(lakes, h, vin, vout))
        cat = (lambda xs, d: xs[0] if len(xs) == 1 else torch.cat(xs, d))  # noqa: E731
        return cat(dqs, -1), cat(outs, -1), LakeStep(lakes, h, vin, vout)

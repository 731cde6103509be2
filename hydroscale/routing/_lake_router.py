"""Routing a network with level-pool lakes on one device: :class:`LakeRouter`.

The network is cut at its lakes (:class:`~hydroscale.routing.LakeLayout`).  Two paths:

* the block-sparse engines (``torch``, ``triton``): one
  :class:`~hydroscale.routing.StagedRouter` over the whole network, partitioned so that each
  lake is its own cluster (:meth:`~hydroscale.routing.LakeLayout.cut`): the reaches flowing
  into a lake are cluster exits, the reach below its outlet an inlet.  The linear reaches are
  routed at routing-step resolution with the ``f`` polyphase sub-step channels only at exits
  and inlets (as without lakes); the lakes are *node clusters* (:mod:`._nodes`) stepped
  between the waves that feed them and those they feed, the lakes of one wave in one fused
  time loop (:func:`~hydroscale.routing.route_level_pool`) on the ``f`` sub-step channels of
  their inlets, their sub-step outflow written back as the exit channels of their outlets;
* any other registered engine (no carried state, e.g. the float64 ``oracle``): stage by stage
  (the linear reaches of a stage routed at sub-step resolution ``dt = Δt / f``, one sub-step
  per step on ``T · f`` sub-steps with the IRF's time-like parameters rescaled, the lakes of
  the next stage stepped in one loop, everything crossing stages at sub-step resolution).

Outputs: discharge ``[B, N, T]`` averaged to the routing step like every engine; the reaches of
a lake all report the lake's outflow (the outlet's discharge, also at the lake's non-outlet
reaches).  Lake state (the water elevation, float64) and the linear stages' input histories
are carried between time chunks (:class:`LakeState`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..irf import average_substeps, spread_to_substeps, stack_params
from ..network import RiverNetwork
from ._engines import get_engine
from ._lake_nodes import LakeNodes, LakeStep
from ._lakes import LakeLayout, Lakes
from ._level_pool import (
    LEVEL_POOL_PARAMS,
    elevation_for_outflow,
    initial_elevation,
    level_pool_params,
    route_level_pool,
)
from ._nodes import NodeRun
from ._options import Routed, RoutingOptions
from ._reach_ops import check_steady_inflow
from ._rivtree import RivTreeCluster
from ._router import RouterState, RoutingKernels, StagedRouter

__all__ = ["LakeRouter", "LakeState", "route_lakes", "substep_params"]

logger = logging.getLogger(__name__)


def substep_params(spec: Any, params: torch.Tensor, substeps: int) -> torch.Tensor:
    """IRF parameters ``[N, P]`` in routing-step units -> the same in sub-step units
    (``value * f ** e``, ``e`` the power of seconds of each parameter's unit): the kernel at
    ``substeps=1`` of the result is the kernel at ``substeps=f`` of ``params``."""
    f = int(substeps)
    if f == 1:
        return params
    if not spec.units_declared:
        raise ValueError(f"IRF {spec.name!r} declares no parameter units, so its parameters "
                         f"cannot be rescaled to sub-steps: routing with lakes and substeps={f} "
                         "needs an IRF registered with units= (or substeps=1)")
    exps = spec.time_exponents
    scale = torch.tensor([float(f) ** exps[p] for p in spec.params], dtype=params.dtype,
                         device=params.device)
    return params * scale


@dataclass
class LakeState:
    """What a :class:`LakeRouter` carries between time chunks.

    Attributes
    ----------
    elevation : ``[B, L]`` float64 water elevation of every lake (m).
    stages : the :class:`~hydroscale.routing.RouterState` of the linear router (input
        history): one for the block-sparse engines (the whole network's router); for the
        stage path one per reach stage (None for an empty stage or an engine without state).
    steps : routing steps routed so far.
    """

    elevation: torch.Tensor
    stages: list[RouterState | None]
    steps: int = 0

    def to(self, device: Any = None) -> LakeState:
        return LakeState(self.elevation.to(device),
                         [None if s is None else s.to(device) for s in self.stages], self.steps)


@dataclass
class _Stage:
    """The reaches of one stage and where their extra (boundary) inflow comes from."""

    reaches: np.ndarray  # [n] network indices
    network: RiverNetwork | None
    # (source stage, source positions in it, destination positions here)
    from_reaches: list[tuple[int, torch.Tensor, torch.Tensor]]
    # (lake indices, destination positions here)
    from_lakes: tuple[torch.Tensor, torch.Tensor] | None


@dataclass
class _LakeStage:
    """The lakes of one stage and their inflow sources."""

    lakes: torch.Tensor  # [l] lake indices
    members: torch.Tensor  # [m] network indices of their reaches
    member_lake: torch.Tensor  # [m] position (in ``lakes``) of each member's lake
    from_reaches: list[tuple[int, torch.Tensor, torch.Tensor]]
    from_lakes: tuple[torch.Tensor, torch.Tensor] | None


class LakeRouter(Routed):
    """Route a network with level-pool lakes on one device (differentiable).

    Parameters
    ----------
    network : the river network (N reaches).
    lakes : its lakes (:class:`~hydroscale.routing.Lakes`, or a
        :class:`~hydroscale.routing.LakeLayout` already bound to ``network``).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`; ``**routing`` keywords
        build or amend it).  ``window`` is in routing steps (``"auto"``: fitted per stage).
    dt : the routing step in seconds (lakes are physical: they need it); a lake steps at
        ``dt / substeps``.
    engine : the linear engine: ``"torch"`` or ``"triton"`` (a StagedRouter per stage; carries
        state between chunks), or another registered engine (e.g. ``"oracle"``; no state).
    partition : optional ``partition(network) -> cluster_of [N]`` for the StagedRouter
        (default one cluster per basin), cut at the lakes
        (:meth:`~hydroscale.routing.LakeLayout.cut`).
    device : where the routers' index tensors live (default CPU).
    """

    def __init__(self, network: RiverNetwork, lakes: Lakes | LakeLayout,
                 options: RoutingOptions | None = None, *, dt: float, engine: str = "torch",
                 partition: Callable[[RiverNetwork], np.ndarray] | None = None,
                 device: Any = None, **routing: Any) -> None:
        self._set_options(options, routing, device)
        self.network = network
        self.layout = lakes if isinstance(lakes, LakeLayout) else LakeLayout.build(network,
                                                                                   lakes)
        self.lakes = self.layout.lakes
        dt = float(dt)
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be the routing step in seconds (> 0), got {dt}")
        self.dt = dt
        self.engine = engine
        self.clustered = get_engine(engine).clustered
        self._partition = partition
        self._build()
        self.last_lakes: dict[str, torch.Tensor] | None = None

    @property
    def n_stages(self) -> int:
        """Lake stages (lakes downstream of lakes)."""
        return self.layout.n_stages

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        self.stages: list[_Stage] = []
        self.lake_stages: list[_LakeStage | None] = []
        self.router: StagedRouter | None = None
        if self.clustered:
            self._build_clustered()
        else:
            self._build_stages()
        logger.info("LakeRouter: %d reaches, %d lakes, %d stage(s), engine %s (f=%d)",
                    self.network.n_reaches, self.lakes.n_lakes, self.n_stages, self.engine,
                    self.f)

    def _build_clustered(self) -> None:
        """One StagedRouter over the network cut at the lakes, the lakes as node clusters."""
        net, lay, dev = self.network, self.layout, self.device
        base = (RivTreeCluster.by_basin(net).cluster_of if self._partition is None
                else np.asarray(self._partition(net), np.int64))
        # the lakes of a stage in one wave: one fused level-pool loop per lake stage
        cluster_of, lake_cluster, wave_of = lay.wave_cut(net, base)
        self.clusters = RivTreeCluster(net, cluster_of, wave_of)
        self.router = StagedRouter(self.clusters, self.options, device=dev,
                                   nodes=np.unique(lake_cluster))
        down = net.downstream
        src = np.flatnonzero((lay.reach_lake < 0) & (down >= 0))
        src = src[lay.reach_lake[down[src]] >= 0]  # reaches outside lakes draining into one
        self._into_lake = (torch.as_tensor(src, device=dev),
                           torch.as_tensor(lay.reach_lake[down[src]], device=dev))
        self.nodes = LakeNodes(self.clusters, lay, dt=self.dt, substeps=self.f, device=dev)

    def _build_stages(self) -> None:
        lay, dev = self.layout, self.device
        n_st = lay.n_stages
        pos = np.full(self.network.n_reaches, -1, np.int64)  # position within its stage
        self.stages: list[_Stage] = []
        for k in range(n_st + 1):
            idx = lay.stage_reaches(k)
            pos[idx] = np.arange(idx.size)
            self.stages.append(_Stage(idx, self.network.subnetwork(idx) if idx.size else None,
                                      [], None))
        lake_pos = np.full(self.lakes.n_lakes, -1, np.int64)
        self.lake_stages: list[_LakeStage | None] = [None]
        member_idx = np.flatnonzero(lay.reach_lake >= 0)
        for k in range(1, n_st + 1):
            lk = lay.stage_lakes(k)
            lake_pos[lk] = np.arange(lk.size)
            mem = member_idx[lay.lake_stage[lay.reach_lake[member_idx]] == k]
            self.lake_stages.append(_LakeStage(
                torch.as_tensor(lk, device=dev), torch.as_tensor(mem, device=dev),
                torch.as_tensor(lake_pos[lay.reach_lake[mem]], device=dev), [], None))
        # feeders: reaches outside lakes whose downstream reach is in another stage or a lake
        down = self.network.downstream
        src = np.flatnonzero((lay.reach_lake < 0) & (down >= 0))
        d = down[src]
        into_lake = lay.reach_lake[d] >= 0
        cross = ~into_lake & (lay.reach_stage[d] != lay.reach_stage[src])
        t = lambda a: torch.as_tensor(np.asarray(a, np.int64), device=dev)  # noqa: E731
        for s_stage in range(n_st + 1):
            sel = lay.reach_stage[src] == s_stage
            for k in range(n_st + 1):
                m = sel & cross & (lay.reach_stage[d] == k)
                if m.any():
                    self.stages[k].from_reaches.append((s_stage, t(pos[src[m]]), t(pos[d[m]])))
                m = sel & into_lake
                if k >= 1 and m.any():
                    lk_of = lay.reach_lake[d[m]]
                    mk = lay.lake_stage[lk_of] == k
                    if mk.any():
                        self.lake_stages[k].from_reaches.append(
                            (s_stage, t(pos[src[m][mk]]), t(lake_pos[lk_of[mk]])))
        # lakes draining into a reach (its stage) or into a lake (the next lake's stage)
        ld = lay.lake_down
        has = np.flatnonzero(ld >= 0)
        to_reach = has[lay.reach_lake[ld[has]] < 0]
        to_lake = has[lay.reach_lake[ld[has]] >= 0]
        for k in range(n_st + 1):
            m = to_reach[lay.reach_stage[ld[to_reach]] == k]
            if m.size:
                self.stages[k].from_lakes = (t(m), t(pos[ld[m]]))
            if k >= 1:
                nxt = lay.reach_lake[ld[to_lake]]
                m2 = lay.lake_stage[nxt] == k
                if m2.any():
                    self.lake_stages[k].from_lakes = (t(to_lake[m2]), t(lake_pos[nxt[m2]]))

    def _p(self, params: Any) -> torch.Tensor:
        p = stack_params(self.spec, params, n=self.network.n_reaches)
        return p.to(device=self.device, dtype=self.dtype)

    def fit_windows(self, params: Any, run_steps: int | None = None) -> list[int | None]:
        """Resolve the ``"auto"`` window of the router for ``params`` (routing steps; at most
        ``run_steps`` steps of taps when given: a run that carries no state); one per
        router (one for the block-sparse engines)."""
        r = self.router
        if r is None:
            return [None] * len(self.stages)
        if r.window is None:
            r.window = r.auto_window(self._p(params).detach(), max_steps=run_steps)
        return [r.window]

    def aggregate(self, params: Any, run_steps: int | None = None
                  ) -> list[RoutingKernels | None]:
        """The path kernels (a list of one, the router's; for runs that route many chunks
        with fixed parameters: pass them as ``kernels=`` to :meth:`forward`); ``run_steps``:
        the whole run's length in routing steps when known (an ``"auto"`` window need not
        be longer)."""
        if self.router is None:
            raise RuntimeError(f"engine {self.engine!r} has no kernels to aggregate")
        self.fit_windows(params, run_steps)
        return [self.router.aggregate(self._p(params))]

    def init_state(self, batch: int, lake_params: Any = None) -> LakeState:
        """The start: lakes at NWM's ``ifd`` elevation, linear stages dry (zero history)."""
        lp = self._lake_params(lake_params)
        h0 = initial_elevation(lp, torch.tensor(self.lakes.ifd, device=self.device))
        r = self.router
        stages = ([None if r.window is None else r.init_state(batch)] if r is not None
                  else [None] * len(self.stages))
        return LakeState(h0.detach().unsqueeze(0).expand(batch, -1).clone(), stages, 0)

    def _lake_params(self, lake_params: Any) -> dict[str, torch.Tensor]:
        lp = self.lakes.params if lake_params is None else lake_params
        if isinstance(lp, np.ndarray):
            lp = torch.tensor(lp)
        if torch.is_tensor(lp):
            lp = lp.to(self.device)
        p = level_pool_params(lp, self.lakes.n_lakes)
        return {k: v.to(self.device) for k, v in p.items()}

    # ------------------------------------------------------------------ routing
    def forward(
        self,
        runoff: Any,
        params: Any = None,
        *,
        lake_params: Any = None,
        kernels: list[RoutingKernels | None] | None = None,
        state: LakeState | None = None,
        offsets: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, LakeState]:
        """Route ``runoff`` ``[B, N, T]`` (m³/s, step means, network order).

        Parameters
        ----------
        params : IRF parameters ``[N, P]`` (routing-step units; differentiable), or give
            ``kernels`` from :meth:`aggregate`.
        lake_params : level-pool parameters ``[L, P]`` (columns
            :data:`~hydroscale.routing.LEVEL_POOL_PARAMS`, SI; differentiable) or a mapping;
            default the lakes' own.
        state : from an earlier call's ``return_state`` (default :meth:`init_state`).
        offsets : a warm start ``(r_star [B, N], q0 [B, N])`` (:meth:`steady_offsets`):
            each linear stage routes its inflow minus ``r_star`` from dry and adds ``q0``
            (the steady state that yields ``q0``); without ``state``, each lake starts at the
            level that releases ``q0`` at its outlet reach
            (:func:`~hydroscale.routing.elevation_for_outflow`) instead of its ``ifd``.

        Returns
        -------
        discharge ``[B, N, T]`` (m³/s, step means, ``dtype``; lake reaches: the lake's
        outflow), and the new :class:`LakeState` with ``return_state``.
        :attr:`last_lakes` holds ``elevation_start``/``elevation_end`` ``[B, L]`` (m) and
        ``inflow_volume``/``outflow_volume`` ``[B, L]`` (m³) of the call, float64.
        """
        r = torch.as_tensor(runoff)
        n = self.network.n_reaches
        if r.ndim != 3 or r.shape[1] != n:
            raise ValueError(f"runoff must be [B, N={n}, T], got {tuple(r.shape)}")
        r = r.to(self.device, self.dtype)
        b, _, t = r.shape
        f = self.f
        if not self.clustered and (state is not None and any(state.stages) or return_state):
            raise ValueError(f"engine {self.engine!r} carries no state between calls: route "
                             "with engine='torch' or 'triton' to continue a run")
        if kernels is None and params is None:
            raise ValueError("give params [N, P] or kernels (LakeRouter.aggregate)")
        p_sub = None
        if params is not None and kernels is None:
            if self.clustered:
                self.fit_windows(params, None if (state is not None or return_state) else t)
            if self.router is None:
                p_sub = substep_params(self.spec, self._p(params), f)
        lp = self._lake_params(lake_params)
        if state is None:
            state = self.init_state(b, lake_params)
            state.stages = [None] * len(state.stages)
            if offsets is not None:
                q_out = offsets[2].index_select(
                    1, torch.tensor(self.layout.outlet, device=self.device))
                state.elevation = elevation_for_outflow(lp, q_out)
        elev = state.elevation.to(self.device, torch.float64)
        if tuple(elev.shape) != (b, self.lakes.n_lakes):
            raise ValueError(f"state elevation must be [B={b}, L={self.lakes.n_lakes}], got "
                             f"{tuple(elev.shape)}")
        if self.router is not None:
            return self._forward_clustered(r, params, lp, kernels, state, elev, offsets,
                                           return_state)
        r_sub = spread_to_substeps(r, f)
        stage_q: list[torch.Tensor | None] = []
        lake_out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        pieces_idx, pieces_q = [], []
        new_states: list[RouterState | None] = []
        h_end_parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        vin_parts, vout_parts = [], []
        dt_sub = self.dt / f
        for k, st in enumerate(self.stages):
            if k >= 1:  # the lakes of stage k first: everything feeding them is routed
                ls = self.lake_stages[k]
                x = r_sub.index_select(1, ls.members).to(torch.float64)
                inflow = torch.zeros(b, ls.lakes.numel(), t * f, dtype=torch.float64,
                                     device=self.device).index_add(1, ls.member_lake, x)
                inflow = self._gather(inflow, ls.from_reaches, ls.from_lakes, stage_q, lake_out)
                pk = {name: v.index_select(0, ls.lakes) for name, v in lp.items()}
                out, h1 = route_level_pool(inflow, pk, dt_sub, elev.index_select(1, ls.lakes))
                lake_out[k] = (ls.lakes, out)
                h_end_parts.append((ls.lakes, h1))
                vin_parts.append((ls.lakes, inflow.sum(-1) * dt_sub))
                vout_parts.append((ls.lakes, out.sum(-1) * dt_sub))
                q_step = average_substeps(out, f).to(self.dtype)
                pieces_idx.append(ls.members)
                pieces_q.append(q_step.index_select(1, ls.member_lake))
            if st.network is None:
                stage_q.append(None)
                new_states.append(None)
                continue
            idx = torch.as_tensor(st.reaches, device=self.device)
            x = r_sub.index_select(1, idx)
            x = self._gather(x, st.from_reaches, st.from_lakes, stage_q, lake_out)
            if offsets is not None:
                x = x - offsets[0].index_select(1, idx).to(x.dtype)[..., None]
            q_sub, new = self._route_stage(st, x, p_sub)
            if offsets is not None:
                q_sub = q_sub + offsets[1].index_select(1, idx).to(q_sub.dtype)[..., None]
            stage_q.append(q_sub)
            new_states.append(new)
            pieces_idx.append(idx)
            pieces_q.append(average_substeps(q_sub, f))
        all_idx = torch.cat(pieces_idx)
        q = r.new_zeros(b, n, t).index_copy(1, all_idx, torch.cat(pieces_q, dim=1))
        h_end = self._scatter_lakes(h_end_parts, b)
        self.last_lakes = {
            "elevation_start": elev.detach(), "elevation_end": h_end.detach(),
            "inflow_volume": self._scatter_lakes(vin_parts, b).detach(),
            "outflow_volume": self._scatter_lakes(vout_parts, b).detach(),
        }
        if not return_state:
            return q
        return q, LakeState(h_end.detach(), new_states, state.steps + t)

    __call__ = forward

    def _forward_clustered(self, r: torch.Tensor, params: Any, lp: dict[str, torch.Tensor],
                           kernels: list | None, state: LakeState, elev: torch.Tensor,
                           offsets: Any, return_state: bool
                           ) -> torch.Tensor | tuple[torch.Tensor, LakeState]:
        """:meth:`forward` through the one StagedRouter, the lakes as its node clusters."""
        b, _, t = r.shape
        kern = kernels[0] if kernels is not None else self.router.aggregate(self._p(params))
        q0_in = None
        if offsets is not None:
            r = r - offsets[0].to(r.dtype)[..., None]
            src, lake = self._into_lake
            q0_in = torch.zeros(b, self.lakes.n_lakes, dtype=torch.float64,
                                device=self.device).index_add(
                1, lake, offsets[1].index_select(1, src).to(torch.float64))
        nodes = self.nodes
        runs: dict = {}  # run key -> its LakeStep so far (the router's time pieces continue it)

        def step(run: NodeRun, runoff: torch.Tensor, inflow: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            lakes = nodes.lakes_of(run)
            before = runs.get(run.key)
            if before is None:
                start = elev.index_select(1, lakes)
            else:  # a later time piece (on CUDA, on another stream than the one before)
                start = before.elevation
                if start.is_cuda:
                    for v in (before.elevation, before.inflow_volume, before.outflow_volume):
                        v.record_stream(torch.cuda.current_stream(v.device))
            dq, out, done = nodes.step(
                run, runoff, inflow, start, lp,
                None if q0_in is None else q0_in.index_select(1, lakes), out_dtype=r.dtype)
            if before is not None:
                done = LakeStep(done.lakes, done.elevation,
                                before.inflow_volume + done.inflow_volume,
                                before.outflow_volume + done.outflow_volume)
            runs[run.key] = done
            return dq, out

        rs = state.stages[0] if state.stages else None
        out = self.router(r, kernels=kern, state=rs, return_state=return_state,
                          node_step=step)
        parts = list(runs.values())
        q, new = out if return_state else (out, None)
        if offsets is not None:
            q = q + offsets[1].to(q.dtype)[..., None]
        self.last_lakes = {
            "elevation_start": elev.detach(),
            "elevation_end": self._scatter_lakes([(d.lakes, d.elevation) for d in parts],
                                                 b).detach(),
            "inflow_volume": self._scatter_lakes([(d.lakes, d.inflow_volume) for d in parts],
                                                 b).detach(),
            "outflow_volume": self._scatter_lakes([(d.lakes, d.outflow_volume)
                                                   for d in parts], b).detach(),
        }
        if not return_state:
            return q
        return q, LakeState(self.last_lakes["elevation_end"], [new], state.steps + t)

    def _scatter_lakes(self, parts: list[tuple[torch.Tensor, torch.Tensor]], b: int
                       ) -> torch.Tensor:
        out = torch.zeros(b, self.lakes.n_lakes, dtype=torch.float64, device=self.device)
        for idx, v in parts:
            out = out.index_copy(1, idx, v)
        return out

    def _gather(self, x: torch.Tensor, from_reaches: list, from_lakes: Any,
                stage_q: list, lake_out: dict) -> torch.Tensor:
        """``x`` ``[B, n, S]`` plus the sub-step discharge of the reaches and lakes feeding
        its rows (out of place: autograd flows to every source)."""
        for s_stage, src, dst in from_reaches:
            x = x.index_add(1, dst, stage_q[s_stage].index_select(1, src).to(x.dtype))
        if from_lakes is not None:
            lakes, dst = from_lakes
            for lk_idx, out in lake_out.values():
                # positions of the feeding lakes within this lake stage's output
                hit = (lk_idx.view(-1, 1) == lakes.view(1, -1))
                if not bool(hit.any()):
                    continue
                rows, cols = torch.nonzero(hit, as_tuple=True)
                x = x.index_add(1, dst[cols], out.index_select(1, rows).to(x.dtype))
        return x

    def _route_stage(self, st: _Stage, x: torch.Tensor, p_sub: torch.Tensor
                     ) -> tuple[torch.Tensor, None]:
        """Route one stage's sub-network by an engine without state: ``x`` ``[B, n, T f]``
        sub-step inflow -> sub-step discharge ``[B, n, T f]`` (no state: None)."""
        eng = get_engine(self.engine)
        p = p_sub.index_select(0, torch.as_tensor(st.reaches, device=p_sub.device))
        q = eng.fn(st.network, x, self.spec.name, p, 1, allow_unstable=self.allow_unstable)
        return q.to(x.dtype), None

    # ------------------------------------------------------------------ warm starts
    def steady_offsets(self, q0: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The warm start that yields discharge ``q0`` ``[B, N]`` (m³/s): ``r_star = q0 -
        (discharge of the upstream reaches outside lakes)`` (for the stage path: of the same
        stage), the constant inflow each reach outside lakes had before the run (lateral,
        plus boundary inflow the path adds in full), ``q0`` there (0
        on lake reaches), and ``q0`` itself (whose value at each lake's outlet sets the
        lake's start level); pass the tuple as ``offsets``."""
        q0 = torch.as_tensor(q0).to(self.device, self.dtype)
        down = self.network.downstream
        lay = self.layout
        src = np.flatnonzero((down >= 0) & (lay.reach_lake < 0))
        d = down[src]
        # the one-router path carries the offset-free discharge across stages too (the
        # stage path adds each stage's full discharge to the next stage's inflow)
        same = (lay.reach_lake[d] < 0) & ((self.router is not None)
                                          | (lay.reach_stage[d] == lay.reach_stage[src]))
        s, dd = (torch.as_tensor(a[same], device=self.device) for a in (src, d))
        up = torch.zeros_like(q0).index_add(1, dd, q0.index_select(1, s))
        inl = torch.as_tensor(lay.reach_lake >= 0, device=self.device)
        r_star = torch.where(inl, torch.zeros_like(q0), q0 - up)
        return r_star, torch.where(inl, torch.zeros_like(q0), q0), q0

    @property
    def lake_param_names(self) -> tuple[str, ...]:
        return LEVEL_POOL_PARAMS


def route_lakes(
    network: RiverNetwork,
    runoff: torch.Tensor,
    irf: Any,
    params: torch.Tensor,
    *,
    lakes: Lakes | LakeLayout,
    dt: float,
    substeps: int = 1,
    engine: str = "torch",
    partition: Callable[[RiverNetwork], np.ndarray] | None = None,
    lake_params: Any = None,
    initial_discharge: torch.Tensor | None = None,
    allow_unstable: bool = False,
    allow_negative: bool = False,
) -> torch.Tensor:
    """Route ``runoff`` ``[B, N, T]`` (m³/s) through ``network`` with its lakes, on the device
    of ``runoff``, in its dtype: one :class:`LakeRouter` call (the engine of
    :func:`hydroscale.route` with ``lakes=``).

    ``params`` ``[N, P]`` are in routing-step units; ``dt`` is the routing step (s);
    ``initial_discharge`` ``[B, N]`` (m³/s) starts the linear reaches in the steady state that
    yields it (:meth:`LakeRouter.steady_offsets`; its implied inflow must be >= 0 on every
    reach outside lakes unless ``allow_negative``) and each lake at the level releasing
    ``initial_discharge`` at its outlet; without it lakes start at their ``ifd`` elevation.
    Returns discharge ``[B, N, T]`` (lake reaches: their lake's outflow).
    """
    router = LakeRouter(network, lakes, irf=irf, substeps=substeps, dt=dt, engine=engine,
                        partition=partition, dtype=runoff.dtype, device=runoff.device,
                        allow_unstable=allow_unstable)
    offsets = None
    if initial_discharge is not None:
        offsets = router.steady_offsets(initial_discharge)
        if not allow_negative:
            check_steady_inflow(network, offsets[0], where=" outside lakes")
    q = router(runoff, params, lake_params=lake_params, offsets=offsets)
    return q

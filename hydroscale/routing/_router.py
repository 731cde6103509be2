"""The block-sparse routing engine: :class:`StagedRouter` (many clusters) and :class:`LTIRouter`.

Routing a set of clusters is one sparse causal convolution per wave
(:func:`hydroscale.kernels.path_conv`) with the aggregated path kernels of
:mod:`._aggregation`:

- sources: the runoff of the wave's reaches (call ``R``) and the ``f`` polyphase transfer
  channels feeding its inlets (call ``U``);
- destinations: the wave's reaches (step-averaged discharge) followed by the ``f`` polyphase
  channels of its exits (sub-step outflow, the transfer inflow of downstream clusters).

:meth:`StagedRouter.forward` keeps the exit channels of every wave in one transfer buffer,
written in place by the wave that routes them and read in place by the waves they feed (an
inlet fed by several exits reads each of them through the same kernels); the two calls of a
wave are one kernel launch where their layouts allow (:mod:`hydroscale.kernels`).

The transfer across cluster boundaries is therefore exact at sub-step resolution; the only
approximation is the kernel window, whose truncated mass is reported per cluster
(:attr:`StagedRouter.truncated_mass`).

State carried between time chunks (:class:`RouterState`) is the input history the kernels
still need: the last ``K - 1`` steps of runoff of every reach and of every inlet channel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..irf import irf_kernel, stack_params
from ..kernels import (
    PathLayout,
    RowTarget,
    path_conv_sum_into,
    reuse_packed_taps,
    select_backend,
)
from ..network import format_ids
from ._aggregation import (
    MAX_AUTO_WINDOW,
    PathKernels,
    aggregate,
    auto_window,
    device_hops,
    fitted_window,
    plan_pairs,
)
from ._memory import release_free_memory
from ._nodes import NodeRun, NodeStep, write_rows
from ._options import Routed, RoutingOptions
from ._rivtree import RivTreeCluster
from ._time_pieces import TimePieces, auto_pieces
from ._transfer import inlet_feed, sum_inflow
from ._window import check_truncation
from ._window_cache import cache_dir, load_window, store_window, window_key

__all__ = ["RouterState", "RoutingKernels", "StagedRouter", "LTIRouter"]

logger = logging.getLogger(__name__)

# what float32 aggregation may add to a reported truncated mass (its rounding, ~1e-6)
_F32_ROUNDING = 1e-5


@dataclass
class RouterState:
    """Input history carried between time chunks (plain tensors; save/load as ``.npz``).

    Attributes
    ----------
    runoff_hist : ``[B, n, K - 1]`` the last ``K - 1`` steps of runoff (m³/s) of the reaches
        (network order for a :class:`StagedRouter`, cluster order for one cluster).
    inflow_hist : ``[B, n_inlet, f, K - 1]`` the last ``K - 1`` steps of the sub-step transfer
        inflow of the inlets (engine order), channel ``a`` = sub-step ``a`` of each step.
    """

    runoff_hist: torch.Tensor
    inflow_hist: torch.Tensor

    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` (``.npz``, no pickle)."""
        path = Path(path)
        np.savez(
            path,
            runoff_hist=self.runoff_hist.detach().cpu().numpy(),
            inflow_hist=self.inflow_hist.detach().cpu().numpy(),
        )
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path, device: Any = None) -> RouterState:
        """Read a state written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(
                torch.as_tensor(z["runoff_hist"], device=device),
                torch.as_tensor(z["inflow_hist"], device=device),
            )

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> RouterState:
        return RouterState(self.runoff_hist.to(device, dtype), self.inflow_hist.to(device, dtype))


@dataclass
class RoutingKernels:
    """Aggregated kernels in engine row order (``wr [P_R, K]``, ``wu [P_U, K]``), the window
    ``K`` and the truncated mass per cluster ``[C]`` (float64 numpy; NaN for clusters not
    routed by this router)."""

    wr: torch.Tensor
    wu: torch.Tensor
    window: int
    truncated_mass: np.ndarray


@dataclass
class _Group:
    """One batch of independent clusters (a wave, or one cluster), the layout of its call R
    and those of its call U (built on first use: :meth:`StagedRouter._inlet_layout`,
    :meth:`StagedRouter._exit_layout`)."""

    reaches: torch.Tensor  # [n] global reach indices, engine order
    r0: int
    e0: int
    e1: int
    i0: int
    i1: int
    rows_r: tuple[int, int]
    rows_u: tuple[int, int]
    layout_r: PathLayout
    dst_order: tuple  # block order of the output rows, shared by the U layouts
    contiguous: bool

    n_ef: int  # exit channel rows (first rows of the output)
    layouts_u: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.reaches.numel())


def _split_rows(t: torch.Tensor, ranges: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The views ``t[a:b]`` of disjoint row ranges, cut by one :func:`torch.split`.

    Its backward writes all the gradients into one tensor of ``t``'s size; slicing each range
    would give each its own zero-filled gradient of ``t``'s full size, summed range by range
    (measured: 0.37 s of the backward at 1M reaches, 96 waves)."""
    full = [(int(a), int(b)) for a, b in ranges if b > a]
    cuts = sorted({0, int(t.shape[0]), *(a for a, _ in full), *(b for _, b in full)})
    pieces = dict(zip(zip(cuts[:-1], cuts[1:]), torch.split(t, np.diff(cuts).tolist())))
    return [pieces[(a, b)] if (a, b) in pieces else t[a:b] for a, b in ranges]


class _Feeders(NamedTuple):
    """Which exits feed which inlets, on the router's device: the exits feeding inlet ``c``
    are ``exits[ptr[c]:ptr[c + 1]]`` (grouped by inlet), ``inlet`` the inlet each of those
    feeds; ``fed`` the inlets with a feeder and ``first_feeder`` the first of each."""

    ptr: torch.Tensor
    exits: torch.Tensor
    inlet: torch.Tensor
    fed: torch.Tensor
    first_feeder: torch.Tensor


class StagedRouter(Routed):
    """Route all clusters of a :class:`RivTreeCluster` on one device, wave after wave.

    Parameters
    ----------
    clusters : the partitioned network.
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`: irf, substeps, window,
        window_tolerance, dtypes, backend, precision, allow_unstable, max_batch_reaches,
        time_pieces);
        ``**routing`` keywords build or amend it (``irf="muskingum"``, ``substeps=24``, ...).
        A window that leaves more than ``window_tolerance`` out of a path is refused:
        routing from a zero state checks it against the series routed; with a carried state
        the caller checks it against the whole run (:meth:`check_window`,
        :meth:`fit_window`).  ``"auto"`` is resolved at the first :meth:`forward` (or
        :meth:`aggregate`, :meth:`fit_window`), then fixed.
    device : where the router's index tensors live (default CPU).
    only : optional cluster ids to route (default all); with a subset, :meth:`forward_chunk`
        is the entry point (the distributed runtime routes its own clusters).
    nodes : optional cluster ids routed by a node step instead of path kernels (e.g. lakes;
        :mod:`._nodes`): :meth:`forward` takes the step as ``node_step`` and writes what it
        returns into the transfer buffer between the waves (not with ``only``).
    """

    def __init__(self, clusters: RivTreeCluster, options: RoutingOptions | None = None, *,
                 device: Any = None, only: Any = None, nodes: Any = None,
                 **routing: Any) -> None:
        self._set_options(options, routing, device)
        self.clusters = clusters
        cs = clusters
        self.only = None if only is None else np.unique(np.asarray(only, dtype=np.int64))
        self._is_node = np.zeros(cs.n_clusters, dtype=bool)
        routed = self.only
        if nodes is not None and len(nodes):
            if self.only is not None:
                raise ValueError("give a StagedRouter only= or nodes=, not both")
            self._is_node[np.asarray(nodes, dtype=np.int64)] = True
            routed = np.flatnonzero(~self._is_node)
        self._routed = routed
        self._node_runs: dict[Any, Any] = {}
        self._schedule_of: tuple[int, tuple[tuple[bool, tuple[int, int]], ...]] | None = None
        self.plan = plan_pairs(cs, routed)
        self._exit_mask = cs.exit_of_reach >= 0
        self._inlet_mask = cs.inlet_of_reach >= 0
        self._build_rows()
        self._groups: dict[Any, _Group] = {}
        self._hops = None
        self._feed: _Feeders | None = None
        self._position: torch.Tensor | None = None
        self._feed_of: dict[int, Any] = {}
        self._pair_cluster: torch.Tensor | None = None
        self._pair_seen: np.ndarray | None = None
        self._rows: torch.Tensor | None = None
        self._engine_order_is_network_order = cs.order_is_identity
        self.truncated_mass: np.ndarray | None = None
        logger.info(
            "StagedRouter: %d reaches, %d clusters, %d waves, %d + %d paths (f=%d)",
            self.plan.reaches.size, cs.n_clusters, cs.n_waves, self._n_r, self._n_u, self.f,
        )

    # ------------------------------------------------------------------ index building
    def _build_rows(self) -> None:
        """Path end points of calls R and U in global codes, sorted by cluster (engine rank)."""
        cs, f, dev = self.clusters, self.f, self.device
        n = cs.n_reaches
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        srcs = t(np.concatenate([h[0] for h in self.plan.hops]))
        dsts = t(np.concatenate([h[1] for h in self.plan.hops]))
        shared = cs.on_device(dev)  # the whole network's index arrays, once per device
        pos, exit_no, inlet_no = (shared[k] for k in ("position", "exit_of_reach",
                                                      "inlet_of_reach"))
        ex = shared["exit_mask"][dsts]
        inl = shared["inlet_mask"][srcs]
        both = inl & ex
        ar = torch.arange(f, device=dev)
        n_rr, n_rx = srcs.numel(), int(ex.sum())
        # call R: runoff -> reach, runoff -> exit channel a
        r_src = torch.cat([pos[srcs], pos[srcs[ex]].repeat_interleave(f)])
        r_dst = torch.cat([pos[dsts], n + (exit_no[dsts[ex]] * f).repeat_interleave(f)
                           + ar.repeat(n_rx)])
        r_w = torch.arange(n_rr + n_rx * f, device=dev)
        # call U: inlet channel c -> reach, inlet channel c -> exit channel a
        n_ur, n_ue = int(inl.sum()), int(both.sum())
        ue_in = inlet_no[srcs[both]].view(-1, 1, 1) * f + ar.view(1, 1, f)
        ue_out = n + exit_no[dsts[both]].view(-1, 1, 1) * f + ar.view(1, f, 1)
        u_src = torch.cat([(inlet_no[srcs[inl]] * f).repeat_interleave(f) + ar.repeat(n_ur),
                           ue_in.expand(n_ue, f, f).reshape(-1)])
        u_dst = torch.cat([pos[dsts[inl]].repeat_interleave(f), ue_out.expand(n_ue, f, f)
                           .reshape(-1)])
        u_w = torch.arange(n_ur * f + n_ue * f * f, device=dev)
        self._crank = shared["rank"]
        self._by_rank = np.argsort(self._crank)
        order_c = shared["rank_of_reach"]  # reach -> cluster rank
        order_r = shared["order"]
        inlet_r = shared["inlet_reach"]
        r_key = order_c[order_r[r_src]]
        u_key = order_c[inlet_r[u_src // f]] if u_src.numel() else u_src
        sr = torch.sort(r_key, stable=True)
        su = torch.sort(u_key, stable=True)
        self._r_src, self._r_dst, self._r_w = r_src[sr.indices], r_dst[sr.indices], r_w[sr.indices]
        self._u_src, self._u_dst, self._u_w = u_src[su.indices], u_dst[su.indices], u_w[su.indices]
        self._r_key, self._u_key = sr.values, su.values
        self._n_r, self._n_u = int(r_src.numel()), int(u_src.numel())

    def _cluster_key(self, cluster: int) -> tuple[int, int]:
        k = int(self._crank[int(cluster)])
        return (k, k + 1)

    def _batches(self) -> list[tuple[int, int]]:
        """Cluster-rank ranges routed in one call each: the clusters of a wave, split into
        contiguous runs of at most ``max_batch_reaches`` reaches (bounds the temporaries);
        node clusters are left out (:meth:`_schedule`)."""
        return [key for node, key in self._schedule() if not node]

    def _schedule(self) -> tuple[tuple[bool, tuple[int, int]], ...]:
        """``(is_node, rank range)`` in rank order: the batches of path-routed clusters and
        the runs of node clusters (consecutive node clusters of one wave); built once per
        ``max_batch_reaches`` (every call routes by it: at 50k clusters the loop that cuts
        it took ~70 ms)."""
        if self._schedule_of is None or self._schedule_of[0] != self.max_batch:
            self._schedule_of = (self.max_batch, self._cut_schedule())
        return self._schedule_of[1]

    def _cut_schedule(self) -> tuple[tuple[bool, tuple[int, int]], ...]:
        cs = self.clusters
        by_rank = np.argsort(self._crank)
        sizes = np.diff(cs.reach_ptr_cluster[by_rank], axis=1)[:, 0]
        waves = cs.wave_of[by_rank]
        node = self._is_node[by_rank]
        out, start, acc = [], 0, 0
        for k in range(cs.n_clusters):
            if k > start and (waves[k] != waves[start] or node[k] != node[start]
                              or (not node[k] and acc + sizes[k] > self.max_batch)):
                out.append((bool(node[start]), (start, k)))
                start, acc = k, 0
            acc += sizes[k]
        if cs.n_clusters:
            out.append((bool(node[start]), (start, cs.n_clusters)))
        return tuple(out)

    def _node_run(self, key: tuple[int, int]) -> NodeRun:
        """The node clusters of ranks ``key`` (built once)."""
        if key not in self._node_runs:
            cs = self.clusters
            cl = self._by_rank[key[0] : key[1]]
            a, b = int(cl[0]), int(cl[-1])
            r0, r1 = int(cs.reach_ptr_cluster[a, 0]), int(cs.reach_ptr_cluster[b, 1])
            e0, e1 = int(cs.exit_ptr_cluster[a, 0]), int(cs.exit_ptr_cluster[b, 1])
            i0, i1 = int(cs.inlet_ptr_cluster[a, 0]), int(cs.inlet_ptr_cluster[b, 1])
            self._node_runs[key] = NodeRun(key, cl.copy(), cs.order[r0:r1],
                                           cs.inlet_reach[i0:i1], cs.exit_reach[e0:e1])
        return self._node_runs[key]

    def _step_nodes(self, key: tuple[int, int], node_step: NodeStep, r: torch.Tensor,
                    transfer: torch.Tensor, q: torch.Tensor,
                    steps: tuple[int, int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the node clusters of ranks ``key``: their inlets' inflow summed from the
        transfer buffer (written by earlier waves), the step, its outflow written into the
        buffer's rows of their exits and its discharge into ``q`` (engine order); over the
        steps ``steps = (a, b)`` only (default all: a time piece, the step called once per
        piece in time order, carrying its state)."""
        if steps is not None:  # views of the piece's steps (written in place)
            a, e = steps
            return self._step_nodes(key, node_step, r[..., a:e], transfer[..., a:e],
                                    q[..., a:e])
        run = self._node_run(key)
        cs, f = self.clusters, self.f
        b, _, t = r.shape
        dev = r.device
        if ("idx", key, str(dev)) not in self._node_runs:
            # the exits feeding the run's inlets: each inlet's first feeder (one gather), then
            # per further feeder rank (inlets, exits) added in place
            inl = cs.inlet_of_reach[run.inlets]
            feed = np.flatnonzero(np.isin(cs.exit_inlet, inl))
            at = np.searchsorted(inl, cs.exit_inlet[feed])  # inlets are in engine order
            by = np.lexsort((feed, at))
            at, feed = at[by], feed[by]
            rank = np.arange(at.size) - np.searchsorted(at, at)
            t_ = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
            ranks = [(t_(at[rank == j]), t_(feed[rank == j]))
                     for j in range(1, int(rank.max(initial=0)) + 1)]
            self._node_runs[("idx", key, str(dev))] = (t_(run.reaches), t_(feed[rank == 0]),
                                                       ranks)
        rows, first, ranks = self._node_runs[("idx", key, str(dev))]
        inflow = None
        if run.inlets.size:
            tv = transfer.view(b, cs.n_exits, f, t)
            inflow = tv.index_select(1, first)  # [B, n_inlet, f, T]
            for at, ex in ranks:
                inflow.index_add_(1, at, tv.index_select(1, ex))
        dq, out = node_step(run, r.index_select(1, rows), inflow)
        want_q, want_o = (b, run.reaches.size, t), (b, run.exits.size, f, t)
        if tuple(dq.shape) != want_q or tuple(out.shape) != want_o:
            raise ValueError(f"the node step must return discharge {want_q} and outflow "
                             f"{want_o}, got {tuple(dq.shape)} and {tuple(out.shape)}")
        e0 = int(cs.exit_of_reach[run.exits[0]]) if run.exits.size else 0
        r0 = int(cs.position[run.reaches[0]])
        return write_rows(transfer, e0 * f, out.reshape(b, -1, t), q, r0, dq)

    def _group(self, key: tuple[int, int]) -> _Group:
        """The group of clusters with ranks ``key = (k0, k1)`` (contiguous in engine order),
        built once and cached."""
        if key in self._groups:
            return self._groups[key]
        cs, f = self.clusters, self.f
        k0, k1 = key
        cl = self._by_rank[k0:k1]
        if self.only is not None and not np.isin(cl, self.only).all():
            raise ValueError(f"clusters {format_ids(cl)} are outside this router's subset")
        first, last = int(cl[0]), int(cl[-1])
        r0, r1 = int(cs.reach_ptr_cluster[first, 0]), int(cs.reach_ptr_cluster[last, 1])
        e0, e1 = int(cs.exit_ptr_cluster[first, 0]), int(cs.exit_ptr_cluster[last, 1])
        i0, i1 = int(cs.inlet_ptr_cluster[first, 0]), int(cs.inlet_ptr_cluster[last, 1])
        n_g = r1 - r0

        def rows(keys: torch.Tensor) -> tuple[int, int]:
            b = torch.tensor([k0, k1], device=keys.device)
            a = torch.searchsorted(keys, b).tolist() if keys.numel() else [0, 0]
            return int(a[0]), int(a[1])

        n_ef = (e1 - e0) * f

        # block order of the rows for the direct kernels: reaches chain by chain within their
        # cluster, exit channels and inlet channels by exit / inlet (see PathLayout.blocks)
        reach_key = cs.chain_key(engine_order=True)[r0:r1]
        reach_group = cs.cluster_of[cs.order[r0:r1]] + (e1 - e0)
        ch_key = np.arange(n_ef, dtype=np.float64)
        dst_order = (np.concatenate([ch_key, reach_key]),
                     np.concatenate([np.arange(n_ef) // f, reach_group]))
        ra, rb = rows(self._r_key)
        layout_r = PathLayout.from_pairs(
            self._r_src[ra:rb] - r0, self._local_dst(self._r_dst[ra:rb], r0, e0, n_ef),
            n_g, n_g + n_ef,
            dst_order=dst_order, src_order=(reach_key, reach_group),
        )
        ua, ub = rows(self._u_key)
        reaches = torch.as_tensor(self.clusters.order[r0:r1], device=self.device)
        contiguous = bool(np.array_equal(self.clusters.order[r0:r1], np.arange(r0, r1)))
        g = _Group(reaches, r0, e0, e1, i0, i1, (ra, rb), (ua, ub), layout_r, dst_order,
                   contiguous, n_ef)
        self._groups[key] = g
        return g

    def _local_dst(self, d: torch.Tensor, r0: int, e0: int, n_ef: int) -> torch.Tensor:
        """Output row in a group (first reach ``r0``, first exit ``e0``) of the global path
        end points ``d``: the ``n_ef`` exit channels first (their rows sum ~f times more
        paths than a reach's, and the kernel schedules rows in order, so heavy rows start
        first: a shorter tail), then the reaches."""
        n = self.clusters.n_reaches
        return torch.where(d < n, n_ef + d - r0, d - n - e0 * self.f)

    def _inlet_layout(self, g: _Group) -> PathLayout | None:
        """Call U of group ``g`` with the ``f`` channels of its inlets as sources (the inflow
        given per inlet, as :meth:`forward_chunk` takes it); None without inlets."""
        if g.i1 == g.i0:
            return None
        if "inlet" not in g.layouts_u:
            f, (ua, ub) = self.f, g.rows_u
            n_uf = (g.i1 - g.i0) * f
            g.layouts_u["inlet"] = PathLayout.from_pairs(
                self._u_src[ua:ub] - g.i0 * f, self._local_dst(self._u_dst[ua:ub], g.r0, g.e0,
                                                               g.n_ef),
                n_uf, g.n + g.n_ef, dst_order=g.dst_order,
                src_order=(np.arange(n_uf, dtype=np.float64), np.arange(n_uf) // f),
            )
        return g.layouts_u["inlet"]

    def _exit_layout(self, g: _Group) -> tuple[PathLayout, torch.Tensor | None] | None:
        """Call U of group ``g`` reading the exit channels that feed its inlets straight from
        the transfer buffer ``[B, n_exit f, T]`` of :meth:`forward` (source ``e f + a`` =
        channel ``a`` of exit ``e``), and ``dup``: an inlet fed by several exits has its
        paths once per feeder, with the same kernels, ``wu_g[dup]`` (None when no inlet of
        the group has more than one feeder).  None without inlets."""
        if g.i1 == g.i0:
            return None
        if "exit" not in g.layouts_u:
            f, (ua, ub) = self.f, g.rows_u
            fd = self._feeders()
            ptr, feeder = fd.ptr, fd.exits
            s = self._u_src[ua:ub]  # inlet channel c f + a
            c, a = s // f, s % f
            n_feed = ptr[c + 1] - ptr[c]
            dup = torch.repeat_interleave(torch.arange(ub - ua, device=s.device), n_feed)
            first = torch.cumsum(n_feed, 0) - n_feed
            nth = torch.arange(dup.numel(), device=s.device) - first[dup]
            src = feeder[ptr[c[dup]] + nth] * f + a[dup]
            dst = self._local_dst(self._u_dst[ua:ub], g.r0, g.e0, g.n_ef)[dup]
            layout = PathLayout.from_pairs(src, dst, self.clusters.n_exits * f, g.n + g.n_ef,
                                           dst_order=g.dst_order)
            g.layouts_u["exit"] = (layout, None if bool((n_feed == 1).all()) else dup)
        return g.layouts_u["exit"]

    def _feeders(self) -> _Feeders:
        """Which exits feed which inlets (device tensors, built once: a forward copies no
        index to the device and waits for it on no mask)."""
        if self._feed is None:
            cs = self.clusters
            ok = np.flatnonzero(cs.exit_inlet >= 0)
            exits = ok[np.argsort(cs.exit_inlet[ok], kind="stable")]
            ptr = np.zeros(cs.n_inlets + 1, np.int64)
            np.cumsum(np.bincount(cs.exit_inlet[ok], minlength=cs.n_inlets), out=ptr[1:])
            fed = np.flatnonzero(ptr[1:] > ptr[:-1])
            t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
            self._feed = _Feeders(t(ptr), t(exits), t(cs.exit_inlet[exits]), t(fed),
                                  t(exits[ptr[fed]]))
        return self._feed

    def _exit_hist(self, inflow_hist: torch.Tensor) -> torch.Tensor:
        """Inlet history ``[B, n_inlet, f, K - 1]`` as history of the transfer buffer's rows
        ``[B, n_exit f, K - 1]``: each inlet's on its first feeder, zeros on the others (the
        feeders' paths share their kernels, so the history adds up the same)."""
        fd = self._feeders()
        b, _, f, k1 = inflow_hist.shape
        out = inflow_hist.new_zeros(b, self.clusters.n_exits, f, k1)
        out.index_copy_(1, fd.first_feeder, inflow_hist.index_select(1, fd.fed))
        return out.reshape(b, -1, k1)

    def _inlet_sum(self, exits: torch.Tensor) -> torch.Tensor:
        """Inlet inflow ``[B, n_inlet, f, T]``: the sum of the exit outflow ``[B, n_exit, f,
        T]`` of each inlet's feeders."""
        fd = self._feeders()
        b, _, f, t = exits.shape
        return exits.new_zeros(b, self.clusters.n_inlets, f, t).index_add_(
            1, fd.inlet, exits.index_select(1, fd.exits))

    def prepare(self) -> StagedRouter:
        """Build the path layouts of every wave now (else on first use), the transfer-buffer
        layouts :meth:`forward` reads included; for a router of a subset (``only``), the
        layouts :meth:`forward_chunk` reads for each of its clusters."""
        if self.only is None:
            for key in self._batches():
                self._exit_layout(self._group(key))
        else:
            for c in self.only.tolist():
                g = self._group(self._cluster_key(c))
                if g.i1 > g.i0:
                    self._inlet_layout(g)
        return self

    # ------------------------------------------------------------------ kernels
    def kernel_rows(self) -> int:
        """Rows of the aggregated kernels (``wr`` and ``wu``): each holds ``window`` taps in
        the storage dtype, so the kernels take ``kernel_rows() * window * itemsize`` bytes."""
        return self._n_r + self._n_u

    def auto_window(self, params: Any, max_steps: int | None = None,
                    on_progress: Any = None) -> int:
        """The window (routing steps) that ``window="auto"`` resolves to for ``params``: the
        shortest whose truncated mass stays within ``window_tolerance`` for every in-cluster
        path (:func:`~._aggregation.fitted_window`), searched below the bound ``mean + 10 sd``
        of the paths' travel times (:func:`~._aggregation.auto_window`) by one float64
        aggregation at that bound (doubled while even the bound leaves too much out), and at
        most ``max_steps`` (the run's length: longer taps never act; default 366 steps, past
        which the run's check refuses a truncating window).  ``params`` need not be stable
        (any parameter a calibration may try).  ``on_progress(n)`` is called as pairs are
        aggregated (``plan.n_pairs`` per aggregation; again if the bound is doubled).  A
        window fitted before for the same clusters, parameters and options is read back from
        the on-disk cache (:mod:`~hydroscale.routing._window_cache`) instead."""
        cap = int(max_steps) if max_steps else MAX_AUTO_WINDOW
        with torch.no_grad():
            p = self._params(params, check=False).detach()
            key = self._window_key(p, cap)
            cached = None if key is None else load_window(key)
            if cached is not None:
                logger.info("auto window: %d steps (fitted by an earlier run, %s)", cached,
                            key)
                return cached
            k = self._fit_window(p, cap, on_progress)
            if key is not None:
                store_window(key, k, reaches=int(self.plan.reaches.size), cap=cap,
                             irf=self.spec.name, substeps=self.f)
            return k

    def _window_key(self, p: torch.Tensor, cap: int) -> str | None:
        """The window cache's key for parameters ``p`` (None with the cache off, and for an
        IRF outside the catalogue, whose definition may change under the same name)."""
        if cache_dir() is None or not getattr(self.spec.kernel, "__module__", "").startswith(
                "hydroscale."):
            return None  # no digest of the parameters when nothing would be looked up
        mine = p[torch.as_tensor(self.plan.reaches, device=p.device)].to(torch.float64)
        only = np.zeros(0, np.int64) if self._routed is None else self._routed
        return window_key(self.clusters.digest(), only, mine.cpu().numpy(), self.spec.name,
                          tuple(self.spec.params), self.f, float(self.window_tolerance), cap,
                          select_backend(p.device, self.backend))

    def _fit_window(self, p: torch.Tensor, cap: int, on_progress: Any) -> int:
        """:meth:`auto_window` without the cache."""
        with torch.no_grad():
            bound = int(auto_window(self.clusters, self.plan, self.spec, p, self.f,
                                    max_window=cap))
            while True:
                if self.window_tolerance <= 0 or bound <= 2:
                    return bound
                pk = aggregate(self.plan, self._device_hops(), self.spec, p, self.f, bound,
                               dtype=torch.float64,
                               backend=select_backend(p.device, self.backend),
                               on_progress=on_progress, step_only=True)
                k = fitted_window(pk, self.window_tolerance)
                left = float(pk.truncated.abs().max()) if pk.truncated.numel() else 0.0
                pk = None
                release_free_memory(p.device)  # the float64 hop buffers, before what comes next
                if k < bound or left <= self.window_tolerance or bound >= cap:
                    break
                bound = min(2 * bound, cap)  # the bound is short of the tolerance: longer
                logger.info("auto window: the bound leaves %.3g out; aggregating again with "
                            "a bound of %d steps", left, bound)
            logger.info("auto window: %d steps (bound %d, tolerance %.3g)", k, bound,
                        self.window_tolerance)
            return k

    def fit_window(self, param_sets: Any, run_steps: int | None = None,
                   what: str = "the routing") -> int:
        """Fix the window for every parameter set a run may use (e.g. the corners of a
        calibration's bounds, :func:`hydroscale.irf.bound_corners`) and check it, before
        the run: ``"auto"`` becomes the longest auto window over the sets (at most
        ``run_steps``); a window shorter than ``run_steps`` (or any, when it is None) is
        then checked at every set (:class:`~hydroscale.routing.WindowTruncationError`
        naming the clusters at fault).  Returns the window."""
        sets = list(param_sets)
        if self.window is None:
            k = max(self.auto_window(p, max_steps=run_steps) for p in sets)
            self.window = max(1, min(k, int(run_steps)) if run_steps else k)
        if run_steps is None or self.window < int(run_steps):
            for p in sets:  # in float64: the truncation itself, without rounding
                with torch.no_grad():
                    kern = self.aggregate(p, agg_dtype=torch.float64, check=False)
                self.check_window(kern, run_steps, what, exact=True)
        return self.window

    def check_window(self, kernels: RoutingKernels | None = None, run_steps: int | None = None,
                     what: str = "the routing", exact: bool = False) -> None:
        """Raise :class:`~hydroscale.routing.WindowTruncationError` if ``kernels`` (default
        the last aggregation's) leave more than ``window_tolerance`` out of a path of a
        cluster routed over ``run_steps`` steps from a zero state (None: of any length).

        Kernels aggregated in float32 report their rounding in the truncated mass (~1e-6):
        unless ``exact`` (float64 kernels), 1e-5 more is allowed for it; the check before a
        run (:meth:`fit_window`) aggregates in float64."""
        trunc = self.truncated_mass if kernels is None else kernels.truncated_mass
        k = self.window if kernels is None else kernels.window
        slack = 0.0 if exact or self.aggregate_dtype == torch.float64 else _F32_ROUNDING
        if trunc is not None and k is not None:
            check_truncation(trunc, tolerance=self.window_tolerance + slack, window=k,
                             run_steps=run_steps, clusters=self.clusters, what=what)

    def _plan_rows(self) -> torch.Tensor:
        """The plan's reaches as a device tensor (made on first use, then kept)."""
        if self._rows is None:
            self._rows = torch.as_tensor(self.plan.reaches, device=self.device)
        return self._rows

    def _device_hops(self) -> list:
        """The plan's hops as device index tensors (built on first use, then kept)."""
        if self._hops is None:
            self._hops = device_hops(self.plan, self._exit_mask, self._inlet_mask, self.device)
        return self._hops

    def _params(self, params: Any, check: bool = True) -> torch.Tensor:
        n = self.clusters.n_reaches
        p = stack_params(self.spec, params, n=n)
        if p.shape != (n, self.spec.n_params):
            raise ValueError(
                f"params must be [N={n}, P={self.spec.n_params}] (columns "
                f"{list(self.spec.params)}), got {tuple(p.shape)}"
            )
        p = p.to(self.device)
        if check and not self.allow_unstable:
            rows = torch.as_tensor(self.plan.reaches, device=self.device)
            irf_kernel(self.spec, p[rows].detach(), 1, self.f,
                       labels=torch.as_tensor(self.clusters.network.ids[self.plan.reaches]))
        return p

    def aggregate(self, params: Any, *, agg_dtype: torch.dtype | None = None,
                  check: bool = True, on_progress: Any = None) -> RoutingKernels:
        """Path kernels for ``params`` ``[N, P]`` (network order; routing-step units),
        differentiable w.r.t. them.  Resolves an ``"auto"`` window on first use.  The
        aggregation runs in ``agg_dtype`` (default the router's ``aggregate_dtype``); for a
        narrower router ``dtype`` the sub-step kernels kept for backward are stored in
        ``dtype``.  ``check=False`` skips the stability check of the parameters.
        ``on_progress(n)`` is called after each hop of the aggregation with the pairs it
        aggregated (``plan.n_pairs`` in all)."""
        agg_dtype = agg_dtype or self.aggregate_dtype
        p = self._params(params, check)
        if self.window is None:
            self.window = self.auto_window(p)
        save = self.dtype if self.dtype.itemsize < agg_dtype.itemsize else None
        pk: PathKernels = aggregate(
            self.plan, self._device_hops(), self.spec, p, self.f, self.window, dtype=agg_dtype,
            save_dtype=save, backend=select_backend(p.device, self.backend),
            rows=self._plan_rows(), on_progress=on_progress,
        )
        k = self.window
        store = self.storage_dtype or self.dtype
        release_free_memory(p.device)  # the hop loop's freed buffers, before the kernels are copied
        # each kind's parts are dropped once copied: the peak holds one kind twice, not all
        both = torch.cat([pk.r_reach, pk.r_exit.reshape(-1, k)])
        pk.r_reach = pk.r_exit = None
        wr = both.index_select(0, self._r_w).to(store)
        both = torch.cat([pk.u_reach.reshape(-1, k), pk.u_exit.reshape(-1, k)])
        pk.u_reach = pk.u_exit = None
        wu = both.index_select(0, self._u_w).to(store)
        del both
        release_free_memory(p.device)
        # per-cluster max on the device: one value per cluster crosses to the host, not one
        # per pair (19M at 1M reaches)
        if self._pair_cluster is None:
            src_all = np.concatenate([h[0] for h in self.plan.hops])
            self._pair_cluster = torch.as_tensor(self.clusters.cluster_of[src_all],
                                                 device=self.device)
            self._pair_seen = np.zeros(self.clusters.n_clusters, dtype=bool)
            self._pair_seen[self.clusters.cluster_of[src_all]] = True
        nc = self.clusters.n_clusters
        worst_c = torch.zeros(nc, dtype=torch.float64, device=self.device).scatter_reduce(
            0, self._pair_cluster, pk.truncated.abs(), "amax")
        trunc = np.where(self._pair_seen, worst_c.cpu().numpy(), np.nan)
        self.truncated_mass = trunc
        worst = np.nanmax(trunc) if self._pair_seen.any() else 0.0
        logger.info("aggregated %d pairs, window %d, max truncated mass %.3g",
                    self.plan.n_pairs, k, worst)
        return RoutingKernels(wr, wu, k, trunc)

    # ------------------------------------------------------------------ routing
    def _term(self, x: torch.Tensor, w: torch.Tensor, layout: PathLayout,
              hist: torch.Tensor | None) -> tuple:
        """The path convolution ``(x, w, layout, hist)`` with ``x`` and ``hist`` in the storage
        dtype the kernels read (when one is set; the torch backend computes in ``dtype``)."""
        if self.storage_dtype is not None:
            x = x.to(self.storage_dtype)
            hist = None if hist is None else hist.to(self.storage_dtype)
            if x.device.type != "cuda":
                x, w = x.to(self.dtype), w.to(self.dtype)
                hist = None if hist is None else hist.to(self.dtype)
        return x, w, layout, hist

    def _check_runoff(self, runoff: Any, n: int) -> torch.Tensor:
        r = torch.as_tensor(runoff)
        if r.ndim != 3 or r.shape[1] != n:
            raise ValueError(f"runoff must be [B, N={n}, T], got {tuple(r.shape)}")
        return r.to(self.device, self.dtype)

    def init_state(self, batch: int, k: int | None = None) -> RouterState:
        """A zero state (nothing flowed before) for all reaches and inlets."""
        k = k or self.window
        if k is None:
            raise RuntimeError("the window is not resolved yet: call aggregate(params) first")
        cs = self.clusters
        z = torch.zeros
        return RouterState(
            z(batch, cs.n_reaches, k - 1, device=self.device, dtype=self.dtype),
            z(batch, cs.n_inlets, self.f, k - 1, device=self.device, dtype=self.dtype),
        )

    def forward(
        self,
        runoff: Any,
        params: Any = None,
        *,
        kernels: RoutingKernels | None = None,
        state: RouterState | None = None,
        return_state: bool = False,
        node_step: NodeStep | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, RouterState]:
        """Route ``runoff`` ``[B, N, T]`` (m³/s per routing step, network order).

        Give ``params`` ``[N, P]`` (aggregated on the fly, differentiable) or precomputed
        ``kernels``.  ``state`` carries the input history of the previous time chunk (zeros
        when None).  ``node_step`` routes the node clusters (``nodes=``, :mod:`._nodes`).
        Returns discharge ``[B, N, T]`` (m³/s, step-averaged, ``dtype``), and the new state
        when ``return_state``.
        """
        if self.only is not None:
            raise RuntimeError("a router built for a subset of clusters routes with forward_chunk")
        if self._is_node.any() and node_step is None:
            raise ValueError(f"this router has {int(self._is_node.sum())} node clusters: "
                             "give forward the node_step that routes them")
        if kernels is None and self.window is None and state is None and params is not None:
            # taps beyond the series never act: "auto" needs no longer window than it
            self.window = self.auto_window(params, max_steps=int(torch.as_tensor(
                runoff).shape[-1]))
        kern = kernels if kernels is not None else self.aggregate(params)
        cs, f = self.clusters, self.f
        r = self._check_runoff(runoff, cs.n_reaches)
        b, _, t = r.shape
        k = kern.window
        if state is not None:
            self._check_state(state, b, cs.n_reaches, cs.n_inlets, k)
        else:
            self.check_window(kern, t)
        # each batch writes its reaches into q (engine order) and the f channels of its
        # exits into one transfer buffer [B, n_exit f, T], in place; later batches read the
        # exit channels feeding their inlets there, in place.  The backward reads the output
        # gradients where they are and adds the transfer rows' gradients into the buffer's
        # gradient: no per-batch outputs, gathers, inflow sums or zero-filled gradients
        schedule = self._schedule()
        groups = [self._group(key) for node, key in schedule if not node]
        wr = _split_rows(kern.wr, [g.rows_r for g in groups])
        wu = _split_rows(kern.wu, [g.rows_u for g in groups])
        q = r.new_empty(b, cs.n_reaches, t)
        transfer = r.new_empty(b, cs.n_exits * f, t)
        hist_x = None if state is None else self._exit_hist(state.inflow_hist)
        pieces = self.pieces_for(r)
        if pieces > 1:
            self._route_pieces(pieces, schedule, groups, wr, wu, r, state, hist_x, transfer, q,
                               node_step)
        else:
            bi = -1
            for node, key in schedule:
                if node:
                    transfer, q = self._step_nodes(key, node_step, r, transfer, q)
                    continue
                bi += 1
                g = groups[bi]
                rg, hr = self._batch_runoff(g, r, state)
                transfer, q = self._route_batch(g, wr[bi], self._exit_taps(g, wu[bi]), rg, hr,
                                                hist_x, transfer, q)
        if not self._engine_order_is_network_order:
            if self._position is None or self._position.device != q.device:
                self._position = torch.as_tensor(cs.position, device=q.device)
            q = q.index_select(1, self._position)
        if not return_state:
            return q
        tail = transfer.detach().view(b, cs.n_exits, f, t)[..., max(0, t - (k - 1)) :]
        new = RouterState(self._roll(state.runoff_hist if state else None, r, k),
                          self._roll(state.inflow_hist if state else None,
                                     self._inlet_sum(tail), k))
        return q, new

    __call__ = forward

    def pieces_for(self, runoff: torch.Tensor) -> int:
        """The time pieces :meth:`forward` routes ``runoff`` ``[B, N, T]`` in (1 with
        gradients: see ``time_pieces``)."""
        t = int(runoff.shape[-1])
        if t == 1 or torch.is_grad_enabled():
            return 1
        return auto_pieces(self.time_pieces, device=runoff.device,
                           has_nodes=bool(self._is_node.any()),
                           n_reaches=self.clusters.n_reaches, n_steps=t, substeps=self.f)

    def _batch_runoff(self, g: _Group, r: torch.Tensor, state: RouterState | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The runoff of group ``g``'s reaches ``[B, n, T]`` and their carried history."""
        if g.contiguous:
            return (r[:, g.r0 : g.r0 + g.n],
                    None if state is None else state.runoff_hist[:, g.r0 : g.r0 + g.n])
        return (r.index_select(1, g.reaches),
                None if state is None else state.runoff_hist.index_select(1, g.reaches))

    def _route_batch(self, g: _Group, wr: torch.Tensor, wu: torch.Tensor, rg: torch.Tensor,
                     hr: torch.Tensor | None, hist_x: torch.Tensor | None,
                     transfer: torch.Tensor, q: torch.Tensor,
                     steps: tuple[int, int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Route group ``g`` (its runoff ``rg`` and the exit channels feeding its inlets, read
        in ``transfer`` through the taps ``wu`` of :meth:`_exit_taps`) into its rows of
        ``transfer`` and ``q``, output steps ``steps`` (default all)."""
        terms = [self._term(rg, wr, g.layout_r, hr)]
        if g.i1 > g.i0:
            terms.append((transfer, wu, self._exit_layout(g)[0], hist_x))
        return path_conv_sum_into(
            terms, RowTarget(transfer, g.e0 * self.f, q, g.r0, g.n_ef, steps=steps),
            backend=self.backend, precision=self.precision)

    def _exit_taps(self, g: _Group, wu: torch.Tensor) -> torch.Tensor:
        """The taps of group ``g``'s exit layout (:meth:`_exit_layout`) from its rows ``wu``
        of U: ``wu`` itself, or one row per feeder where an inlet has several."""
        if g.i1 == g.i0:
            return wu
        dup = self._exit_layout(g)[1]
        return wu if dup is None else wu.index_select(0, dup)

    def _route_pieces(self, n_pieces: int, schedule: tuple, groups: list[_Group], wr: list,
                      wu: list, r: torch.Tensor, state: RouterState | None,
                      hist_x: torch.Tensor | None,
                      transfer: torch.Tensor, q: torch.Tensor, node_step: NodeStep | None
                      ) -> None:
        """:meth:`forward`'s batches over ``n_pieces`` pieces of the steps
        (:class:`~._time_pieces.TimePieces`), written in place into ``transfer`` and ``q``
        (no gradients)."""
        pieces = TimePieces(r.shape[-1], n_pieces, r.device)
        bi = -1
        with pieces:
            for node, key in schedule:
                if node:
                    pieces.run(lambda p, w, key=key: self._step_nodes(
                        key, node_step, r, transfer, q, steps=w))
                    continue
                bi += 1
                g = groups[bi]
                rg, hr = self._batch_runoff(g, r, state)
                wu_g = self._exit_taps(g, wu[bi])  # one tensor for every piece (taps reused)
                pieces.shared(rg, hr, wu_g)
                with reuse_packed_taps():  # the batch's taps packed once for its pieces
                    pieces.run(lambda p, w, g=g, j=bi, rg=rg, hr=hr, wu_g=wu_g:
                               self._route_batch(g, wr[j], wu_g, rg, hr, hist_x, transfer, q,
                                                 steps=w))

    @staticmethod
    def _roll(hist: torch.Tensor | None, x: torch.Tensor, k: int) -> torch.Tensor:
        """The last ``k - 1`` steps of ``[hist, x]`` along time (only those are copied: a
        chunk of ``T >= k - 1`` steps gives its own last ``k - 1``)."""
        k1, t = int(k) - 1, int(x.shape[-1])
        if t >= k1:
            return x[..., t - k1 :].detach().clone()
        if hist is None:
            hist = x.new_zeros(*x.shape[:-1], k1)
        return torch.cat([hist[..., t:].to(x.dtype), x], dim=-1).detach().clone()

    def _check_state(self, state: RouterState, b: int, n: int, ni: int, k: int) -> None:
        want_r, want_u = (b, n, k - 1), (b, ni, self.f, k - 1)
        if tuple(state.runoff_hist.shape) != want_r or tuple(state.inflow_hist.shape) != want_u:
            raise ValueError(
                f"state must hold runoff_hist {want_r} and inflow_hist {want_u} (window {k}), "
                f"got {tuple(state.runoff_hist.shape)} and {tuple(state.inflow_hist.shape)}"
            )

    def forward_chunk(
        self,
        cluster: int,
        runoff_chunk: Any,
        inflow: torch.Tensor | None,
        state: RouterState | None,
        kernels: RoutingKernels,
    ) -> tuple[torch.Tensor, torch.Tensor, RouterState]:
        """Route one cluster over one time chunk (the step the distributed runtime calls).

        Parameters
        ----------
        cluster : cluster id ``c``.
        runoff_chunk : ``[B, n_c, T]`` runoff of the cluster's reaches, in the order of
            ``clusters[c].reaches`` (m³/s averaged per routing step).
        inflow : ``[B, n_inlet_c, f, T]`` sub-step transfer inflow of the cluster's inlets
            (``clusters[c].inlets`` order): the sum of the outflow buffers of the upstream
            exits feeding each inlet (see :meth:`inflow_for`); None when it has no inlet or
            nothing flows in.
        state : carried history of this cluster (:meth:`init_cluster_state` for zeros).
        kernels : from :meth:`aggregate`.

        Returns
        -------
        discharge ``[B, n_c, T]`` (m³/s, step-averaged), outflow ``[B, n_exit_c, f, T]``
        (sub-step outflow of the cluster's exits, ``clusters[c].exits`` order, channel ``a``
        = sub-step ``a`` of each step), and the new state.
        """
        g = self._group(self._cluster_key(cluster))
        r = self._check_runoff(runoff_chunk, g.n)
        b, _, t = r.shape
        n_in = g.i1 - g.i0
        if n_in and inflow is None:
            inflow = torch.zeros(b, n_in, self.f, t, device=r.device, dtype=self.dtype)
        if n_in:
            want = (b, n_in, self.f, t)
            if tuple(inflow.shape) != want:
                raise ValueError(f"inflow of cluster {cluster} must be {want}, got "
                                 f"{tuple(inflow.shape)}")
            inflow = inflow.to(self.device, self.dtype)
        k = kernels.window
        if state is not None:
            self._check_state(state, b, g.n, n_in, k)
        elif t > k and kernels.truncated_mass[cluster] > self.window_tolerance:
            one = np.full_like(kernels.truncated_mass, np.nan)
            one[cluster] = kernels.truncated_mass[cluster]
            self.check_window(RoutingKernels(kernels.wr, kernels.wu, k, one), t)
        (ra, rb), (ua, ub) = g.rows_r, g.rows_u
        terms = [self._term(r, kernels.wr[ra:rb], g.layout_r,
                            None if state is None else state.runoff_hist)]
        if n_in:
            hu = None if state is None else state.inflow_hist.reshape(b, n_in * self.f, -1)
            terms.append(self._term(inflow.reshape(b, n_in * self.f, t), kernels.wu[ua:ub],
                                    self._inlet_layout(g), hu))
        # the exit channels and the reaches written straight into their own tensors, both
        # terms summed in one launch where the block kernels apply (no output written,
        # read back and written again for the inflow term, no slices copied later)
        exits, q = path_conv_sum_into(
            terms, RowTarget(r.new_empty(b, g.n_ef, t, dtype=self.dtype), 0,
                             r.new_empty(b, g.n, t, dtype=self.dtype), 0, g.n_ef),
            backend=self.backend, precision=self.precision)
        out = exits.reshape(b, g.e1 - g.e0, self.f, t)
        u = inflow if n_in else r.new_zeros(b, 0, self.f, t)
        new = RouterState(self._roll(state.runoff_hist if state else None, r, k),
                          self._roll(state.inflow_hist if state else None, u, k))
        return q, out, new

    def init_cluster_state(self, cluster: int, batch: int) -> RouterState:
        """A zero state for one cluster."""
        g = self._group(self._cluster_key(cluster))
        k = self.window
        if k is None:
            raise RuntimeError("the window is not resolved yet: call aggregate(params) first")
        return RouterState(
            torch.zeros(batch, g.n, k - 1, device=self.device, dtype=self.dtype),
            torch.zeros(batch, g.i1 - g.i0, self.f, k - 1, device=self.device, dtype=self.dtype),
        )

    def inflow_for(self, cluster: int, outflows: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """Sum the upstream exit buffers feeding ``cluster`` into its inlet inflow.

        ``outflows`` maps an upstream cluster id to its outflow ``[B, n_exit, f, T]`` (as
        returned by :meth:`forward_chunk`); returns ``[B, n_inlet_c, f, T]`` or None.  An
        inlet fed by several exits sums them in exit order (the same bits whatever the
        device).  Only the feeding exits' rows are read (one gather per upstream cluster),
        then summed in one gather plus one add per further feeder rank: a few launches per
        cluster, not one per exit, and no copy of the upstream buffers' other rows.
        """
        feed = self._inlet_feed(int(cluster))
        return sum_inflow(feed, int(cluster), outflows)

    def _inlet_feed(self, cluster: int) -> Any:
        """:func:`inlet_feed` of ``cluster``, built once."""
        if cluster not in self._feed_of:
            self._feed_of[cluster] = inlet_feed(self.clusters, cluster, self.device)
        return self._feed_of[cluster]


class LTIRouter(StagedRouter):
    """Route one cluster (by default a whole network as a single cluster).

    ``LTIRouter(network, irf="muskingum", ...)`` routes ``network`` as one cluster;
    ``LTIRouter(clusters, options, cluster=c)`` routes cluster ``c`` of a
    :class:`RivTreeCluster` given its transfer inflow.  Options as :class:`StagedRouter`.
    """

    def __init__(self, tree: Any, options: RoutingOptions | None = None, *,
                 cluster: int | None = None, **routing: Any) -> None:
        if isinstance(tree, RivTreeCluster):
            if cluster is None:
                if tree.n_clusters != 1:
                    raise ValueError("pass cluster=c to route one cluster of a RivTreeCluster")
                cluster = 0
            cs = tree
        else:
            cs = RivTreeCluster.single(tree)
            cluster = 0
        self.cluster = int(cluster)
        super().__init__(cs, options, only=[self.cluster], **routing)

    def forward(  # type: ignore[override]
        self,
        runoff: Any,
        params: Any = None,
        *,
        inflow: torch.Tensor | None = None,
        kernels: RoutingKernels | None = None,
        state: RouterState | None = None,
        return_state: bool = False,
    ):
        """Route ``runoff`` ``[B, n_c, T]`` (cluster order) with optional transfer ``inflow``
        ``[B, n_inlet, f, T]``; returns discharge ``[B, n_c, T]`` (and the state)."""
        kern = kernels if kernels is not None else self.aggregate(params)
        q, out, new = self.forward_chunk(self.cluster, runoff, inflow, state, kern)
        self.last_outflow = out
        return (q, new) if return_state else q

    __call__ = forward

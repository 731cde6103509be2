"""The level-by-level engine: one device, windowed kernels, differentiable ("levels").

:class:`LevelRouter` applies the routing recursion of DESIGN §1,
``Q_j = h_j ⊛ (r_j + Σ_{i upstream of j} Q_i)`` with every reach's sub-step kernel truncated
to ``window`` routing steps (the truncated mass per reach is reported in
:attr:`LevelRouter.truncated_mass`).  It sweeps the network by chain rounds
(:attr:`hydroscale.network.RiverNetwork.chains`), not by topological level: each round is a
batch of independent unbranched chains, routed by a prefix scan of the reaches' affine maps,
so a sweep takes O(log N) rounds of O(log chain length) steps whatever the depth (a single
chain of 2·10⁶ reaches: one round of 21 steps, where a sweep by level needed 2·10⁶).  Its cost
is ``O(B · N · T · f · K)`` multiply-adds in depthwise convolutions (more along long chains,
whose composed kernels reach the run's length) and its autograd graph holds a few
``[B, n, T·f]`` tensors per step, so it suits CPU routing and calibration, where building
block-sparse path kernels (:class:`hydroscale.routing.StagedRouter`) costs more than it
saves.  The float64 oracle :func:`hydroscale.routing.route_oracle` is its reference in the
tests.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..irf import average_substeps, get_irf, irf_kernel, spread_to_substeps, stack_params
from ..network import RiverNetwork
from ._engines import EngineSpec, register_engine
from ._options import Routed, RoutingOptions
from ._window import check_reach_truncation
from .oracle import causal_conv_fft

__all__ = ["LevelRouter"]

logger = logging.getLogger(__name__)


class LevelRouter(Routed):
    """Route a whole network on one device, level by level (differentiable w.r.t. params).

    Parameters
    ----------
    network : the river network (N reaches).
    options : the routing (:class:`~hydroscale.routing.RoutingOptions`; this engine reads
        ``irf``, ``substeps``, ``window``, ``window_tolerance`` and ``allow_unstable``);
        ``**routing`` keywords build or amend it (``irf="muskingum"``, ...).  ``window`` is
        K, kernel taps per reach in routing steps (``K · f`` sub-step taps); ``"auto"`` is
        fitted at the first call (:func:`auto_level_window`).  The truncation of a path is
        bounded by the sum of its reaches' truncated kernel masses: routing more steps than
        the window with more than ``window_tolerance`` left out raises
        :class:`~hydroscale.routing.WindowTruncationError`.
    device : where the index tensors live (default CPU); runoff must be on it.
    """

    def __init__(self, network: RiverNetwork, options: RoutingOptions | None = None, *,
                 device: Any = None, **routing: Any) -> None:
        self._set_options(options, routing, device)
        self.network = network
        self.truncated_mass: np.ndarray | None = None
        chains = network.chains
        order = np.asarray(chains.order, dtype=np.int64)
        ptr = np.asarray(chains.round_ptr, dtype=np.int64)
        down = np.asarray(network.downstream, dtype=np.int64)
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        dev = self.device
        self._order = torch.as_tensor(order, device=dev)
        self._inv = torch.as_tensor(inv, device=dev)
        rounds = np.repeat(np.arange(chains.n_rounds), np.diff(ptr))[inv]  # round of each reach
        self._sizes = np.diff(ptr).tolist()
        self._pos: list[tuple[torch.Tensor, int]] = []
        # Each round gathers the outflow of its chains' tails that have a downstream reach
        # once, sorted by the downstream reach's round, and splits it into one share per
        # target round; round t adds the shares it receives (in source-round order) to its
        # inflow.  Within a chain, the prefix scan carries the flow.
        self._send: list[tuple[torch.Tensor, list[int], list[int]] | None] = []
        tgt_parts: list[list[np.ndarray]] = [[] for _ in range(chains.n_rounds)]
        for r in range(chains.n_rounds):
            a, b = int(ptr[r]), int(ptr[r + 1])
            pos = chains.position[a:b]
            self._pos.append((torch.as_tensor(pos, device=dev), int(pos.max(initial=0))))
            tail = np.ones(b - a, dtype=bool)
            tail[:-1] = pos[1:] == 0
            d = down[order[a:b]]
            rows = np.flatnonzero(tail & (d >= 0))
            if rows.size == 0:
                self._send.append(None)
                continue
            tr = rounds[d[rows]]
            srt = np.argsort(tr, kind="stable")
            rows, tr = rows[srt], tr[srt]
            targets, counts = np.unique(tr, return_counts=True)
            local = inv[d[rows]] - ptr[tr]
            for t, piece in zip(targets, np.split(local, np.cumsum(counts)[:-1])):
                tgt_parts[int(t)].append(piece)
            self._send.append(
                (torch.as_tensor(rows, device=dev), counts.tolist(), targets.tolist())
            )
        self._tgt = [
            torch.as_tensor(np.concatenate(p), device=dev) if p else None for p in tgt_parts
        ]
        self._ids = torch.as_tensor(np.array(network.ids))

    def kernels(self, params: Any, *, check: bool = True) -> torch.Tensor:
        """Sub-step kernels ``[N, K · f]`` (network order) for ``params`` ``[N, P]``
        (``check=False``: parameters the IRF's stability check rejects are taken too)."""
        n = self.network.n_reaches
        p = stack_params(self.spec, params, n=n)
        if tuple(p.shape) != (n, self.spec.n_params):
            raise ValueError(
                f"params must be [N={n}, P={self.spec.n_params}] (columns "
                f"{list(self.spec.params)}), got {tuple(p.shape)}"
            )
        unstable = self.allow_unstable or not check
        h = irf_kernel(self.spec, p.to(self.device), self.window * self.f, self.f,
                       allow_unstable=unstable, labels=self._ids)
        with torch.no_grad():  # measured in float64: float32 rounding is not truncation
            h64 = h.detach() if h.dtype == torch.float64 else irf_kernel(
                self.spec, p.detach().to(self.device, torch.float64), self.window * self.f,
                self.f, allow_unstable=True)
            self.truncated_mass = (1.0 - h64.sum(-1)).abs().cpu().numpy()
        return h

    def check_window(self, run_steps: int | None, what: str = "the levels engine") -> None:
        """Raise :class:`~hydroscale.routing.WindowTruncationError` if the last kernels cut
        more than ``window_tolerance`` off some path (bounded by the sum of its reaches'
        truncated masses) of a run of ``run_steps`` steps (None: of any length)."""
        if self.truncated_mass is None:
            return
        path = path_truncation(self.network, self.truncated_mass)
        check_reach_truncation(path, self.network.ids, tolerance=self.window_tolerance,
                               window=self.window, run_steps=run_steps, what=what)

    def fit_window(self, param_sets: Any, run_steps: int | None = None,
                   what: str = "the levels engine") -> None:
        """Fit an ``"auto"`` window for, and check a given one at, every parameter set a run
        may use (e.g. the corners of a calibration's bounds) over ``run_steps`` steps, before
        the run."""
        sets = list(param_sets)
        if self.window is None:
            self.window = auto_level_window(self.network, self.spec, sets, self.f,
                                            int(run_steps) if run_steps else 1 << 20,
                                            tol=self.window_tolerance, allow_unstable=True)
        if run_steps is not None and self.window >= int(run_steps):
            return
        for p in sets:
            with torch.no_grad():
                self.kernels(p, check=False)
            self.check_window(run_steps, what)

    def forward(self, runoff: Any, params: Any) -> torch.Tensor:
        """Route ``runoff`` ``[B, N, T]`` (m³/s averaged per routing step, network order) with
        ``params`` ``[N, P]`` (routing-step units); returns discharge ``[B, N, T]`` (m³/s,
        step-averaged) in the dtype of ``runoff``."""
        n = self.network.n_reaches
        r = torch.as_tensor(runoff, device=self.device)
        if r.ndim != 3 or r.shape[1] != n:
            raise ValueError(f"runoff must be [B, N={n}, T], got {tuple(r.shape)}")
        if self.window is None:
            self.window = auto_level_window(self.network, self.spec, params, self.f,
                                            int(r.shape[-1]), tol=self.window_tolerance,
                                            allow_unstable=True)
        h = self.kernels(params).to(r.dtype)
        self.check_window(int(r.shape[-1]))
        w = h.index_select(0, self._order)
        # runoff in round order at step resolution; each round spreads its own rows to
        # sub-steps and averages its discharge back at once, so no [B, N, T·f] array is
        # ever whole: the peak is the largest round's sub-step arrays
        x = r.index_select(1, self._order)
        xs = torch.split(x, self._sizes, dim=1)
        ws = torch.split(w, self._sizes, dim=0)
        outs: list[torch.Tensor] = []
        pending: list[list[torch.Tensor]] = [[] for _ in self._sizes]
        for rd, (xl, wl) in enumerate(zip(xs, ws)):
            u = spread_to_substeps(xl, self.f)
            if pending[rd]:
                u = u.index_add(1, self._tgt[rd], torch.cat(pending[rd], dim=1))
                pending[rd] = []
            y = _chain_route(u, wl, *self._pos[rd])
            send = self._send[rd]
            if send is not None:
                rows, counts, targets = send
                for t, share in zip(targets, torch.split(y.index_select(1, rows), counts, 1)):
                    pending[t].append(share)
            outs.append(average_substeps(y, self.f))
            del u, y
        return torch.cat(outs, dim=1).index_select(1, self._inv)

    __call__ = forward


def _chain_route(u: torch.Tensor, h: torch.Tensor, position: torch.Tensor,
                 top: int) -> torch.Tensor:
    """Discharge ``[B, n, L]`` of one round of chains: ``Q_k = h_k ⊛ (u_k + Q_{k-1})`` along
    each chain (``Q_{-1} = 0`` above a head), for inflow ``u`` ``[B, n, L]``, kernels ``h``
    ``[n, K]`` and ``position`` ``[n]`` (0 at heads; ``top`` its maximum).

    Each reach is the affine map ``Q ↦ h_k ⊛ Q + h_k ⊛ u_k``.  Long chains of cheap
    convolutions (short runs: a 2·10⁶-reach chain of 8 steps) take the prefix scan of
    :func:`_affine_scan` (a few passes over the round, ~9 convolutions per reach); rounds whose
    convolutions are expensive (long runs at sub-steps) sweep down the chains position by
    position (``top + 1`` steps, one convolution per reach), whichever costs less by
    :func:`_scan_pays`.  The arithmetic is the same linear convolution either way.
    """
    if top == 0 or not _scan_pays(u, h, top):
        return _chain_sweep(u, h, position, top)
    return _affine_scan(_causal_depthwise(u, h), h, position, top)


#: the cost of one Python step of a sweep (index ops, launches: ~10 ms on a busy 2-core CPU),
#: in multiply-adds
_STEP_COST = 10_000_000


def _conv_cost(length: int, taps: int) -> float:
    """Multiply-adds (or their FFT equivalent) per output row of :func:`_causal_depthwise`."""
    if taps <= _FFT_TAPS:
        return float(length * taps)
    nfft = 1 << max(1, int(length + taps - 1).bit_length())
    return 6.0 * nfft * math.log2(nfft)


def _scan_pays(u: torch.Tensor, h: torch.Tensor, top: int) -> bool:
    """Whether the scan's extra convolutions (~8 more per reach, with kernels that grow to
    the run's length) cost less than a sweep's ``top + 1`` Python steps."""
    b, n, length = u.shape
    extra = 8 * b * n * _conv_cost(length, min(length, 16 * h.shape[-1]))
    return extra < (top + 1) * _STEP_COST


def _chain_sweep(u: torch.Tensor, h: torch.Tensor, position: torch.Tensor,
                 top: int) -> torch.Tensor:
    """:func:`_chain_route` position by position: ``top + 1`` steps, one convolution per
    reach (the rows of a round are in chain order, so ``k - 1`` is ``k``'s upstream)."""
    if top == 0:
        return _causal_depthwise(u, h)
    order = torch.argsort(position, stable=True)
    counts = torch.bincount(position, minlength=top + 1).tolist()
    rows = torch.split(order, counts)
    outs: list[torch.Tensor] = []
    prev_rows = None
    for p, idx in enumerate(rows):
        x = u.index_select(1, idx)
        if p:
            # k - 1 of each reach at position p sits at position p - 1: its place there
            at = torch.searchsorted(prev_rows, idx - 1)
            x = x + outs[-1].index_select(1, at)
        outs.append(_causal_depthwise(x, h.index_select(0, idx)))
        prev_rows = idx
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(outs, dim=1).index_select(1, inv)


#: reaches per block of :func:`_affine_scan`'s two-level scan
_BLOCK = 16


def _affine_scan(q: torch.Tensor, a: torch.Tensor, position: torch.Tensor,
                 top: int) -> torch.Tensor:
    """``Q_k = q_k + a_k ⊛ Q_{k-1}`` along chains (``Q_{-1} = 0``): ``q`` ``[B, n, L]``,
    kernels ``a`` ``[n, K]``, ``position`` ``[n]`` (0 at heads, consecutive down a chain;
    ``top`` its maximum); returns ``Q`` ``[B, n, L]``.

    Chains shorter than ``2 · _BLOCK`` take a Hillis-Steele scan (:func:`_scan_steps`).
    Longer ones are cut into blocks of ``_BLOCK`` reaches: a scan within the blocks (which
    also composes each reach's kernels back to its block's head), the same scan, recursively,
    over the blocks' last reaches (each block being one affine map), then one convolution per
    reach adds what enters its block from above.  That is ~``2 log2(_BLOCK) + 1``
    convolutions per reach instead of ``2 log2(chain length)``: 2·10⁶ reaches in a chain
    take 6 passes over all reaches, not 42.
    """
    if top < 2 * _BLOCK:
        return _scan_steps(q, a, position, top, keep_kernels=False)[0]
    local = position % _BLOCK
    q, a = _scan_steps(q, a, local, _BLOCK - 1, keep_kernels=True)
    last = torch.ones_like(position, dtype=torch.bool)  # the last reach of each block
    last[:-1] = local[1:] == 0
    tails = torch.nonzero(last).squeeze(1)
    block = torch.div(position, _BLOCK, rounding_mode="floor")
    whole = _affine_scan(q.index_select(1, tails), a.index_select(0, tails),
                         block.index_select(0, tails), top // _BLOCK)
    rank = torch.cumsum(last.to(torch.int64), 0) - 1  # index in ``tails`` of each reach's tail
    below = torch.nonzero(block >= 1).squeeze(1)
    above = rank.index_select(0, below - local.index_select(0, below) - 1)  # previous block
    entering = _causal_depthwise(whole.index_select(1, above), a.index_select(0, below))
    return q.index_add(1, below, entering)


def _scan_steps(q: torch.Tensor, a: torch.Tensor, position: torch.Tensor, top: int, *,
                keep_kernels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Hillis-Steele scan of ``Q_k = q_k + a_k ⊛ Q_{k-1}`` over ``position`` (0 at heads, at
    most ``top``), in ``ceil(log2(top + 1))`` steps; returns ``(Q, A)`` where, with
    ``keep_kernels``, ``A_k = a_k ⊛ a_{k-1} ⊛ … ⊛ a_head`` (taps: at most ``L``, since
    nothing beyond the run acts; without, ``A`` is not complete)."""
    length = q.shape[-1]
    s = 1
    while s <= top:
        act = torch.nonzero(position >= s).squeeze(1)
        prt = act - s
        ha = a.index_select(0, act)
        contrib = _causal_depthwise(q.index_select(1, prt), ha)
        if keep_kernels or 2 * s <= top:  # the composed kernels are read later
            taps = min(length, 2 * a.shape[-1] - 1)
            a = F.pad(a, (0, taps - a.shape[-1]))
            composed = _causal_depthwise(a.index_select(0, prt).unsqueeze(0), ha)[0]
            a = a.index_copy(0, act, composed)
        q = q.index_add(1, act, contrib)
        s *= 2
    return q, a


def _causal_depthwise(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``y[b, i, t] = Σ_k h[i, k] u[b, i, t - k]`` for ``u`` ``[B, n, L]``, ``h`` ``[n, K]``:
    a grouped (depthwise) ``conv1d`` for short kernels, zero-padded FFTs for long ones (in
    blocks of rows: their complex temporaries stay ~``_FFT_BLOCK`` values)."""
    taps = h.shape[-1]
    if taps > _FFT_TAPS:
        n, length = u.shape[1], u.shape[-1]
        rows = max(1, _FFT_BLOCK // (u.shape[0] * (length + taps)))
        if rows >= n:
            return causal_conv_fft(u, h)
        return torch.cat([causal_conv_fft(u[:, a : a + rows], h[a : a + rows])
                          for a in range(0, n, rows)], dim=1)
    return F.conv1d(F.pad(u, (taps - 1, 0)), torch.flip(h, dims=(-1,)).unsqueeze(1),
                    groups=h.shape[0])


#: complex values per block of rows of the FFT convolution (~64 MB of complex64)
_FFT_BLOCK = 1 << 23

#: kernels longer than this (taps) convolve by FFT: ~2x faster than direct sums there on CPU
_FFT_TAPS = 256


def path_truncation(network: RiverNetwork, reach_mass: np.ndarray) -> np.ndarray:
    """``[N]`` for every reach, the largest sum of the truncated masses ``reach_mass`` of the
    reaches on a path ending there: a bound of the mass a levels run cuts off that path."""
    m = np.nan_to_num(np.asarray(reach_mass, np.float64), nan=0.0)
    return network.path_max_sum(m)


def auto_level_window(
    network: RiverNetwork, irf: Any, params: Any, substeps: int, n_steps: int,
    *, tol: float = 1e-6, allow_unstable: bool = False,
) -> int:
    """The shortest window (routing steps, doubling from 32, at most ``n_steps``) that cuts
    at most ``tol`` off any path (the sum of its reaches' truncated kernel masses, see
    :func:`path_truncation`: what :meth:`LevelRouter.check_window` checks); ``params`` may be
    one ``[N, P]`` set or a list of them (e.g. the corners of a calibration's bounds): the
    longest window over the sets."""
    spec = get_irf(irf)
    sets = params if isinstance(params, (list, tuple)) else [params]
    window = min(32, n_steps)
    for s in sets:
        # float64: float32 kernels sum to 1 within ~1e-7 per reach, which a path of a few
        # hundred reaches adds up past the tolerance, so the window would grow to the run
        p = stack_params(spec, s, n=network.n_reaches).detach().to(torch.float64)
        while window < n_steps:
            h = irf_kernel(spec, p, window * substeps, substeps,
                           allow_unstable=allow_unstable)
            lost = (1.0 - h.detach().sum(-1).double()).abs().cpu().numpy()
            if path_truncation(network, lost).max(initial=0.0) <= tol:
                break
            window = min(2 * window, n_steps)
    return window


def _levels_engine(network, runoff, irf, params, substeps=1, *, window="auto",
                   allow_unstable=False, **options):
    if options:
        raise TypeError(f"the 'levels' engine takes no options {sorted(options)}")
    n_steps = int(runoff.shape[-1])
    if window == "auto":
        window = auto_level_window(network, irf, params, substeps, n_steps,
                                   allow_unstable=allow_unstable)
    router = LevelRouter(network, irf=irf, substeps=substeps, window=min(int(window), n_steps),
                         device=runoff.device, allow_unstable=allow_unstable)
    q = router(runoff, params)
    lost = float(router.truncated_mass.max()) if router.truncated_mass is not None else 0.0
    logger.info("levels engine: window %d steps, max truncated kernel mass %.2e", window, lost)
    return q


# Preferred on CPU: no path-kernel aggregation, whose cost dominates there.
register_engine(EngineSpec("levels", _levels_engine, rank={"cpu": 15, "cuda": 5}))

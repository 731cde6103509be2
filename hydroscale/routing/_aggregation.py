"""Path-kernel aggregation: the reach -> reach kernels ``h_i ⊛ … ⊛ h_j`` inside clusters.

For every pair ``(i, j)`` of one cluster with ``i`` upstream of (or equal to) ``j``, the path
kernel ``P_ij = h_i ⊛ … ⊛ h_j`` is built at SUB-STEP resolution (``L = K f`` taps for a window
of ``K`` routing steps), hop by hop: the pairs whose path has ``d`` edges are the pairs of
``d - 1`` edges extended by one reach, ``P = P_prev ⊛ h_dst`` truncated to ``L`` taps (exact
for those taps, no wrap-around, no renormalisation).  All clusters are processed together, one
batched extension per hop: on the Triton backend, an IRF with a recursive form
(:attr:`~hydroscale.irf.IRFSpec.recursion`: Muskingum, the linear reservoir) runs its filter
over ``P_prev`` (:func:`~hydroscale.kernels.extend_recursive`, a scan: at 1M reaches on an
H100 the aggregation took 0.041 s against 0.215 s by FFT); otherwise each hop is a zero-padded
FFT convolution.

From ``P`` the engine needs four kinds of step-resolution kernels (``M[K, a, c] = P[K f + a - c]``,
``P[<0] = 0``), see :mod:`hydroscale.routing._router`:

- ``R -> reach`` : runoff of ``i`` -> step-averaged discharge of ``j``,
  ``H[K] = (1/f) Σ_{a,c} M[K, a, c]`` (:func:`~hydroscale.irf.substep_kernel_to_step`);
- ``R -> exit`` : runoff of ``i`` -> sub-step ``a`` outflow of exit ``j``, ``Σ_c M[K, a, c]``;
- ``U -> reach`` : transfer channel ``c`` of inlet ``i`` -> discharge of ``j``,
  ``(1/f) Σ_a M[K, a, c]``;
- ``U -> exit`` : transfer channel ``c`` of inlet ``i`` -> outflow channel ``a`` of exit ``j``,
  ``M[K, a, c]``.

The truncated mass of a pair is ``Π_m mass(h_m) - Σ_K H[K]``: the part of the path's response
that falls beyond the window; it is reported per cluster (max over the cluster's pairs).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..irf import IRFSpec, irf_kernel, irf_recursion
from ..kernels import extend_recursive
from ._rivtree import RivTreeCluster

__all__ = ["PairPlan", "PathKernels", "plan_pairs", "device_hops", "aggregate", "auto_window",
           "fitted_window"]

logger = logging.getLogger(__name__)

_FFT_CHUNK = 1 << 21  # complex elements per FFT chunk (32 MB in complex128)


@dataclass
class PairPlan:
    """Parameter-independent enumeration of the path pairs of some clusters (numpy int64).

    ``hops[d] = (src, dst, parent)``: the pairs whose path has ``d`` edges; ``parent`` indexes
    the pairs of hop ``d - 1`` they extend (``-1`` at hop 0).  ``reaches`` are the global
    indices of the reaches involved (rows of the per-reach kernel table), ``slot[N]`` maps a
    global reach index to its row (``-1`` outside).  ``rows_*`` give, for every kernel kind,
    the (hop, index in hop) of its pairs, in the engine's row order (see ``_router``).
    """

    reaches: np.ndarray
    slot: np.ndarray
    hops: list
    n_pairs: int


def plan_pairs(cs: RivTreeCluster, clusters: np.ndarray | None = None) -> PairPlan:
    """Enumerate the in-cluster path pairs of ``clusters`` (all when None), hop by hop."""
    if clusters is None:
        reaches = cs.order.copy()
    else:
        # the clusters' ranges of the engine order, in that order: O(their reaches), not O(N)
        # (a worker plans one router per batch of its clusters)
        rng = cs.reach_ptr_cluster[np.unique(np.asarray(clusters, dtype=np.int64))]
        rng = rng[np.argsort(rng[:, 0], kind="stable")]
        length = rng[:, 1] - rng[:, 0]
        start = np.repeat(rng[:, 0] - (np.cumsum(length) - length), length)
        reaches = cs.order[start + np.arange(int(length.sum()))]
    slot = np.full(cs.n_reaches, -1, dtype=np.int64)
    slot[reaches] = np.arange(reaches.size)
    src = reaches.copy()
    dst = reaches.copy()
    hops = [(src, dst, np.full(src.size, -1, dtype=np.int64))]
    total = src.size
    while True:
        nxt = cs.down_in[dst]
        ok = np.flatnonzero(nxt >= 0)
        if ok.size == 0:
            break
        src, dst = src[ok], nxt[ok]
        hops.append((src, dst, ok))
        total += ok.size
    logger.debug("planned %d path pairs over %d hops for %d reaches", total, len(hops),
                 reaches.size)
    return PairPlan(reaches=reaches, slot=slot, hops=hops, n_pairs=total)


class _TruncConv(torch.autograd.Function):
    """``out[p] = (prev[p] ⊛ h[idx[p]])[:L]`` with a lean backward (saves ``prev`` and ``h``)."""

    @staticmethod
    def forward(ctx, prev, h, idx, save_dtype):  # noqa: D102
        # the saved copy may be narrower (float32) to halve the memory kept for backward
        ctx.save_for_backward(prev.to(save_dtype or prev.dtype), h, idx)
        return _conv_rows(prev, h, idx, correlate=False)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        prev, h, idx = ctx.saved_tensors
        prev = prev.to(g.dtype)
        g_prev = g_h = None
        if ctx.needs_input_grad[0]:
            g_prev = _conv_rows(g, h, idx, correlate=True)
        if ctx.needs_input_grad[1]:
            g_h = torch.zeros_like(h)
            g_h.index_add_(0, idx, _conv_rows(g, prev, None, correlate=True))
        return g_prev, g_h, None, None


def _conv_rows(
    a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor | None, *, correlate: bool
) -> torch.Tensor:
    """Row-wise truncated causal convolution (or its adjoint, a correlation) of ``a [n, L]``
    with ``b[idx]`` (or ``b`` when ``idx`` is None), by zero-padded FFT in chunks.

    The FFT length is the smallest 2-3-5-smooth length >= ``2 L - 1`` (not the next power
    of two), and with ``idx`` each distinct row of ``b`` in a chunk is transformed once
    (many paths extend by the same reach)."""
    n, length = a.shape
    nfft = _fast_length(2 * length - 1)
    out = torch.empty_like(a)
    step = max(1, _FFT_CHUNK // (nfft // 2 + 1))
    for r0 in range(0, n, step):
        ar = a[r0 : r0 + step]
        if idx is None:
            fb = torch.fft.rfft(b[r0 : r0 + step], n=nfft)
        else:
            rows, inv = torch.unique(idx[r0 : r0 + step], return_inverse=True)
            fb = torch.fft.rfft(b.index_select(0, rows), n=nfft).index_select(0, inv)
        if correlate:
            fb = fb.conj()
        fa = torch.fft.rfft(ar, n=nfft)
        fa *= fb
        out[r0 : r0 + step] = torch.fft.irfft(fa, n=nfft)[:, :length]
    return out


def _fast_length(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= ``n`` (a length the FFT does fast)."""
    best = 1 << max(1, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _step_kernel(p: torch.Tensor, f: int) -> torch.Tensor:
    """``[n, K]`` step kernels of sub-step kernels ``p [n, K f]``; the same numbers as
    :func:`~hydroscale.irf.substep_kernel_to_step` (``H[K] = (1/f) Σ_{a,b} P[K f + b - a]``),
    computed as two small matmuls over the sub-step blocks (no scan over the whole kernel)."""
    n, length = p.shape
    k = length // f
    blocks = p.view(n, k, f)
    j = _substeps(f, p.dtype, p.device)
    own, spill = blocks @ (f - j), blocks @ j  # weights of block K on H[K] and on H[K + 1]
    return (own + torch.nn.functional.pad(spill, (1, 0))[:, :k]) / f


@functools.lru_cache(maxsize=64)
def _substeps(f: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[0, 1, ..., f - 1]`` (a constant, made once per dtype and device: the hop loop would
    otherwise launch it per hop; callers must not write into it)."""
    return torch.arange(f, device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _step_adjoint(f: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``[2, f]``: the weights ``(f - b) / f`` and ``b / f`` of sub-step ``b`` of block ``K`` on
    the step kernel's taps ``K`` and ``K + 1`` (see :func:`_step_kernel`); a constant."""
    j = _substeps(f, dtype, device)
    return torch.stack([(f - j) / f, j / f])


@functools.lru_cache(maxsize=64)
def _phase_masks(f: int, over: str, dtype: torch.dtype, device) -> tuple:
    """``(own, spill, scale)`` of :func:`_phase_sums`: sub-step ``j`` of block ``K`` (``own``)
    and of block ``K - 1`` (``spill``) entering channel ``a`` (``[f(j), f(a)]``); constants,
    made once per dtype and device."""
    j = torch.arange(f, device=device).view(f, 1)
    a = torch.arange(f, device=device).view(1, f)
    if over == "c":  # block K: j <= a; block K-1: j > a
        return (j <= a).to(dtype), (j > a).to(dtype), 1.0
    # block K: j <= f-1-c; block K-1: j >= f-c
    return (j <= f - 1 - a).to(dtype), (j >= f - a).to(dtype), 1.0 / f


def _phase_sums(p: torch.Tensor, f: int, over: str) -> torch.Tensor:
    """``[n, f, K]`` polyphase step kernels of sub-step kernels ``p [n, K f]``.

    ``over="c"``: ``Σ_c P[K f + a - c]`` indexed by ``a`` (runoff -> exit channel ``a``);
    ``over="a"``: ``(1/f) Σ_a P[K f + a - c]`` indexed by ``c`` (channel ``c`` -> reach).
    Each is a sum over a window of ``f`` sub-steps that spans blocks ``K`` and ``K - 1``.
    """
    n, length = p.shape
    k = length // f
    blocks = p.view(n, k, f)
    own, spill, _ = _phase_masks(f, over, p.dtype, p.device)
    out = blocks @ own + torch.nn.functional.pad(blocks @ spill, (0, 0, 1, 0))[:, :k]
    out = out.transpose(1, 2)  # [n, f, K]
    return out if over == "c" else out / f


@functools.lru_cache(maxsize=64)
def _phase_index(k: int, f: int, device) -> torch.Tensor:
    """``[f(a) f(c) K]`` index into ``P`` padded by ``f`` zeros in front: ``K f + a - c + f``
    (a constant, made once per device)."""
    kk = torch.arange(k, device=device).view(1, 1, k) * f
    a = torch.arange(f, device=device).view(f, 1, 1)
    c = torch.arange(f, device=device).view(1, f, 1)
    return (kk + a - c + f).reshape(-1)


def _phase_matrix(p: torch.Tensor, f: int) -> torch.Tensor:
    """``[n, f(a), f(c), K]`` with ``M[a, c, K] = P[K f + a - c]`` (zero for negative index)."""
    n, length = p.shape
    k = length // f
    pp = torch.nn.functional.pad(p, (f, 0))
    return pp.index_select(1, _phase_index(k, f, p.device)).view(n, f, f, k)


def _shift_up(g: torch.Tensor, dim: int) -> torch.Tensor:
    """``g`` moved one place down along ``dim`` (``out[K] = g[K + 1]``, zero at the end)."""
    pad = [0, 0] * (g.ndim - 1 - dim) + [0, 1]
    return torch.nn.functional.pad(g, pad).narrow(dim, 1, g.shape[dim])


class _HopKernels(torch.autograd.Function):
    """A hop's step kernels ``[n, K]`` and, for its selected rows, the polyphase kernels of
    :func:`_phase_sums` (exit rows ``"c"``, inlet rows ``"a"``) and :func:`_phase_matrix`
    (rows that are both), from its sub-step kernels ``p [n, K f]``.

    The backward writes the gradient of ``p`` once (the step kernels' adjoint) and adds the
    selected rows' adjoints into it in place; autograd through the ops would make, per hop,
    a zero-filled full-size gradient per selection, two per matmul, and sum them."""

    @staticmethod
    def forward(ctx, p, f, exit_sel, inlet_sel, both_sel):  # noqa: D102
        ctx.f, ctx.sels, ctx.shape = f, (exit_sel, inlet_sel, both_sel), p.shape
        out = [_step_kernel(p, f)]
        for sel, kind in zip(ctx.sels, ("c", "a", "m")):
            if sel is None:
                out.append(p.new_zeros(0))
            elif kind == "m":
                out.append(_phase_matrix(p.index_select(0, sel), f))
            else:
                out.append(_phase_sums(p.index_select(0, sel), f, kind))
        return tuple(out)

    @staticmethod
    def backward(ctx, g_step, g_exit, g_inlet, g_both):  # noqa: D102
        f = ctx.f
        n, length = ctx.shape
        k = length // f
        # H[K] = (1/f) (Σ_b (f - b) P[K, b] + Σ_b b P[K - 1, b]): its adjoint written in one
        # pass, a matmul [n, K, 2] @ [2, f] (broadcast products and sums passed over the
        # [n, K f] gradient five times: ~30 ms of a 1M-reach backward)
        pair = torch.stack([g_step, _shift_up(g_step, 1)], -1)
        gp = (pair @ _step_adjoint(f, g_step.dtype, g_step.device)).reshape(n, length)
        for sel, g, kind in zip(ctx.sels, (g_exit, g_inlet, g_both), ("c", "a", "m")):
            if sel is None:
                continue
            if kind == "m":  # M[a, c, K] = P[K f + a - c]: scatter back
                padded = g.new_zeros(g.shape[0], length + f)
                padded.index_add_(1, _phase_index(k, f, g.device), g.reshape(g.shape[0], -1))
                gp.index_add_(0, sel, padded[:, f:])
                continue
            own, spill, scale = _phase_masks(f, kind, g.dtype, g.device)
            gt = g.transpose(1, 2) * scale  # [m, K, f(a)]
            gb = gt @ own.T + _shift_up(gt, 1) @ spill.T
            gp.index_add_(0, sel, gb.reshape(g.shape[0], length))
        return gp, None, None, None, None


@dataclass
class PathKernels:
    """The aggregated step-resolution kernels of a set of clusters.

    Attributes
    ----------
    window : K, taps per kernel (routing steps).
    r_reach : ``[n, K]`` runoff -> reach kernels, one per pair of hop order ``plan.hops``.
    r_exit : ``[n_rx, f, K]`` runoff -> exit channel kernels (pairs whose dst is an exit).
    u_reach : ``[n_ur, f, K]`` inlet channel -> reach kernels (pairs whose src is an inlet).
    u_exit : ``[n_ue, f(a), f(c), K]`` inlet channel ``c`` -> exit channel ``a`` kernels.
    truncated : ``[n]`` truncated mass per pair (float64, detached).
    """

    window: int
    r_reach: torch.Tensor
    r_exit: torch.Tensor
    u_reach: torch.Tensor
    u_exit: torch.Tensor
    truncated: torch.Tensor


_MASS_BLOCK = 1 << 22


def reach_mass(spec: IRFSpec, params: torch.Tensor, n_taps: int, substeps: int) -> torch.Tensor:
    """``[n, 3]`` (mass, mean, variance in sub-steps) of each reach's kernel over ``n_taps``."""
    out = []
    t = torch.arange(n_taps, device=params.device, dtype=torch.float64)
    moments = torch.stack([torch.ones_like(t), t, t * t], dim=1)  # [n_taps, 3]
    # blocks of ~2^22 float64 taps (32 MB): the IRF's own temporaries scale with the block
    step = max(1, _MASS_BLOCK // n_taps)
    with torch.no_grad():
        for r0 in range(0, params.shape[0], step):
            h = irf_kernel(spec, params[r0 : r0 + step].to(torch.float64), n_taps, substeps,
                           allow_unstable=True)
            m, first, second = (h @ moments).unbind(-1)
            mean = first / m
            var = second / m - mean**2
            out.append(torch.stack([m, mean, var.clamp_min(0)], dim=-1))
    return torch.cat(out) if out else params.new_zeros(0, 3, dtype=torch.float64)


def _filter_mass(coef: torch.Tensor) -> torch.Tensor:
    """``[n]`` float64 mass ``(b0 + b1) / (1 - a1)`` of recursive filters ``coef [n, 3]``
    (the sum of their impulse responses; infinite where ``|a1| >= 1``)."""
    b0, b1, a1 = coef.to(torch.float64).unbind(-1)
    stable = a1.abs() < 1
    return torch.where(stable, (b0 + b1) / (1 - a1).where(stable, 1.0), torch.inf)


MAX_AUTO_WINDOW = 366  # steps: the longest auto window when the run's length is not known


def auto_window(
    cs: RivTreeCluster,
    plan: PairPlan,
    spec: IRFSpec,
    params: torch.Tensor,
    substeps: int,
    *,
    n_sigma: float = 10.0,
    probe_steps: int = 64,
    max_window: int | None = None,
) -> int:
    """A window K (routing steps) covering ``mean + n_sigma · sd`` of every in-cluster path.

    Means and variances of the per-reach kernels (over ``probe_steps`` steps) add up along a
    path; the bound is conservative for the IRFs of the catalogue.  The truncated mass that
    remains is measured exactly by :func:`aggregate`, and :func:`fitted_window` finds the
    shortest window within this bound that keeps it under a tolerance.
    """
    f = substeps
    stats = reach_mass(spec, params[torch.as_tensor(plan.reaches, device=params.device)],
                       probe_steps * f, f).cpu().numpy()
    mean = np.zeros(plan.reaches.size)
    var = np.zeros(plan.reaches.size)
    best = 0.0
    for d, (_, dst, parent) in enumerate(plan.hops):
        if d == 0:
            mean, var = stats[plan.slot[dst], 1], stats[plan.slot[dst], 2]
        else:
            mean = mean[parent] + stats[plan.slot[dst], 1]
            var = var[parent] + stats[plan.slot[dst], 2]
        if mean.size:
            best = max(best, float(np.max(mean + n_sigma * np.sqrt(var))))
    k = int(math.ceil((best + 1) / f)) + 1
    cap = MAX_AUTO_WINDOW if max_window is None else int(max_window)
    if k > cap:
        logger.info("auto window bound %d steps capped at %d (the run's length, or the "
                    "longest auto window; a truncating window is refused before routing)",
                    k, cap)
        k = cap
    return max(k, 2)


#: rows of path kernels per block of :func:`fitted_window`
_FIT_ROWS = 1 << 18


def fitted_window(kernels: PathKernels, tolerance: float) -> int:
    """The shortest window (at least 2 steps, at most ``kernels.window``) whose truncated mass
    is at most ``tolerance`` for every pair: the mass beyond the first ``K`` taps of a pair is
    its truncated mass plus its taps ``K ..`` (of the ``R -> reach`` kernel, whose taps add up
    to the pair's response; float64 kernels give it exactly).

    The step kernels of a window ``K`` are the first ``K`` taps of those of a longer window
    (tap ``K - 1`` reads sub-steps below ``K f`` only), so ``kernels`` aggregated once over an
    upper bound (:func:`auto_window`) give every shorter window's truncation.
    """
    k0 = kernels.window
    rows = kernels.r_reach.shape[0]
    if rows == 0:
        return min(k0, 2)
    worst = torch.zeros(k0, dtype=torch.float64, device=kernels.r_reach.device)
    for a in range(0, rows, _FIT_ROWS):  # in row blocks: a few block-sized temporaries
        h = kernels.r_reach[a : a + _FIT_ROWS].detach().to(torch.float64)
        # beyond[:, j] = truncated + Σ_{k >= j} h[:, k]: the mass beyond the first j taps
        beyond = torch.flip(torch.cumsum(torch.flip(h, [1]), 1), [1])
        beyond += kernels.truncated[a : a + _FIT_ROWS].to(h.device, torch.float64)[:, None]
        worst = torch.maximum(worst, beyond.abs().amax(0))
    worst = worst.cpu().numpy()  # [k0]: window j -> worst[j] (j < k0)
    for k in range(2, k0):
        if worst[k] <= tolerance:
            return k
    return k0


@dataclass
class _DeviceHop:
    dst_slot: torch.Tensor  # [n_d] row of the per-reach kernel table
    parent: torch.Tensor | None  # [n_d] index into the previous hop
    exit_sel: torch.Tensor | None  # pairs whose dst is an exit
    inlet_sel: torch.Tensor | None  # pairs whose src is an inlet
    both_sel: torch.Tensor | None  # both


def device_hops(
    plan: PairPlan, exit_mask: np.ndarray, inlet_mask: np.ndarray, device: torch.device
) -> list[_DeviceHop]:
    """The hop index tensors of ``plan`` on ``device`` (built once per router)."""

    def sel(mask: np.ndarray) -> torch.Tensor | None:
        idx = np.flatnonzero(mask)
        return torch.as_tensor(idx, device=device) if idx.size else None

    out = []
    for d, (src, dst, parent) in enumerate(plan.hops):
        ex, inl = exit_mask[dst], inlet_mask[src]
        out.append(_DeviceHop(
            dst_slot=torch.as_tensor(plan.slot[dst], device=device),
            parent=None if d == 0 else torch.as_tensor(parent, device=device),
            exit_sel=sel(ex), inlet_sel=sel(inl), both_sel=sel(ex & inl),
        ))
    return out


def aggregate(
    plan: PairPlan,
    hops: list[_DeviceHop],
    spec: IRFSpec,
    params: torch.Tensor,
    substeps: int,
    window: int,
    *,
    dtype: torch.dtype = torch.float64,
    save_dtype: torch.dtype | None = None,
    mass_taps: int | None = None,
    backend: str = "torch",
    rows: torch.Tensor | None = None,
    on_progress: Callable[[int], Any] | None = None,
    step_only: bool = False,
) -> PathKernels:
    """Aggregate the path kernels of ``plan`` (differentiable w.r.t. ``params``).

    Parameters
    ----------
    plan, hops : from :func:`plan_pairs` and :func:`device_hops`.
    params : ``[N, P]`` per-reach parameters in network order (routing-step units).
    window : K, taps of every step kernel; the sub-step kernels have ``K · f`` taps.
    dtype : arithmetic of the aggregation (float64 by default).
    save_dtype : dtype of the sub-step kernels kept for the backward pass of the FFT hops
        (default ``dtype``; float32 halves the memory of a float32 calibration).  The
        recursive hops keep every hop's kernels in ``dtype`` instead (each is the input of the
        next hop and the output of its own, kept once): at 1M reaches, f = 24, K = 6, 5.7 GB
        in float32 and 11.4 GB in float64, against 5.7 GB for the FFT hops at float32.
    mass_taps : sub-steps over which each reach's full kernel mass is measured for the
        truncation report (default ``8 K f``), for IRFs without a recursive form; the mass of
        a recursive filter is ``(b0 + b1) / (1 - a1)``, exactly.
    backend : ``"triton"`` extends the paths of IRFs with a recursive form
        (:attr:`~hydroscale.irf.IRFSpec.recursion`) by running the filter
        (:func:`~hydroscale.kernels.extend_recursive`); otherwise (and with ``"torch"``) each
        hop is a zero-padded FFT convolution.  Both are exact for the ``K f`` taps.
    rows : ``plan.reaches`` on the device of ``params`` (default: copied from the plan).
    on_progress : optional ``on_progress(n)``, called after each hop with the number of
        pairs it aggregated (``plan.n_pairs`` in all; e.g. a progress bar's ``update``).
    step_only : only ``r_reach`` and ``truncated`` (what fitting a window reads); the
        polyphase kernels of exits and inlets, ``f`` (or ``f²``) times larger per pair, come
        back empty.

    Returns
    -------
    :class:`PathKernels`, rows in hop order (hop 0 first), each kind restricted to its pairs.
    """
    f = substeps
    length = window * f
    dev = params.device
    rows = torch.as_tensor(plan.reaches, device=dev) if rows is None else rows
    p_rows = params.index_select(0, rows)
    h = irf_kernel(spec, p_rows, length, f, allow_unstable=True).to(dtype)
    coef = irf_recursion(spec, p_rows, f, allow_unstable=True)
    if coef is None:
        mass = reach_mass(spec, p_rows.detach(), mass_taps or 8 * length, f)[:, 0]
    else:
        mass = _filter_mass(coef.detach())
    # the filter's coefficients when the hops run it (Triton), else None (FFT hops)
    extend = coef.to(dtype) if coef is not None and backend == "triton" else None
    r_reach, r_exit, u_reach, u_exit, trunc = [], [], [], [], []
    prev = mprod = None
    for hop in hops:
        if hop.parent is None:
            cur = h.index_select(0, hop.dst_slot)
            mprod = mass.index_select(0, hop.dst_slot)
        else:
            if extend is not None:
                cur = extend_recursive(prev, extend, hop.parent, hop.dst_slot, backend=backend)
            else:
                cur = _TruncConv.apply(prev.index_select(0, hop.parent), h, hop.dst_slot,
                                       save_dtype)
            mprod = mprod.index_select(0, hop.parent) * mass.index_select(0, hop.dst_slot)
        sels = (None, None, None) if step_only else (hop.exit_sel, hop.inlet_sel, hop.both_sel)
        step, rx, ur, ue = _HopKernels.apply(cur, f, *sels)
        r_reach.append(step)
        trunc.append(mprod - step.detach().to(torch.float64).sum(-1))
        for sel, part, parts in zip(sels, (rx, ur, ue), (r_exit, u_reach, u_exit)):
            if sel is not None:
                parts.append(part)
        prev = cur
        if on_progress is not None:
            on_progress(int(hop.dst_slot.numel()))

    prev = cur = h = None  # the hop buffers go before the parts are joined

    def cat(parts: list, shape: tuple) -> torch.Tensor:
        out = torch.cat(parts) if parts else params.new_zeros(shape, dtype=dtype)
        parts.clear()  # one kind at a time: the peak is the parts plus one kind, not two sets
        return out

    return PathKernels(
        window=window,
        r_reach=cat(r_reach, (0, window)),
        r_exit=cat(r_exit, (0, f, window)),
        u_reach=cat(u_reach, (0, f, window)),
        u_exit=cat(u_exit, (0, f, f, window)),
        truncated=torch.cat(trunc).detach(),
    )

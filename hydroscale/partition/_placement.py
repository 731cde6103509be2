"""Placement of clusters on workers: per-wave load balance with upstream-chain affinity.

Clusters of one wave run in parallel, so each wave's work is balanced across the workers on its
own.  Within a wave, clusters are taken heaviest first; a cluster goes to the worker that holds
most of its upstream work (its upstream chain, so transfer buffers stay local) when that worker
stays under the wave's target load, and otherwise to the least loaded worker.  A pairwise
move/swap refinement then evens out the heaviest and lightest workers.  The loops here run over
clusters of one wave (thousands), never over reaches.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["place_clusters", "wave_loads"]

logger = logging.getLogger(__name__)


def wave_loads(
    wave: np.ndarray, worker: np.ndarray, work: np.ndarray, n_workers: int
) -> np.ndarray:
    """Work per (wave, worker), float64 ``[n_waves, n_workers]``."""
    n_waves = int(wave.max()) + 1 if wave.size else 0
    flat = np.bincount(wave * n_workers + worker, weights=work, minlength=n_waves * n_workers)
    return flat.reshape(n_waves, n_workers)


def _imbalance(load: np.ndarray) -> float:
    mean = load.mean()
    return float(load.max() / mean - 1.0) if mean > 0 else 0.0


def _refine(items: np.ndarray, assign: np.ndarray, load: np.ndarray, max_iter: int) -> None:
    """Even out the heaviest and the lightest worker by one move or one swap at a time.

    ``items`` are the works of the wave's clusters, ``assign`` their workers (updated in place),
    ``load`` the per-worker totals (updated in place).
    """
    for _ in range(max_iter):
        hi, lo = int(np.argmax(load)), int(np.argmin(load))
        gap = load[hi] - load[lo]
        if gap <= 0:
            return
        on_hi = np.flatnonzero(assign == hi)
        on_lo = np.flatnonzero(assign == lo)
        # Moving work d from hi to lo (0 < d < gap) lowers max(hi, lo); best d is gap / 2.
        best_d, best = 0.0, None
        d_move = items[on_hi]
        ok = (d_move > 0) & (d_move < gap)
        if ok.any():
            i = int(np.argmin(np.where(ok, np.abs(d_move - gap / 2), np.inf)))
            best_d, best = float(d_move[i]), (on_hi[i], -1)
        if on_lo.size and on_hi.size:
            wl = items[on_lo]
            srt = np.argsort(wl)
            wl_s = wl[srt]
            # for each a on hi, the b on lo with w_a - w_b closest to gap / 2
            target = items[on_hi] - gap / 2
            j = np.clip(np.searchsorted(wl_s, target), 0, wl_s.size - 1)
            for jj in (j, np.maximum(j - 1, 0)):
                d = items[on_hi] - wl_s[jj]
                ok = (d > 0) & (d < gap)
                if ok.any():
                    score = np.where(ok, np.abs(d - gap / 2), np.inf)
                    i = int(np.argmin(score))
                    if best is None or score[i] < abs(best_d - gap / 2):
                        best_d, best = float(d[i]), (on_hi[i], on_lo[srt[jj[i]]])
        if best is None or max(load[hi] - best_d, load[lo] + best_d) >= load[hi]:
            return
        a, b = best
        assign[a] = lo
        if b >= 0:
            assign[b] = hi
        load[hi] -= best_d
        load[lo] += best_d


def _lpt(items: np.ndarray, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    assign = np.empty(items.size, dtype=np.int64)
    load = np.zeros(n_workers)
    for i in np.argsort(-items, kind="stable"):
        w = int(np.argmin(load))
        assign[i] = w
        load[w] += items[i]
    return assign, load


def place_clusters(
    wave: np.ndarray,
    work: np.ndarray,
    src_cluster: np.ndarray,
    dst_cluster: np.ndarray,
    n_workers: int,
    *,
    balance_tol: float = 0.02,
) -> np.ndarray:
    """Place clusters on ``n_workers`` workers, wave by wave.

    Two sweeps are tried and the one with fewer cross-worker edges kept: downstream first
    (a cluster follows the worker of the cluster it drains into, so a whole upstream chain
    lands where its outlet is) and upstream first (a cluster follows the worker holding most
    of its upstream work).

    Parameters
    ----------
    wave : int [C], topological wave of each cluster.
    work : float [C], cost of each cluster (e.g. reaches).
    src_cluster, dst_cluster : int [E], cluster DAG edges (upstream -> downstream).
    n_workers : W.
    balance_tol : a cluster follows its chain only while its worker's load in the wave stays
        under ``(1 + balance_tol)`` times the wave's mean per-worker load.

    Returns
    -------
    int64 [C], the worker of each cluster.
    """
    n_c = wave.size
    if n_workers <= 1 or n_c == 0:
        return np.zeros(n_c, dtype=np.int64)
    work = np.asarray(work, dtype=np.float64)
    best, best_cross = None, -1
    for downstream_first in (True, False):
        worker = _sweep(
            wave, work, src_cluster, dst_cluster, n_workers, balance_tol, downstream_first
        )
        cross = int(np.count_nonzero(worker[src_cluster] != worker[dst_cluster]))
        logger.debug(
            "placement (downstream_first=%s): %d cross-worker edges", downstream_first, cross
        )
        if best is None or cross < best_cross:
            best, best_cross = worker, cross
    return best


def _sweep(
    wave: np.ndarray,
    work: np.ndarray,
    src_cluster: np.ndarray,
    dst_cluster: np.ndarray,
    n_workers: int,
    balance_tol: float,
    downstream_first: bool,
) -> np.ndarray:
    n_c = wave.size
    worker = np.full(n_c, -1, dtype=np.int64)
    n_waves = int(wave.max()) + 1
    by_wave = np.argsort(wave, kind="stable")
    wptr = np.searchsorted(wave[by_wave], np.arange(n_waves + 1))
    # The edges that tie a cluster of wave w to already placed clusters: its outgoing edges
    # (downstream first) or its incoming edges (upstream first).
    mine, other = (src_cluster, dst_cluster) if downstream_first else (dst_cluster, src_cluster)
    e_order = np.argsort(wave[mine], kind="stable")
    mine, other = mine[e_order], other[e_order]
    eptr = np.searchsorted(wave[mine], np.arange(n_waves + 1))
    local = np.empty(n_c, dtype=np.int64)
    waves = range(n_waves - 1, -1, -1) if downstream_first else range(n_waves)
    for w in waves:
        members = by_wave[wptr[w] : wptr[w + 1]]
        items = work[members]
        target = items.sum() / n_workers * (1.0 + balance_tol)
        pref = np.full(members.size, -1, dtype=np.int64)
        a, b = int(eptr[w]), int(eptr[w + 1])
        if b > a:
            local[members] = np.arange(members.size)
            weight = work[other[a:b]] if not downstream_first else np.ones(b - a)
            score = np.zeros(members.size * n_workers)
            np.add.at(score, local[mine[a:b]] * n_workers + worker[other[a:b]], weight)
            score = score.reshape(members.size, n_workers)
            pref = np.where(score.max(axis=1) > 0, score.argmax(axis=1), -1)
        assign = np.empty(members.size, dtype=np.int64)
        load = np.zeros(n_workers)
        for i in np.argsort(-items, kind="stable"):
            p = int(pref[i])
            if p < 0 or load[p] + items[i] > target:
                p = int(np.argmin(load))
            assign[i] = p
            load[p] += items[i]
        _refine(items, assign, load, max_iter=4 * members.size)
        if _imbalance(load) > balance_tol:
            alt, alt_load = _lpt(items, n_workers)
            _refine(items, alt, alt_load, max_iter=4 * members.size)
            if _imbalance(alt_load) < _imbalance(load):
                assign, load = alt, alt_load
        worker[members] = assign
    return worker

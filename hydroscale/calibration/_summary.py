"""Small summaries of a calibration's state for its page: parameter histograms against fixed
bin edges (summable across workers), the share of reaches at a bound, and hydrograph series
reduced to a bounded number of points.

Everything here is numpy in, numpy (or plain lists) out, and small: ``P × bins`` counts per
iteration whatever the number of reaches, at most ``max_points`` values per hydrograph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["AT_BOUND", "HIST_BINS", "MAX_POINTS", "histogram_edges", "parameter_counts",
           "reduce_series"]

#: bins of a parameter histogram between the lowest lower and the highest upper bound
HIST_BINS = 30
#: a parameter is "at a bound" within this fraction of its bound range from the bound
AT_BOUND = 0.005
#: most points a hydrograph series carries to the page (longer ones are bin means)
MAX_POINTS = 2000


def histogram_edges(low: Any, high: Any, bins: int = HIST_BINS) -> np.ndarray:
    """Bin edges ``[P, bins + 1]`` per parameter from bounds ``low``, ``high`` (``[P]`` or
    ``[N, P]``; the lowest lower and the highest upper bound of each parameter)."""
    lo = np.asarray(torch.as_tensor(low).detach().cpu(), np.float64)
    hi = np.asarray(torch.as_tensor(high).detach().cpu(), np.float64)
    if lo.ndim == 2:
        lo, hi = lo.min(0), hi.max(0)
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError(f"bounds must be [P] or [N, P], got {lo.shape} and {hi.shape}")
    hi = np.where(hi > lo, hi, lo + 1.0)  # a fixed parameter still gets a bin
    return np.linspace(lo, hi, int(bins) + 1, axis=-1)


def parameter_counts(values: Any, low: Any, high: Any, edges: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Counts of ``values`` ``[n, P]`` in the bins of ``edges`` ``[P, bins + 1]`` (the last
    bin closed; values outside fall in the end bins) and how many lie at a bound: within
    :data:`AT_BOUND` of their range from their own ``low``/``high`` (``[P]`` or ``[n, P]``).

    Returns ``counts`` int64 ``[P, bins]``, ``at_low`` and ``at_high`` int64 ``[P]``: sums
    over workers give the whole network's figures.
    """
    v = np.asarray(torch.as_tensor(values).detach().cpu(), np.float64)
    lo = np.broadcast_to(np.asarray(torch.as_tensor(low).detach().cpu(), np.float64), v.shape)
    hi = np.broadcast_to(np.asarray(torch.as_tensor(high).detach().cpu(), np.float64), v.shape)
    p, bins = edges.shape[0], edges.shape[1] - 1
    counts = np.zeros((p, bins), np.int64)
    for j in range(p):
        k = np.searchsorted(edges[j], v[:, j], side="right") - 1
        counts[j] = np.bincount(np.clip(k, 0, bins - 1), minlength=bins)
    tol = AT_BOUND * (hi - lo)
    return {"counts": counts, "at_low": (v <= lo + tol).sum(0).astype(np.int64),
            "at_high": (v >= hi - tol).sum(0).astype(np.int64)}


def reduce_series(values: Any, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a series ``[T]`` with at most ``max_points`` points: the series
    itself, or the means of consecutive blocks of steps (NaN where a block has no finite
    value) at the blocks' mean step."""
    y = np.asarray(values, np.float64).ravel()
    t = np.arange(y.size, dtype=np.float64)
    if y.size <= max_points:
        return t, y
    block = -(-y.size // max_points)
    pad = -y.size % block
    yy = np.concatenate([y, np.full(pad, np.nan)]).reshape(-1, block)
    tt = np.concatenate([t, np.full(pad, np.nan)]).reshape(-1, block)
    ok = np.isfinite(yy)
    n = ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ym = np.where(n > 0, np.where(ok, yy, 0.0).sum(1) / n, np.nan)
    return np.nanmean(tt, 1), ym

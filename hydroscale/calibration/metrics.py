r"""Skill scores of simulated against observed discharge, along the last (time) axis.

.. math:: \mathrm{NSE} = 1 - \frac{\sum_t (s_t - o_t)^2}{\sum_t (o_t - \bar o)^2},\qquad
          \mathrm{KGE} = 1 - \sqrt{(r - 1)^2 + (\alpha - 1)^2 + (\beta - 1)^2}

with :math:`r` the Pearson correlation, :math:`\alpha = \sigma_s / \sigma_o` and
:math:`\beta = \mu_s / \mu_o` (Gupta et al. 2009).  Inputs are numpy arrays or torch tensors
``[..., T]`` (torch results keep gradients); time steps where the observation is NaN are
ignored.  A series with zero observed variance gives NaN NSE (``-inf`` is not useful).

Over a short window most observed (or reference) series barely move, and NSE, which divides
by their variance, then measures rounding, not skill: :func:`score` gives NSE only where the
reference :func:`varies`, and the bias and volume error everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["bias", "kge", "nse", "score", "varies", "volume_error"]


def _prepare(sim: Any, obs: Any) -> tuple[Any, Any, Any, Any]:
    if isinstance(sim, torch.Tensor) or isinstance(obs, torch.Tensor):
        s = torch.as_tensor(sim)
        o = torch.as_tensor(obs, dtype=s.dtype, device=s.device)
        s, o = torch.broadcast_tensors(s, o)
        w = (~torch.isnan(o)).to(s.dtype)
        return torch, torch.where(w > 0, s, 0.0), torch.nan_to_num(o, nan=0.0), w
    s, o = np.broadcast_arrays(np.asarray(sim, np.float64), np.asarray(obs, np.float64))
    w = (~np.isnan(o)).astype(np.float64)
    return np, np.where(w > 0, s, 0.0), np.nan_to_num(o, nan=0.0), w


def _mean(xp: Any, x: Any, w: Any) -> Any:
    return (x * w).sum(-1) / w.sum(-1)


def nse(sim: Any, obs: Any) -> Any:
    """Nash-Sutcliffe efficiency ``[...]`` of ``sim`` vs ``obs`` ``[..., T]`` (1 is perfect)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nse(*_prepare(sim, obs))


def _nse(xp: Any, s: Any, o: Any, w: Any) -> Any:
    mo = _mean(xp, o, w)
    den = (((o - mo[..., None]) ** 2) * w).sum(-1)
    num = (((s - o) ** 2) * w).sum(-1)
    nan = xp.full_like(den, float("nan")) if xp is np else torch.full_like(den, float("nan"))
    return xp.where(den > 0, 1.0 - num / xp.where(den > 0, den, 1.0), nan)


def kge(sim: Any, obs: Any) -> Any:
    """Kling-Gupta efficiency ``[...]`` of ``sim`` vs ``obs`` ``[..., T]`` (1 is perfect).

    NaN where the observations have no variance or zero mean (or no valid step).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return _kge(*_prepare(sim, obs))


def _kge(xp: Any, s: Any, o: Any, w: Any) -> Any:
    ms, mo = _mean(xp, s, w), _mean(xp, o, w)
    ds, do = (s - ms[..., None]) * w, (o - mo[..., None]) * w
    n = w.sum(-1)
    vs, vo = (ds**2).sum(-1) / n, (do**2).sum(-1) / n
    cov = (ds * do).sum(-1) / n
    r = cov / xp.sqrt(vs * vo)
    alpha = xp.sqrt(vs / vo)
    beta = ms / mo
    return 1.0 - xp.sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)


def bias(sim: Any, obs: Any) -> np.ndarray:
    """Mean error ``mean(sim - obs)`` ``[...]`` (the units of the series, e.g. m³/s) over the
    steps where ``obs`` is not NaN; NaN where there is none.  numpy in, numpy out."""
    s, o = np.broadcast_arrays(np.asarray(sim, np.float64), np.asarray(obs, np.float64))
    w = np.isfinite(o)
    n = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(w, s - o, 0.0).sum(-1) / n, np.nan)


def volume_error(sim: Any, obs: Any) -> np.ndarray:
    """Relative volume error ``Σ sim / Σ obs - 1`` ``[...]`` (dimensionless; 0.1 = 10 % too
    much water) over the steps where ``obs`` is not NaN; NaN where ``Σ obs`` is 0."""
    s, o = np.broadcast_arrays(np.asarray(sim, np.float64), np.asarray(obs, np.float64))
    w = np.isfinite(o)
    vs, vo = np.where(w, s, 0.0).sum(-1), np.where(w, o, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(vo != 0, vs / np.where(vo != 0, vo, 1.0) - 1.0, np.nan)


def varies(obs: Any, rel: float = 0.01, floor: float = 1e-3) -> np.ndarray:
    """Whether each series ``[..., T]`` varies enough for NSE to mean something: its range
    over the non-NaN steps exceeds ``rel`` times its mean absolute value and ``floor`` (in
    the series' units, m³/s: float32 rounding of a constant flow is not variation).  Bool
    ``[...]``; False for a series with fewer than 2 valid steps."""
    o = np.asarray(obs, np.float64)
    w = np.isfinite(o)
    n = w.sum(-1)
    with np.errstate(invalid="ignore"):
        hi = np.where(w, o, -np.inf).max(-1)
        lo = np.where(w, o, np.inf).min(-1)
        level = np.where(n > 0, np.abs(np.where(w, o, 0.0)).sum(-1) / np.maximum(n, 1), 0.0)
        rng = np.where(n >= 2, hi - lo, 0.0)
    return (n >= 2) & (rng > np.maximum(rel * level, floor))


def score(sim: Any, obs: Any, rel: float = 0.01, floor: float = 1e-3) -> dict[str, np.ndarray]:
    """Scores of ``sim`` against ``obs`` ``[..., T]`` that mean something on a short window:
    ``varies`` (:func:`varies`), ``nse`` (NaN where the reference does not vary),
    ``bias`` (m³/s), ``volume_error`` (relative) and ``steps`` (valid steps), each ``[...]``.
    """
    v = varies(obs, rel, floor)
    o = np.asarray(obs, np.float64)
    return {"varies": v, "nse": np.where(v, np.asarray(nse(np.asarray(sim, np.float64), o)),
                                         np.nan),
            "bias": bias(sim, obs), "volume_error": volume_error(sim, obs),
            "steps": np.isfinite(o).sum(-1)}

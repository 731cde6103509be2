"""The kernel window's exactness contract (DESIGN §1, "Exactness"; §3, "Exactness on every
path"): a window that leaves more than ``window_tolerance`` of some path's response out is an
error, raised before a run starts, naming the clusters (and their outlet reaches) at fault
and how to fix it.

A window at least as long as the routed series is exact whatever the kernels' tails: taps
beyond the run's length never act (an input at step ``t`` reaches outputs up to step
``T - 1 < t + K``).  So the check takes the run's length when it is known.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WindowTruncationError", "check_reach_truncation", "check_truncation",
           "cluster_outlets"]


class WindowTruncationError(ValueError):
    """A kernel window cuts off more of a path's response than the tolerance allows."""


def cluster_outlets(clusters: Any, cluster_ids: np.ndarray) -> list[int]:
    """The reach id of the most downstream reach of each cluster of ``cluster_ids`` (a
    :class:`~hydroscale.routing.RivTreeCluster`): its outlet or exit."""
    net = clusters.network
    out = []
    for c in np.asarray(cluster_ids).tolist():
        reaches = clusters.cluster_reaches(int(c))
        down = net.downstream[reaches]
        leaving = reaches[(down < 0) | (clusters.cluster_of[np.maximum(down, 0)] != c)]
        out.append(int(net.ids[leaving[0] if leaving.size else reaches[-1]]))
    return out


def check_truncation(truncated_mass: np.ndarray, *, tolerance: float, window: int,
                     run_steps: int | None = None, clusters: Any = None,
                     what: str = "the routing") -> None:
    """Raise :class:`WindowTruncationError` when a cluster's truncated mass exceeds
    ``tolerance`` and the window (routing steps) is shorter than ``run_steps`` (the length
    of the routed series, None when unknown: any truncation above tolerance counts).

    ``truncated_mass`` ``[C]`` per cluster (NaN for clusters not routed); ``clusters`` (a
    :class:`~hydroscale.routing.RivTreeCluster`) names the offending clusters' outlet reaches.
    """
    m = np.asarray(truncated_mass, np.float64)
    if run_steps is not None and int(window) >= int(run_steps):
        return
    bad = np.flatnonzero(np.nan_to_num(m, nan=0.0) > tolerance)
    if not bad.size:
        return
    bad = bad[np.argsort(-m[bad], kind="stable")]
    shown = bad[:5]
    if clusters is not None:
        names = cluster_outlets(clusters, shown)
        sizes = np.diff(clusters.reach_ptr_cluster[shown], axis=1).ravel()
        where = "; ".join(f"cluster {int(c)} (outlet reach id {r}, {int(s)} reaches): "
                          f"{m[c]:.3g}" for c, r, s in zip(shown, names, sizes))
    else:
        where = "; ".join(f"cluster {int(c)}: {m[c]:.3g}" for c in shown)
    more = f" and {bad.size - shown.size} more" if bad.size > shown.size else ""
    run = f" of a {int(run_steps)}-step run" if run_steps is not None else ""
    raise WindowTruncationError(
        f"{what}: a kernel window of {int(window)} steps{run} cuts off more than "
        f"window_tolerance = {tolerance:.3g} of the in-cluster path responses (truncated mass "
        f"{where}{more}). The result would not be exact. Fix: window='auto' (the window is "
        f"fitted to the partition), a longer window, or clusters with less travel time "
        f"(partition.max_travel_time, or fewer reaches per cluster: max_reaches)."
    )


def check_reach_truncation(path_mass: np.ndarray, ids: np.ndarray, *, tolerance: float,
                           window: int, run_steps: int | None = None,
                           what: str = "the routing") -> None:
    """As :func:`check_truncation`, for engines that truncate every reach's kernel: raise
    when a path's truncated mass ``path_mass`` ``[N]`` (the path ending at each reach, see
    :func:`~hydroscale.routing.levelwise.path_truncation`) exceeds ``tolerance``."""
    if run_steps is not None and int(window) >= int(run_steps):
        return
    m = np.asarray(path_mass, np.float64)
    bad = np.flatnonzero(m > tolerance)
    if not bad.size:
        return
    bad = bad[np.argsort(-m[bad], kind="stable")]
    where = ", ".join(f"{int(ids[i])}: {m[i]:.3g}" for i in bad[:5])
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    run = f" of a {int(run_steps)}-step run" if run_steps is not None else ""
    raise WindowTruncationError(
        f"{what}: a kernel window of {int(window)} steps{run} cuts off more than "
        f"window_tolerance = {tolerance:.3g} of the response of the paths ending at reach "
        f"ids {where}{more}. The result would not be exact. Fix: window='auto' or a longer "
        "window.")

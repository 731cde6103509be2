"""Validation of river-network topology: every check is vectorised and names offending ids."""

from __future__ import annotations

import numpy as np

from ._format import format_ids

__all__ = ["NetworkError", "check_ids", "repeated", "resolve_downstream"]


class NetworkError(ValueError):
    """A river network that breaks the contract of DESIGN §1 (in-tree forest, unique ids)."""


def repeated(values: np.ndarray) -> np.ndarray:
    """The values that occur more than once (sorted, each once)."""
    srt = np.sort(np.asarray(values))
    return np.unique(srt[1:][srt[1:] == srt[:-1]])


def check_ids(ids: np.ndarray) -> np.ndarray:
    """Return ``ids`` as int64 [N]; raise :class:`NetworkError` if empty or duplicated."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise NetworkError(f"reach ids must be a 1-D array, got shape {ids.shape}")
    if ids.size == 0:
        raise NetworkError("the network is empty: give at least one reach id")
    if not np.issubdtype(ids.dtype, np.integer):
        if np.issubdtype(ids.dtype, np.floating) and np.all(np.mod(ids, 1) == 0):
            ids = ids.astype(np.int64)
        else:
            raise NetworkError(f"reach ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    dup = repeated(ids)
    if dup.size:
        raise NetworkError(
            f"{dup.size} reach id(s) are listed more than once: {format_ids(dup)}; "
            "each reach must appear exactly once"
        )
    return ids


def resolve_downstream(
    ids: np.ndarray, downstream_ids: np.ndarray, outlet_values: tuple[int, ...] = (0,)
) -> np.ndarray:
    """Map downstream ids to downstream indices (-1 at outlets).

    ``downstream_ids`` entries equal to one of ``outlet_values`` or negative mark outlets;
    any other id that is not in ``ids`` is an error naming the reaches that point to it.
    """
    downstream_ids = np.asarray(downstream_ids)
    if downstream_ids.shape != ids.shape:
        raise NetworkError(
            f"downstream ids must have the shape of reach ids {ids.shape}, "
            f"got {downstream_ids.shape}"
        )
    downstream_ids = downstream_ids.astype(np.int64, copy=False)
    is_outlet = (downstream_ids < 0) | np.isin(downstream_ids, np.asarray(outlet_values))
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, downstream_ids)
    pos = np.minimum(pos, ids.size - 1)
    found = sorted_ids[pos] == downstream_ids
    missing = ~found & ~is_outlet
    if missing.any():
        bad = np.flatnonzero(missing)
        raise NetworkError(
            f"{bad.size} reach(es) point to downstream ids that are not in the network: "
            f"reaches {format_ids(ids[bad])} -> downstream {format_ids(downstream_ids[bad])}; "
            f"add those reaches, or mark outlets: a downstream id counts as an outlet when it "
            f"is negative (-1, -9999, ...) or one of outlet_values={tuple(outlet_values)} "
            "(pass e.g. outlet_values=(0, 9999) to add other markers); a reach whose "
            "downstream reach lies outside a subset must be set to one of them (the readers "
            "of NWM RouteLink and mizuRoute subsets do so and list them)"
        )
    down = np.where(is_outlet, -1, order[pos]).astype(np.int64)
    return down

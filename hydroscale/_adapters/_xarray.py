"""The one xarray adapter (STYLE §8): labelled data in, labelled data out.

:func:`xarray_adapter` wraps an array function ``fn(network, data, ...)`` so that a
``DataArray`` ``data`` is aligned to the network by its ``reach`` coordinate, laid out as
``[batch, reach, time]`` and unwrapped (its ``.data`` may be numpy, dask or cupy), then the
result is put back with the input's dims order, reach order, coordinates, attributes and name.
The wrapped function's docstring is the only one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ..network import RiverNetwork, format_ids
from ._arrays import is_dataarray

__all__ = ["REACH", "TIME", "reach_alignment", "xarray_adapter"]

REACH = "reach"
TIME = "time"

F = TypeVar("F", bound=Callable[..., Any])


def reach_alignment(network: RiverNetwork, ids: Any, name: str) -> np.ndarray | None:
    """Positions of ``ids`` (the data's reach labels) that put the data in network order.

    Returns ``None`` when ``ids`` already equal ``network.ids``; otherwise ``order`` with
    ``ids[order] == network.ids``.  Duplicated, unknown or missing ids are a ``ValueError``
    naming them.
    """
    ids = np.asarray(ids)
    if ids.shape == network.ids.shape and np.array_equal(ids, network.ids):
        return None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: the {REACH!r} coordinate must hold the integer reach ids of the network, "
            f"got dtype {ids.dtype} and shape {ids.shape}"
        )
    ids = ids.astype(np.int64, copy=False)
    uniq, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{name}: reach ids listed more than once: {format_ids(uniq[counts > 1])}")
    unknown = np.setdiff1d(uniq, network.ids, assume_unique=True)
    if unknown.size:
        raise ValueError(
            f"{name}: reach ids not in the network: {format_ids(unknown)}; drop them with "
            f".sel({REACH}=network.ids) or build the network with them"
        )
    missing = np.setdiff1d(network.ids, uniq, assume_unique=True)
    if missing.size:
        raise ValueError(
            f"{name} lacks {missing.size} reach(es) of the network: ids {format_ids(missing)}; "
            f"add them (e.g. .reindex({REACH}=network.ids, fill_value=0)) or use "
            "network.subnetwork(...)"
        )
    return np.argsort(network.index_of(ids), kind="stable")


def _unwrap(
    network: RiverNetwork, data: Any, name: str, time_required: bool
) -> tuple[Any, Callable[[Any], Any]]:
    dims = tuple(data.dims)
    if REACH not in dims:
        raise ValueError(f"{name} must have a {REACH!r} dimension, got dims {dims}")
    if time_required and TIME not in dims:
        raise ValueError(f"{name} must have a {TIME!r} dimension, got dims {dims}")
    batch = [d for d in dims if d not in (REACH, TIME)]
    if len(batch) > 1:
        raise ValueError(
            f"{name} may have one batch dimension besides {REACH!r} and {TIME!r} (e.g. 'member'), "
            f"got dims {dims}; combine them first, e.g. .stack(batch={batch})"
        )
    if REACH not in data.coords:
        raise ValueError(
            f"{name} has no {REACH!r} coordinate; label the rows with the network's reach ids, "
            f"e.g. .assign_coords({REACH}=network.ids)"
        )
    order = reach_alignment(network, data[REACH].values, name)
    canon = (*batch, REACH, *((TIME,) if TIME in dims else ()))
    x = data.transpose(*canon)
    if order is not None:
        x = x.isel({REACH: order})
    add_time = bool(batch) and TIME not in dims
    arr = x.data[..., None] if add_time else x.data

    def restore(out: Any) -> Any:
        res = x.copy(deep=False, data=out[..., 0] if add_time else out)
        if order is not None:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
            res = res.isel({REACH: inverse})
        return res.transpose(*dims)

    return arr, restore


def xarray_adapter(name: str, *, time_required: bool) -> Callable[[F], F]:
    """Decorate ``fn(network, data, ...)`` to accept a ``DataArray`` ``data``.

    ``name`` is the argument's name in error messages; ``time_required`` demands a ``time``
    dimension.  Dims other than ``reach``/``time`` (at most one) become the batch axis.
    Without ``time``, a batch axis gets a trailing length-1 time axis for the call, so the
    wrapped function always sees ``[N]``, ``[N, T]`` or ``[B, N, T]``.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(network: RiverNetwork, data: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_dataarray(data):
                return fn(network, data, *args, **kwargs)
            arr, restore = _unwrap(network, data, name, time_required)
            return restore(fn(network, arr, *args, **kwargs))

        return wrapper  # type: ignore[return-value]

    return decorate

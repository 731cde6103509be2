"""The one xarray adapter (STYLE §8): labelled data in, labelled data out.

:func:`xarray_adapter` wraps an array function ``fn(network, data, ...)`` so that a
``DataArray`` ``data`` is aligned to the network by its ``reach`` coordinate, laid out as
``[batch, reach, time]`` and unwrapped (its ``.data`` may be numpy, dask or cupy), then the
result is put back with the input's dims order, reach order and coordinates (and, unless the
function declares its own result name and attributes, the input's attributes and name).
The wrapped function's docstring is the only one.

The reach dimension may carry the name other tools give it (:data:`REACH_DIMS`: NWM's
``feature_id``, RAPID's ``rivid``, NHDPlus ``COMID``, mizuRoute's ``seg_id``); the result
keeps the input's name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ..network import RiverNetwork, format_ids
from ._arrays import is_dataarray

__all__ = ["REACH", "REACH_DIMS", "TIME", "reach_alignment", "reach_dim", "xarray_adapter"]

REACH = "reach"
TIME = "time"
#: names of the reach dimension accepted on input: hydroscale's, NWM's, RAPID's, NHDPlus's,
#: mizuRoute's
REACH_DIMS = (REACH, "feature_id", "rivid", "COMID", "seg_id")


def reach_dim(dims: Any, name: str, *, required: bool = True) -> str | None:
    """The reach dimension among ``dims`` (one of :data:`REACH_DIMS`); None when there is
    none and not ``required``.  Two of them at once are a ``ValueError``."""
    found = [d for d in dims if d in REACH_DIMS]
    if len(found) > 1:
        raise ValueError(f"{name} has several reach dimensions {found} (dims {tuple(dims)}); "
                         "keep one, e.g. .rename / .isel the others away")
    if not found:
        if required:
            raise ValueError(f"{name} must have a reach dimension (one of {list(REACH_DIMS)}), "
                             f"got dims {tuple(dims)}")
        return None
    return found[0]

F = TypeVar("F", bound=Callable[..., Any])


def reach_alignment(network: RiverNetwork, ids: Any, name: str,
                    dim: str = REACH) -> np.ndarray | None:
    """Positions of ``ids`` (the data's reach labels) that put the data in network order.

    Returns ``None`` when ``ids`` already equal ``network.ids``; otherwise ``order`` with
    ``ids[order] == network.ids``.  Duplicated, unknown or missing ids are a ``ValueError``
    naming them; ``dim`` is the reach dimension's name in the data (for messages).
    """
    ids = np.asarray(ids)
    if ids.shape == network.ids.shape and np.array_equal(ids, network.ids):
        return None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: the {dim!r} coordinate must hold the integer reach ids of the network, "
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
            f".sel({dim}=network.ids) or build the network with them"
        )
    missing = np.setdiff1d(network.ids, uniq, assume_unique=True)
    if missing.size:
        raise ValueError(
            f"{name} lacks {missing.size} reach(es) of the network: ids {format_ids(missing)}; "
            f"add them (e.g. .reindex({dim}=network.ids, fill_value=0)) or use "
            "network.subnetwork(...)"
        )
    return np.argsort(network.index_of(ids), kind="stable")


def _unwrap(
    network: RiverNetwork, data: Any, name: str, time_required: bool,
    result: tuple[str, dict[str, Any]] | None = None,
) -> tuple[Any, Callable[[Any], Any]]:
    dims = tuple(data.dims)
    reach = reach_dim(dims, name)
    if time_required and TIME not in dims:
        raise ValueError(f"{name} must have a {TIME!r} dimension, got dims {dims}")
    batch = [d for d in dims if d not in (reach, TIME)]
    if len(batch) > 1:
        raise ValueError(
            f"{name} may have one batch dimension besides {reach!r} and {TIME!r} (e.g. 'member'), "
            f"got dims {dims}; combine them first, e.g. .stack(batch={batch})"
        )
    if reach not in data.coords:
        raise ValueError(
            f"{name} has no {reach!r} coordinate; label the rows with the network's reach ids, "
            f"e.g. .assign_coords({reach}=network.ids)"
        )
    order = reach_alignment(network, data[reach].values, name, reach)
    canon = (*batch, reach, *((TIME,) if TIME in dims else ()))
    x = data.transpose(*canon)
    if order is not None:
        x = x.isel({reach: order})
    add_time = bool(batch) and TIME not in dims
    arr = x.data[..., None] if add_time else x.data

    def restore(out: Any) -> Any:
        res = x.copy(deep=False, data=out[..., 0] if add_time else out)
        if result is not None:  # the result is another quantity: its own name and attrs
            res.name, res.attrs = result[0], dict(result[1])
        if order is not None:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
            res = res.isel({reach: inverse})
        return res.transpose(*dims)

    return arr, restore


def xarray_adapter(name: str, *, time_required: bool,
                   result: tuple[str, dict[str, Any]] | None = None) -> Callable[[F], F]:
    """Decorate ``fn(network, data, ...)`` to accept a ``DataArray`` ``data``.

    ``name`` is the argument's name in error messages; ``time_required`` demands a ``time``
    dimension; ``result`` = ``(name, attrs)`` labels the result as another quantity (e.g.
    discharge from runoff) instead of keeping the input's name and attributes.  Dims other
    than the reach dimension and ``time`` (at most one) become the batch axis.
    Without ``time``, a batch axis gets a trailing length-1 time axis for the call, so the
    wrapped function always sees ``[N]``, ``[N, T]`` or ``[B, N, T]``.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(network: RiverNetwork, data: Any, *args: Any, **kwargs: Any) -> Any:
            if not is_dataarray(data):
                return fn(network, data, *args, **kwargs)
            arr, restore = _unwrap(network, data, name, time_required, result)
            out = fn(network, arr, *args, **kwargs)
            if isinstance(out, tuple):  # (result, extra): e.g. discharge and a final state
                return (restore(out[0]), *out[1:])
            return restore(out)

        return wrapper  # type: ignore[return-value]

    return decorate

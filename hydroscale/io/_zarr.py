"""The Zarr v3 store format shared by forcing stores (in) and output stores (out).

Layout of a store (a Zarr v3 group)::

    <variable>  float32 [N, T]  chunks (reach_chunk, time_chunk), dims ("reach", "time")
    reach       int64   [N]     reach ids, in the store's row order (e.g. clusters contiguous)
    time        int64   [T]     seconds since 1970-01-01 UTC (interval starts)
    attrs: hydroscale_store ("forcing" | "output"), variable, units, time_units,
           interval_s, provenance (source, created, hydroscale version, reach order), ...

Output stores also carry CF-1.8 metadata (:func:`cf_time_attrs`, the discharge's
``units``/``standard_name``/``long_name``/``cell_methods``, global ``Conventions``), so that
``xarray.open_zarr`` decodes them as they are; see :mod:`hydroscale.io._output`.

Forcing stores are written by :func:`~hydroscale.io.ingest` and opened against a network
by :func:`~hydroscale.io.open_forcing`; output stores are created, written and completed by
:mod:`hydroscale.io._output`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..network import RiverNetwork, format_ids
from ._common import IOFormatError

__all__ = ["CF_TIME_UNITS", "EPOCH", "TIME_UNITS", "cf_time_attrs", "check_chunks",
           "check_regular", "compressors", "interval_of", "match_rows", "open_store",
           "to_seconds", "version"]

TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
#: the same epoch as CF writes it on the ``time`` array (UTC; decoded by xarray/cftime)
CF_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


def cf_time_attrs(meaning: str) -> dict[str, str]:
    """CF attributes of a ``time`` array of int64 seconds since 1970-01-01 UTC."""
    return {"units": CF_TIME_UNITS, "calendar": "proleptic_gregorian", "standard_name": "time",
            "long_name": meaning, "axis": "T"}


def compressors() -> list[Any]:
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


def version() -> str:
    try:
        from importlib.metadata import version

        return version("hydroscale")
    except Exception:  # noqa: BLE001 - an uninstalled checkout has no metadata
        return "unknown"


def to_seconds(t: np.ndarray) -> np.ndarray:
    return (np.asarray(t).astype("datetime64[s]") - EPOCH).astype(np.int64)


# ---------------------------------------------------------------- forcing stores
def interval_of(t: np.ndarray) -> float | None:
    if t.size < 2:
        return None
    d = np.unique(np.diff(t.astype("datetime64[s]")).astype(np.int64))
    return float(d[0]) if d.size == 1 else None


def check_regular(t: np.ndarray, where: Any, field: str = "time") -> None:
    """Raise unless the times ``t`` (datetime64, increasing) are evenly spaced: routing steps
    are one interval each, so a gap (a missing record) would shift everything after it."""
    if np.asarray(t).size < 3:
        return
    ts = np.asarray(t).astype("datetime64[s]")
    d = np.diff(ts).astype(np.int64)
    vals, counts = np.unique(d, return_counts=True)
    if vals.size == 1:
        return
    step = int(vals[np.argmax(counts)])  # the usual step
    bad = np.flatnonzero(d != step)
    i = int(bad[0])
    raise IOFormatError(
        where, field,
        f"the time axis is not regular: {ts[i]} is followed by {ts[i + 1]} ({int(d[i])} s "
        f"where the step is {step} s; {bad.size} irregular step(s) in all); fill the "
        "missing records (or resample to a regular step) before routing"
    )


def open_store(store: Any, kind: str) -> tuple[zarr.Group, zarr.Array]:
    try:
        root = zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise IOFormatError(store, None, f"not a Zarr group: {err}") from None
    if root.attrs.get("hydroscale_store") != kind:
        raise IOFormatError(store, "hydroscale_store",
                            f"not a hydroscale {kind} store (attrs: {dict(root.attrs)})")
    name = root.attrs.get("variable")
    kinds = {name: "f", "reach": "iu", "time": "iu"}
    for need in (name, "reach", "time"):
        if need not in root:
            raise IOFormatError(store, need, "missing array")
        # checked before any read: an object array (a Zarr v2 pickle codec) is never decoded
        dt = np.dtype(root[need].dtype)
        if dt.kind not in kinds[need]:
            want = "floating point" if kinds[need] == "f" else "integer"
            raise IOFormatError(store, need, f"dtype {dt} is not {want}; this is not a store "
                                "written by hydroscale (re-ingest the source)")
    return root, root[name]


def check_chunks(arr: zarr.Array, store: Any) -> None:
    """Raise if a chunk of ``arr`` is missing from the store.

    Zarr reads a missing chunk as its fill value; hydroscale writes every chunk of a forcing
    store (its fill value is NaN, never a valid value), so a missing one means a damaged or
    partly copied store, not data.
    """
    have, want = int(arr.nchunks_initialized), int(arr.nchunks)
    if have == want:
        return
    from zarr.core.sync import sync

    grid = [-(-s // c) for s, c in zip(arr.shape, arr.chunks)]
    missing: list[tuple[int, ...]] = []
    for coords in np.ndindex(*grid):
        key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
        if not sync(arr.store_path.store.exists(key)):
            missing.append(tuple(int(c) for c in coords))
            if len(missing) == 3:
                break
    where = ", ".join(
        f"chunk {c} (rows {c[0] * arr.chunks[0]}:{min((c[0] + 1) * arr.chunks[0], arr.shape[0])}"
        f", steps {c[1] * arr.chunks[1]}:{min((c[1] + 1) * arr.chunks[1], arr.shape[1])})"
        for c in missing)
    raise IOFormatError(
        store, arr.basename,
        f"{want - have} of {want} chunks are missing, e.g. {where}: reading them would give "
        "fill values, not data; the store is damaged or partly copied: copy it again or "
        "re-ingest the source"
    )


def match_rows(ids: np.ndarray, network: RiverNetwork, store: Any) -> np.ndarray:
    missing = np.setdiff1d(network.ids, ids)
    extra = np.setdiff1d(ids, network.ids)
    if missing.size or extra.size:
        raise IOFormatError(
            store, "reach",
            f"reach ids do not match the network: missing from the store {format_ids(missing)}; "
            f"not in the network {format_ids(extra)}; re-ingest with this network",
        )
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], network.ids)]

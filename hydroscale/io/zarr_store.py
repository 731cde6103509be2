"""Zarr v3 stores of ``(reach, time)`` forcings (in) and discharge (out).

Layout of a store (a Zarr v3 group)::

    <variable>  float32 [N, T]  chunks (reach_chunk, time_chunk), dims ("reach", "time")
    reach       int64   [N]     reach ids, in the store's row order (e.g. clusters contiguous)
    time        int64   [T]     seconds since 1970-01-01 UTC (interval starts)
    attrs: hydroscale_store ("forcing" | "output"), variable, units, time_units,
           interval_s, provenance (source, created, hydroscale version, reach order), ...

* :func:`ingest` turns CHRTOUT slices, RAPID inflow, a NetCDF ``(reach, time)`` variable, a
  wide CSV or an ``xarray.DataArray`` into a forcing store; :func:`ingest_main` is the
  ``hydroscale ingest`` entry point.
* :func:`open_forcing` opens it against a network: ids must match exactly (clear error).
* :func:`create_output_store` / :func:`write_block` / :func:`open_output`: the output store
  written block by block (region writes) by the distributed runtime.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ..network import RiverNetwork
from ._common import FLOW_UNITS, IOFormatError, _some, check_times, check_units

__all__ = [
    "ForcingStore",
    "create_output_store",
    "ingest",
    "ingest_main",
    "load_source",
    "open_forcing",
    "open_output",
    "write_block",
]

logger = logging.getLogger(__name__)

TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")
_REACH_DIMS = ("reach", "feature_id", "rivid", "link", "station")


def _compressors() -> list[Any]:
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hydroscale")
    except Exception:  # noqa: BLE001 - an uninstalled checkout has no metadata
        return "unknown"


def _to_seconds(t: np.ndarray) -> np.ndarray:
    return (np.asarray(t).astype("datetime64[s]") - _EPOCH).astype(np.int64)


# ---------------------------------------------------------------- sources
def _read_csv(path: str) -> xr.DataArray:
    """Wide CSV: header ``time,<id>,<id>,...``; one row per time (ISO 8601), values m³/s."""
    import pandas as pd

    df = pd.read_csv(path)
    if df.columns[0].strip().lower() != "time":
        raise IOFormatError(path, "time", "the first column must be 'time' (ISO 8601)")
    try:
        ids = np.array([int(c) for c in df.columns[1:]], np.int64)
    except ValueError:
        msg = "columns after 'time' must be integer reach ids"
        raise IOFormatError(path, "header", msg) from None
    t = pd.to_datetime(df.iloc[:, 0]).values.astype("datetime64[ns]")
    check_times(t, path, "time")
    return xr.DataArray(df.iloc[:, 1:].to_numpy(np.float64).T, {"reach": ids, "time": t},
                        ("reach", "time"), attrs={"units": "m3 s-1", "source": path})


def _read_netcdf_var(path: str, variable: str | None) -> xr.DataArray:
    with xr.open_dataset(path) as ds:
        if "m3_riv" in ds.variables or "Qext" in ds.variables:
            from .rapid import read_rapid_inflow

            return read_rapid_inflow(path)
        if variable is None:
            cands = [v for v in ds.data_vars if ds[v].ndim == 2 and "time" in ds[v].dims]
            if len(cands) != 1:
                raise IOFormatError(path, None, f"name the variable to ingest among {cands}")
            variable = cands[0]
        if variable not in ds.variables:
            raise IOFormatError(path, variable, f"missing variable; the file has {list(ds)}")
        da = ds[variable].load()
    dim = next((d for d in da.dims if d in _REACH_DIMS), None)
    if dim is None or "time" not in da.dims or da.ndim != 2:
        raise IOFormatError(path, variable, f"needs dims (reach-like, time), got {da.dims}")
    check_units(da.attrs.get("units"), FLOW_UNITS, path, variable, "m3 s-1")
    ids = da[dim].values if dim in da.coords else None
    if ids is None:
        for name in _REACH_DIMS:
            if name in ds.variables and ds[name].dims == (dim,):
                ids = ds[name].values
        if ids is None:
            raise IOFormatError(path, dim, "no reach id coordinate along the reach dimension")
    check_times(da["time"].values, path, "time")
    da = da.transpose(dim, "time")
    return xr.DataArray(da.values, {"reach": np.asarray(ids, np.int64),
                                    "time": da["time"].values}, ("reach", "time"),
                        attrs={"units": "m3 s-1", "source": path})


def load_source(source: Any, *, variable: str | None = None) -> xr.DataArray:
    """A ``(reach, time)`` DataArray (m³/s) from a supported source.

    ``source`` is an ``xarray.DataArray`` ``(reach, time)``; a directory, glob or list of NWM
    CHRTOUT files (``variable`` default ``q_lateral``); a RAPID inflow NetCDF (``m3_riv`` or
    ``Qext``); a NetCDF with a ``(reach|feature_id|rivid, time)`` variable; or a wide CSV
    (``time,<id>,<id>,...``).
    """
    if isinstance(source, xr.DataArray):
        if source.dims != ("reach", "time"):
            raise ValueError(f"a DataArray source must have dims (reach, time), got {source.dims}")
        check_times(source["time"].values, "<DataArray>", "time")
        return source
    if _is_chrtout(source):
        from .nwm import read_chrtout

        var = variable or "q_lateral"
        return read_chrtout(source, (var,))[var]
    p = os.fspath(source)
    if p.endswith(".csv"):
        return _read_csv(p)
    return _read_netcdf_var(p, variable)


# ---------------------------------------------------------------- forcing stores
def _interval(t: np.ndarray) -> float | None:
    if t.size < 2:
        return None
    d = np.unique(np.diff(t.astype("datetime64[s]")).astype(np.int64))
    return float(d[0]) if d.size == 1 else None


def ingest(
    source: Any,
    store: Any,
    *,
    network: RiverNetwork | None = None,
    reach_order: Any = None,
    variable: str | None = None,
    name: str = "runoff",
    chunks: tuple[int, int] = (4096, 512),
    time_is_end: bool = False,
    overwrite: bool = False,
    provenance: dict[str, Any] | None = None,
) -> zarr.Group:
    """Write a forcing source as a ``(reach, time)`` float32 Zarr v3 store.

    Parameters
    ----------
    source : see :func:`load_source`.
    store : path or zarr store.
    network : if given, every network reach must be in the source (extra source reaches are
        dropped, with a log line) and rows follow ``reach_order`` or ``network.ids``.
    reach_order : int64 reach ids giving the row order (e.g. reaches sorted by cluster).
    variable : CHRTOUT/NetCDF variable to ingest.
    name : array name in the store.
    chunks : (reach chunk, time chunk).  CHRTOUT files are streamed ``chunks[1]`` files at a
        time (memory ``N x chunks[1]``); other sources are loaded whole.
    time_is_end : the source's times mark interval ends (NWM CHRTOUT valid times): store the
        interval starts (``t - interval``).
    provenance : extra attributes recorded under ``provenance``.

    Returns
    -------
    The zarr group.
    """
    if reach_order is None and network is not None:
        reach_order = network.ids
    order_ids = None if reach_order is None else np.asarray(reach_order, np.int64)
    if order_ids is not None and network is not None:
        extra = np.setdiff1d(order_ids, network.ids)
        if extra.size or order_ids.size != network.n_reaches:
            raise ValueError(
                f"reach_order must be a permutation of the network's ids; not in the "
                f"network: {_some(extra)}, {order_ids.size} ids for {network.n_reaches}"
            )
    root = None
    if _is_chrtout(source):
        root, ids, t, n_files = _stream_chrtout(source, store, variable or "q_lateral", name,
                                                order_ids, chunks, overwrite)
        first = os.fspath(source[0] if isinstance(source, (list, tuple)) else source)
        src_name = f"NWM CHRTOUT ({n_files} files from {first})"
        dt = _interval(t)
    else:
        da = load_source(source, variable=variable)
        ids, t = _select_rows(da, order_ids, source), da["time"].values
        da = da.sel(reach=ids)
        dt = da.attrs.get("interval_s") or _interval(t)
        root = _create_array(store, name, da.shape, chunks, overwrite)
        root[name][:] = np.asarray(da.values, np.float32)
        src = source if isinstance(source, (str, os.PathLike)) else da.attrs.get("source")
        src_name = os.fspath(src) if isinstance(src, os.PathLike) else str(src or "array")
    t = np.asarray(t).astype("datetime64[ns]")
    if time_is_end:
        if dt is None:
            raise ValueError("time_is_end needs regular times to know the interval")
        t = t - np.timedelta64(int(dt), "s")
    n, steps = ids.size, t.size
    root.create_array("reach", data=ids, chunks=(max(n, 1),), dimension_names=("reach",))
    root.create_array("time", data=_to_seconds(t), chunks=(max(steps, 1),),
                      dimension_names=("time",))
    root.attrs.update({
        "hydroscale_store": "forcing",
        "variable": name,
        "units": "m3 s-1",
        "time_units": TIME_UNITS,
        "time_meaning": "start of each interval; values are interval means",
        "interval_s": dt,
        "provenance": {
            "source": src_name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hydroscale_version": _version(),
            "reach_order": "given" if reach_order is not None else "source",
            **(provenance or {}),
        },
    })
    logger.info("ingested %s -> %s: %d reaches x %d steps", src_name, store, n, steps)
    return root


def _is_chrtout(source: Any) -> bool:
    if isinstance(source, (list, tuple)):
        return all("CHRTOUT" in os.path.basename(os.fspath(p)) for p in source)
    if not isinstance(source, (str, os.PathLike)):
        return False
    p = os.fspath(source)
    return os.path.isdir(p) or any(c in p for c in "*?[") or "CHRTOUT" in os.path.basename(p)


def _create_array(store: Any, name: str, shape: tuple[int, int], chunks: tuple[int, int],
                  overwrite: bool) -> zarr.Group:
    root = zarr.open_group(store, mode="w" if overwrite else "w-")
    n, steps = shape
    root.create_array(
        name, shape=(n, steps), dtype="float32",
        chunks=(min(chunks[0], max(n, 1)), min(chunks[1], max(steps, 1))),
        compressors=_compressors(), fill_value=np.nan, dimension_names=("reach", "time"),
    )
    return root


def _select_rows(da: xr.DataArray, order_ids: np.ndarray | None, source: Any) -> np.ndarray:
    """The store's row ids: ``order_ids`` (all in the source) or the source's own ids."""
    src_ids = da["reach"].values.astype(np.int64)
    where = None if isinstance(source, xr.DataArray) else source
    u, c = np.unique(src_ids, return_counts=True)
    if (c > 1).any():
        raise IOFormatError(where, "reach", f"reach ids listed twice: {_some(u[c > 1])}")
    if order_ids is None:
        return src_ids
    missing = np.setdiff1d(order_ids, src_ids)
    if missing.size:
        raise IOFormatError(where, "reach", f"reaches missing from the source: {_some(missing)}")
    if src_ids.size > order_ids.size:
        logger.info("ingest: %d source reaches not in the order are dropped",
                    src_ids.size - order_ids.size)
    return order_ids


def _stream_chrtout(source: Any, store: Any, variable: str, name: str,
                    order_ids: np.ndarray | None, chunks: tuple[int, int], overwrite: bool):
    """CHRTOUT files -> the store, ``chunks[1]`` files at a time (bounded memory)."""
    from ._common import as_path_list
    from .nwm import iter_chrtout

    files = as_path_list(source, "*CHRTOUT*")
    root = arr = None
    ids = order_ids
    times: list[np.datetime64] = []
    block: list[np.ndarray] = []
    tc = max(1, int(chunks[1]))
    for _, rows, t, values in iter_chrtout(files, (variable,), reach_ids=order_ids):
        if root is None:
            ids = rows
            root = _create_array(store, name, (rows.size, len(files)), chunks, overwrite)
            arr = root[name]
        times.append(t)
        block.append(values[variable])
        if len(block) == tc:
            arr[:, len(times) - tc : len(times)] = np.stack(block, 1)
            block = []
    if block:
        arr[:, len(times) - len(block) : len(times)] = np.stack(block, 1)
    return root, ids, np.array(times), len(files)


@dataclass(frozen=True)
class ForcingStore:
    """An opened forcing store checked against a network.

    ``array`` is the zarr array ``[N, T]`` in store row order; ``ids`` [N] its reach ids;
    ``rows`` [N]: for each ``network.ids[i]``, its row in the store (so
    ``array.get_orthogonal_selection((rows, slice(...)))`` gives network order);
    ``time`` [T] datetime64 interval starts; ``interval_s`` (s); ``attrs`` the group attrs.
    """

    array: zarr.Array
    ids: np.ndarray
    rows: np.ndarray
    time: np.ndarray
    interval_s: float | None
    attrs: dict[str, Any]

    def read(self, reaches: slice = slice(None), times: slice = slice(None)) -> np.ndarray:
        """Float32 block ``[reach-range, time-range]`` in store row order."""
        return self.array[reaches, times]

    def to_xarray(self) -> xr.DataArray:
        """The whole store as a ``(reach, time)`` DataArray in network order (loads it)."""
        vals = self.array.get_orthogonal_selection((self.rows, slice(None)))
        return xr.DataArray(vals, {"reach": self.ids[self.rows], "time": self.time},
                            ("reach", "time"), attrs={"units": self.attrs.get("units")})


def _open(store: Any, kind: str) -> tuple[zarr.Group, zarr.Array]:
    try:
        root = zarr.open_group(store, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise IOFormatError(store, None, f"not a Zarr group: {err}") from None
    if root.attrs.get("hydroscale_store") != kind:
        raise IOFormatError(store, "hydroscale_store",
                            f"not a hydroscale {kind} store (attrs: {dict(root.attrs)})")
    name = root.attrs.get("variable")
    for need in (name, "reach", "time"):
        if need not in root:
            raise IOFormatError(store, need, "missing array")
    return root, root[name]


def _match(ids: np.ndarray, network: RiverNetwork, store: Any) -> np.ndarray:
    missing = np.setdiff1d(network.ids, ids)
    extra = np.setdiff1d(ids, network.ids)
    if missing.size or extra.size:
        raise IOFormatError(
            store, "reach",
            f"reach ids do not match the network: missing from the store {_some(missing)}; "
            f"not in the network {_some(extra)}; re-ingest with this network",
        )
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], network.ids)]


def open_forcing(store: Any, network: RiverNetwork) -> ForcingStore:
    """Open a forcing store made by :func:`ingest`; its ids must be the network's ids."""
    root, arr = _open(store, "forcing")
    check_units(root.attrs.get("units"), FLOW_UNITS, store, "units", "m3 s-1")
    ids = root["reach"][:].astype(np.int64)
    if ids.size != arr.shape[0]:
        raise IOFormatError(store, "reach", f"{ids.size} ids for {arr.shape[0]} rows")
    rows = _match(ids, network, store)
    t = _EPOCH + root["time"][:].astype("timedelta64[s]")
    check_times(t, store, "time")
    return ForcingStore(arr, ids, rows, t.astype("datetime64[ns]"),
                        root.attrs.get("interval_s"), dict(root.attrs))


# ---------------------------------------------------------------- output stores
def create_output_store(
    store: Any,
    reach_ids: Any,
    time: Any,
    *,
    variable: str = "discharge",
    units: str = "m3 s-1",
    chunks: tuple[int, int] = (4096, 512),
    interval_s: float | None = None,
    run: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> zarr.Group:
    """Create an empty ``(reach, time)`` float32 output store (NaN-filled) for region writes.

    ``reach_ids`` [N] in the row order the writers use (e.g. clusters contiguous); ``time``
    [T] datetime64 interval starts; ``run``: run metadata (engine, IRF, parameters source, ...)
    stored under the ``run`` attribute.
    """
    ids = np.asarray(reach_ids, np.int64)
    t = np.asarray(time).astype("datetime64[ns]")
    check_times(t, store, "time")
    if not overwrite and isinstance(store, (str, os.PathLike)) and os.path.exists(store):
        raise FileExistsError(
            f"output store {os.fspath(store)!r} exists and is left untouched; pass "
            "overwrite=True to replace it, or write to another path"
        )
    root = zarr.open_group(store, mode="w" if overwrite else "w-")
    n, steps = ids.size, t.size
    root.create_array(variable, shape=(n, steps), dtype="float32",
                      chunks=(min(chunks[0], max(n, 1)), min(chunks[1], max(steps, 1))),
                      compressors=_compressors(), fill_value=np.nan,
                      dimension_names=("reach", "time"))
    root.create_array("reach", data=ids, chunks=(max(n, 1),), dimension_names=("reach",))
    root.create_array("time", data=_to_seconds(t), chunks=(max(steps, 1),),
                      dimension_names=("time",))
    root.attrs.update({
        "hydroscale_store": "output", "variable": variable, "units": units,
        "time_units": TIME_UNITS, "interval_s": interval_s if interval_s else _interval(t),
        "time_meaning": "start of each interval; values are interval means",
        "run": {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "hydroscale_version": _version(), **(run or {})},
    })
    return root


def write_block(store: Any, reach_start: int, time_start: int, block: Any) -> None:
    """Write ``block`` ``[n_reach, n_time]`` at rows ``reach_start:`` and steps ``time_start:``.

    Writers of disjoint, chunk-aligned regions may run concurrently (different workers).
    """
    root = zarr.open_group(store, mode="r+")
    arr = root[root.attrs["variable"]]
    b = np.asarray(block, np.float32)
    if b.ndim != 2:
        raise ValueError(f"block must be [n_reach, n_time], got {b.shape}")
    r1, t1 = reach_start + b.shape[0], time_start + b.shape[1]
    if reach_start < 0 or time_start < 0 or r1 > arr.shape[0] or t1 > arr.shape[1]:
        raise ValueError(
            f"block [{reach_start}:{r1}, {time_start}:{t1}] is outside the store {arr.shape}"
        )
    arr[reach_start:r1, time_start:t1] = b


def open_output(store: Any, network: RiverNetwork | None = None) -> xr.DataArray:
    """An output store as a ``(reach, time)`` DataArray (network order if given; loads it)."""
    root, arr = _open(store, "output")
    ids = root["reach"][:].astype(np.int64)
    t = (_EPOCH + root["time"][:].astype("timedelta64[s]")).astype("datetime64[ns]")
    rows = np.arange(ids.size) if network is None else _match(ids, network, store)
    vals = arr.get_orthogonal_selection((rows, slice(None)))
    return xr.DataArray(vals, {"reach": ids[rows], "time": t}, ("reach", "time"),
                        name=root.attrs["variable"], attrs=dict(root.attrs))


# ---------------------------------------------------------------- CLI entry
def ingest_main(argv: Sequence[str] | None = None) -> int:
    """``hydroscale ingest SOURCE STORE [--network ...]``: see ``--help``. Returns 0."""
    p = argparse.ArgumentParser(prog="hydroscale ingest", description=(
        "Turn CHRTOUT time slices, a RAPID inflow NetCDF, a (reach, time) NetCDF or a wide "
        "CSV into a (reach, time) Zarr forcing store."))
    p.add_argument("source", help="file, directory or glob")
    p.add_argument("store", help="output Zarr store path")
    p.add_argument("--variable", help="variable to read (CHRTOUT default q_lateral)")
    p.add_argument("--name", default="runoff", help="array name in the store")
    p.add_argument("--routelink", help="NWM RouteLink.nc: rows follow its reaches")
    p.add_argument("--rapid-connect", help="RAPID rapid_connect.csv: rows follow its reaches")
    p.add_argument("--reach-order", help="text file of reach ids, one per line: row order")
    p.add_argument("--chunks", default="4096,512", help="reach,time chunk sizes")
    p.add_argument("--time-is-end", action="store_true",
                   help="source times mark interval ends (NWM CHRTOUT)")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    network = None
    if a.routelink:
        from .nwm import read_routelink

        network = read_routelink(a.routelink)
    elif a.rapid_connect:
        from .rapid import read_rapid_connect

        network = read_rapid_connect(a.rapid_connect)
    order = np.loadtxt(a.reach_order, dtype=np.int64, ndmin=1) if a.reach_order else None
    rc, tc = (int(v) for v in a.chunks.split(","))
    ingest(a.source, a.store, network=network, reach_order=order, variable=a.variable,
           name=a.name, chunks=(rc, tc), time_is_end=a.time_is_end, overwrite=a.overwrite,
           provenance={"command": "hydroscale ingest " + " ".join(argv or [])})
    return 0

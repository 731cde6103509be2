"""Forcing stores: :func:`ingest` writes one from a source (CHRTOUT slices, RAPID inflow, a
NetCDF ``(reach, time)`` variable, a wide CSV or an ``xarray.DataArray``, read with the
reader registry :func:`~hydroscale.io.open_series`; the ``hydroscale ingest`` command calls
it through the ingest workflow), and :func:`open_forcing` opens one against a network (ids
must match exactly; a clear error otherwise).  The store layout is in
:mod:`hydroscale.io._zarr`; forcing *sources* (what runs read) are in
:mod:`hydroscale.io._forcing`, output stores in :mod:`hydroscale.io._output`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..network import RiverNetwork, format_ids
from . import _zarr as fmt
from ._common import FLOW_UNITS, IOFormatError, check_steps, check_times, check_units
from ._readers import guess_engine, open_series

__all__ = ["ForcingStore", "ingest", "open_forcing"]

logger = logging.getLogger(__name__)



def ingest(
    source: Any,
    store: Any,
    *,
    network: RiverNetwork | None = None,
    reach_order: Any = None,
    engine: Any = None,
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
    source : a source :func:`~hydroscale.io.open_series` reads (a DataArray, CHRTOUT files,
        RAPID inflow, a ``(reach, time)`` NetCDF variable, a wide CSV, or what a registered
        series reader takes).
    store : path or zarr store.
    network : if given, every network reach must be in the source (extra source reaches are
        dropped, with a log line) and rows follow ``reach_order`` or ``network.ids``.
    reach_order : int64 reach ids giving the row order (e.g. reaches sorted by cluster).
    engine : the series reader (a name of :func:`~hydroscale.io.list_readers`, or a
        :class:`~hydroscale.io.Reader`); default: the one that recognises ``source``.
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
                f"network: {format_ids(extra)}, {order_ids.size} ids for {network.n_reaches}"
            )
    target = os.fspath(store) if isinstance(store, (str, os.PathLike)) else None
    if target is not None and os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"forcing store {target!r} exists and is left untouched; pass overwrite=True "
            "(--overwrite) to replace it, or write to another path"
        )
    # a path store is written beside its target and renamed into place once whole: a failed
    # ingest (bad source, interruption) never leaves a partial store nor harms an old one
    work: Any = store if target is None else _sibling(target, "ingest")
    try:
        root = _ingest_into(work, source, engine, order_ids, variable, name, chunks,
                            time_is_end, overwrite or target is not None,
                            reach_order is not None, provenance)
        if target is not None:
            _replace(work, target)
            root = zarr.open_group(target, mode="r+")
            logger.info("forcing store written to %s", target)
    except BaseException:
        if target is not None:
            shutil.rmtree(work, ignore_errors=True)
        raise
    return root


def _sibling(target: str, what: str) -> str:
    path = os.path.abspath(target).rstrip(os.sep)
    return f"{path}.{what}-{uuid.uuid4().hex[:8]}.tmp"


def _replace(work: str, target: str) -> None:
    """Move the finished store ``work`` to ``target`` (an old ``target`` is removed only now)."""
    if os.path.exists(target):
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(work, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(work, target)


def _ingest_into(store: Any, source: Any, engine: Any, order_ids: np.ndarray | None,
                 variable: str | None, name: str, chunks: tuple[int, int], time_is_end: bool,
                 overwrite: bool, ordered: bool,
                 provenance: dict[str, Any] | None) -> zarr.Group:
    if engine is None:
        engine = guess_engine(source, "series")
    if getattr(engine, "name", engine) == "chrtout":  # streamed: memory N x time chunk
        root, ids, t, n_files = _stream_chrtout(source, store, variable or "q_lateral", name,
                                                order_ids, chunks, overwrite)
        first = os.fspath(source[0] if isinstance(source, (list, tuple)) else source)
        src_name = f"NWM CHRTOUT ({n_files} files from {first})"
        fmt.check_regular(np.asarray(t), src_name, "time")
        dt = fmt.interval_of(t)
    else:
        da = open_series(source, engine, **({} if variable is None else {"variable": variable}))
        ids, t = _select_rows(da, order_ids, source), da["time"].values
        src = source if isinstance(source, (str, os.PathLike)) else da.attrs.get("source")
        src_name = os.fspath(src) if isinstance(src, os.PathLike) else str(src or "array")
        fmt.check_regular(np.asarray(t), src_name, "time")
        da = da.sel(reach=ids)
        dt = da.attrs.get("interval_s") or fmt.interval_of(t)
        root = _create_array(store, name, da.shape, chunks, overwrite)
        root[name][:] = np.asarray(da.values, np.float32)
    t = np.asarray(t).astype("datetime64[ns]")
    if time_is_end:
        if dt is None:
            raise ValueError("time_is_end needs regular times to know the interval")
        t = t - np.timedelta64(int(dt), "s")
    n, steps = ids.size, t.size
    root.create_array("reach", data=ids, chunks=(max(n, 1),), dimension_names=("reach",))
    root.create_array("time", data=fmt.to_seconds(t), chunks=(max(steps, 1),),
                      dimension_names=("time",))
    root.attrs.update({
        "hydroscale_store": "forcing",
        "variable": name,
        "units": "m3 s-1",
        "time_units": fmt.TIME_UNITS,
        "time_meaning": "start of each interval; values are interval means",
        "interval_s": dt,
        "provenance": {
            "source": src_name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "hydroscale_version": fmt.version(),
            "reach_order": "given" if ordered else "source",
            **(provenance or {}),
        },
    })
    logger.info("ingested %s: %d reaches x %d steps", src_name, n, steps)
    return root


def _create_array(store: Any, name: str, shape: tuple[int, int], chunks: tuple[int, int],
                  overwrite: bool) -> zarr.Group:
    root = zarr.open_group(store, mode="w" if overwrite else "w-")
    n, steps = shape
    root.create_array(
        name, shape=(n, steps), dtype="float32",
        chunks=(min(chunks[0], max(n, 1)), min(chunks[1], max(steps, 1))),
        compressors=fmt.compressors(), fill_value=np.nan, dimension_names=("reach", "time"),
    )
    return root


def _select_rows(da: xr.DataArray, order_ids: np.ndarray | None, source: Any) -> np.ndarray:
    """The store's row ids: ``order_ids`` (all in the source) or the source's own ids."""
    src_ids = da["reach"].values.astype(np.int64)
    where = None if isinstance(source, xr.DataArray) else source
    u, c = np.unique(src_ids, return_counts=True)
    if (c > 1).any():
        raise IOFormatError(where, "reach", f"reach ids listed twice: {format_ids(u[c > 1])}")
    if order_ids is None:
        return src_ids
    missing = np.setdiff1d(order_ids, src_ids)
    if missing.size:
        raise IOFormatError(where, "reach",
                            f"reaches missing from the source: {format_ids(missing)}")
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
    store: Any = None

    def read(self, reaches: slice = slice(None), times: slice = slice(None)) -> np.ndarray:
        """Float32 block ``[reach-range, time-range]`` in store row order."""
        return self.array[reaches, times]

    def check_finite(self, block: np.ndarray, rows: np.ndarray, t0: int) -> np.ndarray:
        """Raise if ``block`` (store rows ``rows``, steps from ``t0``) holds NaN or inf: a
        chunk lost after the store was opened reads as NaN, and NaN inflow is never valid.
        Returns ``block``."""
        bad = ~np.isfinite(block)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise IOFormatError(
                self.store, self.attrs.get("variable"),
                f"{int(bad.sum())} NaN or infinite value(s) in steps {t0}:{t0 + block.shape[1]}"
                f", e.g. reach id {int(self.ids[rows[i]])} at step {t0 + j} "
                f"({self.time[t0 + j]}): a chunk is missing (Zarr reads it as NaN) or the "
                "source has gaps; repair the store or ingest the source again"
            )
        return block

    def read_rows(self, rows: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Float32 ``[len(rows), t1 - t0]`` of store rows ``rows`` (any order), checked
        finite (:meth:`check_finite`)."""
        rows = np.asarray(rows, np.int64)
        srt = np.argsort(rows, kind="stable")
        got = self.array.get_orthogonal_selection((rows[srt], slice(t0, t1)))
        out = np.empty_like(got)
        out[srt] = got
        return self.check_finite(out, rows, t0)

    def to_xarray(self) -> xr.DataArray:
        """The whole store as a ``(reach, time)`` DataArray in network order (loads it)."""
        vals = self.array.get_orthogonal_selection((self.rows, slice(None)))
        return xr.DataArray(vals, {"reach": self.ids[self.rows], "time": self.time},
                            ("reach", "time"), attrs={"units": self.attrs.get("units")})


def open_forcing(store: Any, network: RiverNetwork) -> ForcingStore:
    """Open a forcing store made by :func:`ingest`; its ids must be the network's ids."""
    root, arr = fmt.open_store(store, "forcing")
    check_units(root.attrs.get("units"), FLOW_UNITS, store, "units", "m3 s-1")
    ids = root["reach"][:].astype(np.int64)
    if ids.size != arr.shape[0]:
        raise IOFormatError(store, "reach", f"{ids.size} ids for {arr.shape[0]} rows")
    rows = fmt.match_rows(ids, network, store)
    t = fmt.EPOCH + root["time"][:].astype("timedelta64[s]")
    check_steps(min(t.size, arr.shape[1]), store)
    check_times(t, store, "time")
    fmt.check_regular(t, store, "time")
    fmt.check_chunks(arr, store)
    return ForcingStore(arr, ids, rows, t.astype("datetime64[ns]"),
                        root.attrs.get("interval_s"), dict(root.attrs), store)


# ---------------------------------------------------------------- output stores

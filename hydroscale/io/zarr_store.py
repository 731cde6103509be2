"""Zarr v3 stores of ``(reach, time)`` forcings (in) and discharge (out).

Layout of a store (a Zarr v3 group)::

    <variable>  float32 [N, T]  chunks (reach_chunk, time_chunk), dims ("reach", "time")
    reach       int64   [N]     reach ids, in the store's row order (e.g. clusters contiguous)
    time        int64   [T]     seconds since 1970-01-01 UTC (interval starts)
    attrs: hydroscale_store ("forcing" | "output"), variable, units, time_units,
           interval_s, provenance (source, created, hydroscale version, reach order), ...

* :func:`ingest` turns CHRTOUT slices, RAPID inflow, a NetCDF ``(reach, time)`` variable, a
  wide CSV or an ``xarray.DataArray`` into a forcing store, read with the reader registry
  (:func:`~hydroscale.io.open_series`; the ``hydroscale ingest`` command of
  :mod:`hydroscale.cli` calls it through the ingest workflow).
* :func:`open_forcing` opens it against a network: ids must match exactly (clear error).
* :func:`create_output_store` / :func:`write_block` / :func:`open_output`: the output store
  written block by block (region writes) by the distributed runtime.

An output store is never silently partial: :func:`create_output_store` writes
``attrs["complete"] = False`` and the writer sets it to True with :func:`mark_complete` once
every block is flushed; :func:`open_output` refuses an incomplete store unless asked
(``allow_incomplete=True``).  A run that may be interrupted records its progress inside the
store with :class:`RunProgress` (one marker file per finished (group, time chunk) and the
state carried out of it, ``.npz`` without pickle), so that the same run again resumes.
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
from zarr.codecs import BloscCodec

from ..network import RiverNetwork, format_ids
from ._common import (
    FLOW_UNITS,
    IOFormatError,
    check_steps,
    check_times,
    check_units,
)
from ._readers import guess_engine, open_series

__all__ = [
    "ForcingStore",
    "RunProgress",
    "create_output_store",
    "ingest",
    "mark_complete",
    "open_forcing",
    "open_output",
    "write_block",
]

logger = logging.getLogger(__name__)

TIME_UNITS = "seconds since 1970-01-01T00:00:00Z"
_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


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


# ---------------------------------------------------------------- forcing stores
def _interval(t: np.ndarray) -> float | None:
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
        check_regular(np.asarray(t), src_name, "time")
        dt = _interval(t)
    else:
        da = open_series(source, engine, **({} if variable is None else {"variable": variable}))
        ids, t = _select_rows(da, order_ids, source), da["time"].values
        src = source if isinstance(source, (str, os.PathLike)) else da.attrs.get("source")
        src_name = os.fspath(src) if isinstance(src, os.PathLike) else str(src or "array")
        check_regular(np.asarray(t), src_name, "time")
        da = da.sel(reach=ids)
        dt = da.attrs.get("interval_s") or _interval(t)
        root = _create_array(store, name, da.shape, chunks, overwrite)
        root[name][:] = np.asarray(da.values, np.float32)
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
        compressors=_compressors(), fill_value=np.nan, dimension_names=("reach", "time"),
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


def _open(store: Any, kind: str) -> tuple[zarr.Group, zarr.Array]:
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


def _match(ids: np.ndarray, network: RiverNetwork, store: Any) -> np.ndarray:
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


def open_forcing(store: Any, network: RiverNetwork) -> ForcingStore:
    """Open a forcing store made by :func:`ingest`; its ids must be the network's ids."""
    root, arr = _open(store, "forcing")
    check_units(root.attrs.get("units"), FLOW_UNITS, store, "units", "m3 s-1")
    ids = root["reach"][:].astype(np.int64)
    if ids.size != arr.shape[0]:
        raise IOFormatError(store, "reach", f"{ids.size} ids for {arr.shape[0]} rows")
    rows = _match(ids, network, store)
    t = _EPOCH + root["time"][:].astype("timedelta64[s]")
    check_steps(min(t.size, arr.shape[1]), store)
    check_times(t, store, "time")
    check_regular(t, store, "time")
    check_chunks(arr, store)
    return ForcingStore(arr, ids, rows, t.astype("datetime64[ns]"),
                        root.attrs.get("interval_s"), dict(root.attrs), store)


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
    fingerprint: str | None = None,
) -> zarr.Group:
    """Create an empty ``(reach, time)`` float32 output store (NaN-filled) for region writes.

    ``reach_ids`` [N] in the row order the writers use (e.g. clusters contiguous); ``time``
    [T] datetime64 interval starts; ``run``: run metadata (engine, IRF, parameters source, ...)
    stored under the ``run`` attribute; ``fingerprint``: a digest of the run definition (a
    resumed run must present the same).  The store is marked incomplete
    (``attrs["complete"] = False``) until the writer calls :func:`mark_complete`.
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
        "fingerprint": fingerprint, "complete": False,
    })
    return root


def mark_complete(store: Any) -> None:
    """Mark an output store complete: every block is written and flushed (call last)."""
    root = zarr.open_group(store, mode="r+")
    root.attrs.update({"complete": True, "completed": datetime.now(timezone.utc).isoformat(
        timespec="seconds")})


@dataclass(frozen=True)
class RunProgress:
    """The progress of a run, recorded inside its output store (``<store>/_hydroscale/``).

    Writers on any worker record each finished (group, time chunk) task with its own marker
    file (``done/g<group>-c<chunk>``, created atomically once the task's discharge block is
    written), after the state carried out of it (``state/g<group>-c<chunk>.npz``, plain
    arrays, read back with ``allow_pickle=False``).  One file per task: concurrent writers
    never touch the same file.  A run started again on the same store reads :meth:`done` and
    skips what is finished.

    ``store``: the output store path (every worker sees it: local or shared file system).
    """

    store: str

    @property
    def path(self) -> str:
        return os.path.join(self.store, "_hydroscale")

    @classmethod
    def create(cls, store: Any) -> RunProgress:
        """Create the (empty) progress record of a new run in ``store``."""
        prog = cls(os.fspath(store))
        root = zarr.open_group(prog.store, mode="r+")
        if "_hydroscale" not in root:
            root.create_group("_hydroscale", attributes={"content": (
                "hydroscale run progress: done/ one marker per finished (group, chunk), "
                "state/ the state carried out of it (npz)")})
        for sub in ("done", "state"):
            os.makedirs(os.path.join(prog.path, sub), exist_ok=True)
        return prog

    def _state_file(self, group: int, chunk: int) -> str:
        return os.path.join(self.path, "state", f"g{int(group)}-c{int(chunk)}.npz")

    def mark_done(self, group: int, chunk: int) -> None:
        name = os.path.join(self.path, "done", f"g{int(group)}-c{int(chunk)}")
        tmp = f"{name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w"):
            pass
        os.replace(tmp, name)

    def done(self) -> set[tuple[int, int]]:
        """The finished (group, chunk) pairs."""
        d = os.path.join(self.path, "done")
        if not os.path.isdir(d):
            return set()
        out = set()
        for name in os.listdir(d):
            if name.startswith("g") and "-c" in name and not name.endswith(".tmp"):
                g, k = name[1:].split("-c", 1)
                if g.isdigit() and k.isdigit():
                    out.add((int(g), int(k)))
        return out

    def save_state(self, group: int, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the state carried out of (group, chunk) (atomically: temp file + rename)."""
        name = self._state_file(group, chunk)
        tmp = f"{name[:-4]}.{uuid.uuid4().hex[:8]}.tmp.npz"
        np.savez(tmp, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        os.replace(tmp, name)

    def has_state(self, group: int, chunk: int) -> bool:
        return os.path.isfile(self._state_file(group, chunk))

    def load_state(self, group: int, chunk: int) -> dict[str, np.ndarray]:
        """The arrays written by :meth:`save_state` (no pickle: object arrays are refused)."""
        name = self._state_file(group, chunk)
        try:
            with np.load(name, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise IOFormatError(self.store, "_hydroscale/state", f"no state saved for group "
                                f"{group}, chunk {chunk}; run again with overwrite") from None

    def clear_states(self) -> None:
        """Drop the saved states (once the run is complete they are not needed)."""
        shutil.rmtree(os.path.join(self.path, "state"), ignore_errors=True)


def write_block(store: Any, reach_start: int, time_start: int, block: Any) -> None:
    """Write ``block`` ``[n_reach, n_time]`` at rows ``reach_start:`` and steps ``time_start:``
    (:meth:`hydroscale.io.OutputStore.write`, without a lock: writers of disjoint,
    chunk-aligned regions may run concurrently)."""
    from ._output import OutputStore

    OutputStore(store).write(reach_start, time_start, block)


def open_output(store: Any, network: RiverNetwork | None = None, *,
                allow_incomplete: bool = False) -> xr.DataArray:
    """An output store as a ``(reach, time)`` DataArray (network order if given; loads it).

    An incomplete store (its run was interrupted, failed or is still writing) is refused
    unless ``allow_incomplete=True`` (steps not written yet read as NaN).
    """
    root, arr = _open(store, "output")
    if root.attrs.get("complete") is False and not allow_incomplete:
        prog = RunProgress(os.fspath(store))
        n_done = len(prog.done()) if isinstance(store, (str, os.PathLike)) else 0
        raise IOFormatError(
            store, "complete",
            "the output store is incomplete: the run writing it was interrupted, failed or "
            f"is still running ({n_done} (group, chunk) blocks recorded as written); run the "
            "same command again to resume it, or pass allow_incomplete=True to read it anyway "
            "(unwritten values are NaN)"
        )
    ids = root["reach"][:].astype(np.int64)
    t = (_EPOCH + root["time"][:].astype("timedelta64[s]")).astype("datetime64[ns]")
    rows = np.arange(ids.size) if network is None else _match(ids, network, store)
    vals = arr.get_orthogonal_selection((rows, slice(None)))
    return xr.DataArray(vals, {"reach": ids[rows], "time": t}, ("reach", "time"),
                        name=root.attrs["variable"], attrs=dict(root.attrs))

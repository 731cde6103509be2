"""An output store's life for one run: lock, create or resume, complete (DESIGN §3).

:func:`prepare_output` is the one way a run gets its output store:

1. it refuses an output equal to, inside or around one of the run's inputs, before
   anything is moved (:func:`~._store_lock.check_not_nested`);
2. it takes the store's lock (:class:`~._store_lock.StoreLock`): a second writer is refused
   at once, with or without ``overwrite``;
3. it creates the store (``overwrite`` first moves an old one aside; it comes back if the
   run fails), or reopens an incomplete store of the same run definition to resume it
   (:func:`run_fingerprint`), recording this run's lock token in the store;
4. the run calls :meth:`PreparedOutput.check` between steps and
   :meth:`PreparedOutput.complete` at the end, which marks the store complete only if this
   run still holds it and the store still names this run as its writer; otherwise
   :class:`~._store_lock.StoreChangedError`, and no success is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import xarray as xr
import zarr

from .._digest import digest
from ..network import RiverNetwork
from . import _zarr as fmt
from ._common import IOFormatError, check_times
from ._store_lock import StoreChangedError, StoreLock, check_not_nested

__all__ = ["OutputStore", "PreparedOutput", "RunProgress", "create_output_store", "digest",
           "mark_complete", "open_output", "prepare_output", "run_fingerprint", "write_block"]

logger = logging.getLogger(__name__)


def run_fingerprint(definition: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of a run definition (a JSON-able mapping of scalars and
    :func:`digest` strings)."""
    text = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class OutputStore:
    """A ``(reach, time)`` output store on disk (see :func:`create_output_store` for its
    layout): region writes, the run's progress record, completion, reading back.

    ``write`` takes an optional ``lock(name)`` factory (a context manager per name, e.g. a
    ``distributed.Lock``): writers of other processes may share a Zarr chunk only at the
    edges of their row ranges, which are then written under the lock named after the store
    and the chunk (read-modify-write of one chunk at a time); the chunk-aligned middle of a
    block needs no lock.  Writes are idempotent: the same block written twice gives the
    same store.
    """

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        self._array: Any = None
        self._tag = hashlib.sha1(os.path.abspath(self.path).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"OutputStore({self.path!r})"

    @classmethod
    def create(cls, path: Any, reach_ids: Any, time: Any, **options: Any) -> OutputStore:
        """Create an empty store at ``path`` (:func:`~hydroscale.io.create_output_store`:
        ``variable``, ``units``, ``chunks``, ``interval_s``, ``run``, ``overwrite``,
        ``fingerprint``, ``dtype``)."""
        create_output_store(path, reach_ids, time, **options)
        return cls(path)

    @property
    def array(self) -> Any:
        """The discharge array (opened once)."""
        if self._array is None:
            import zarr

            root = zarr.open_group(self.path, mode="r+")
            self._array = root[root.attrs["variable"]]
        return self._array

    @property
    def progress(self) -> Any:
        """The run's progress record in the store (:class:`~hydroscale.io.RunProgress`)."""
        return RunProgress(self.path)

    def write(self, reach_start: int, time_start: int, block: Any, *,
              lock: Callable[[str], Any] | None = None) -> None:
        """Write ``block`` ``[n_reach, n_time]`` (m³/s) at rows ``reach_start:`` and steps
        ``time_start:`` (cast to the store's dtype), the shared edge chunks under ``lock``
        when given."""
        arr = self.array
        b = np.asarray(block, arr.dtype)
        if b.ndim != 2:
            raise ValueError(f"block must be [n_reach, n_time], got {b.shape}")
        a, t0 = int(reach_start), int(time_start)
        r1, t1 = a + b.shape[0], t0 + b.shape[1]
        if a < 0 or t0 < 0 or r1 > arr.shape[0] or t1 > arr.shape[1]:
            raise ValueError(f"block [{a}:{r1}, {t0}:{t1}] is outside the store {arr.shape}")
        if lock is None:
            arr[a:r1, t0:t1] = b
            return
        rc = int(arr.chunks[0])
        cuts = sorted({a, r1, *range((a + rc - 1) // rc * rc, r1, rc)})
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            part = b[lo - a : hi - a]
            if lo % rc == 0 and (hi % rc == 0 or hi == arr.shape[0]):
                arr[lo:hi, t0:t1] = part
            else:
                with lock(f"hydroscale-write-{self._tag}-{lo // rc}-{t0}"):
                    arr[lo:hi, t0:t1] = part

    def complete(self) -> None:
        """Mark the store complete (every block written and flushed; call last)."""
        mark_complete(self.path)

    def open(self, network: Any = None, *, allow_incomplete: bool = False) -> Any:
        """The store as a ``(reach, time)`` DataArray (see :func:`open_output`)."""
        return open_output(self.path, network, allow_incomplete=allow_incomplete)


def _set_writer(path: str, lock: StoreLock) -> None:
    import zarr

    zarr.open_group(path, mode="r+").attrs["writer"] = {
        k: lock.info[k] for k in ("token", "host", "pid", "started")}


@dataclass
class PreparedOutput:
    """An output store ready for a run (see :func:`prepare_output`), locked by it.

    ``done``: the (group, chunk) tasks an interrupted run finished; ``replaced``: where an
    existing store was moved by ``overwrite`` -- deleted by :meth:`complete` once the run is
    whole, put back by :meth:`rollback` if it fails (a failed run never costs the old
    output)."""

    path: str
    done: set[tuple[int, int]]
    lock: StoreLock | None = None
    replaced: str | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def store(self) -> OutputStore:
        """The store (region writes, progress)."""
        return OutputStore(self.path)

    def check(self) -> None:
        """Raise :class:`StoreChangedError` if the store was taken from this run."""
        if self.lock is not None:
            self.lock.check()

    def complete(self, clear_states: bool = True) -> None:
        """Mark the store complete (it holds every block of this run), drop the saved
        states and the replaced store, release the lock.  Raises
        :class:`StoreChangedError`, and marks nothing, if the store was changed under the
        run."""
        try:
            self.verify()
            store = self.store
            store.complete()
            if clear_states:
                store.progress.clear_states()
            if self.replaced is not None:
                shutil.rmtree(self.replaced, ignore_errors=True)
                self.replaced = None
        finally:
            self._release()

    def verify(self) -> None:
        """:meth:`check`, and that the store still names this run as its writer."""
        import zarr

        self.check()
        try:
            writer = dict(zarr.open_group(self.path, mode="r").attrs).get("writer") or {}
        except Exception as err:  # noqa: BLE001 - gone or replaced: not this run's store
            raise StoreChangedError(f"the output store {self.path!r} this run writes is gone "
                                    f"or unreadable ({err}); its output is not whole") from err
        if self.lock is not None and writer.get("token") != self.lock.token:
            raise StoreChangedError(
                f"the output store {self.path!r} was replaced under this run (it now names "
                f"host {writer.get('host')!r}, pid {writer.get('pid')} as its writer); this "
                "run's output is not whole and it does not report success")

    def rollback(self) -> None:
        """After a failed run: put a store replaced by ``overwrite`` back, release the lock.
        A store this run does not hold any more is left alone."""
        try:
            if self.replaced is not None and (self.lock is None or self.lock.lost is None):
                shutil.rmtree(self.path, ignore_errors=True)
                os.rename(self.replaced, self.path)
                logger.info("run failed: the previous store is back at %s", self.path)
            self.replaced = None
        finally:
            self._release()

    def _release(self) -> None:
        if not self._closed and self.lock is not None:
            self.lock.release()
        self._closed = True


def prepare_output(path: str, definition: dict[str, Any], create: Callable[[], Any], *,
                   overwrite: bool, resume: bool, hint: str = "overwrite=True",
                   inputs: Iterable[Any] = ()) -> PreparedOutput:
    """Lock the output store at ``path`` and create it, or reopen it to resume.

    ``create()`` creates a new store at ``path`` (nothing is there when it is called: with
    ``overwrite``, an existing store is first moved aside, see :class:`PreparedOutput`).  An
    existing store is resumed when ``resume`` and it is an incomplete hydroscale output store
    of the same run definition; otherwise it is left untouched and the error says why
    (complete, another run, not an output store).  ``hint`` names the overwrite switch in
    messages (``"--overwrite"`` for the CLI); ``inputs`` are the run's input paths (forcing
    store, network file), which the output may not be, lie in or contain.

    Raises :class:`~._store_lock.StoreLockedError` when another live run writes ``path``
    (nothing is moved or created).
    """
    check_not_nested(path, inputs)
    lock = StoreLock.acquire(path)
    try:
        prepared = _prepare(path, definition, create, lock, overwrite=overwrite, resume=resume,
                            hint=hint)
    except BaseException:
        lock.release()
        raise
    try:
        _set_writer(path, lock)
        if not prepared.done:
            RunProgress.create(path)
    except BaseException:
        prepared.rollback()
        raise
    return prepared


def _prepare(path: str, definition: dict[str, Any], create: Callable[[], Any],
             lock: StoreLock, *, overwrite: bool, resume: bool, hint: str) -> PreparedOutput:
    if overwrite or not os.path.exists(path):
        aside = None
        if os.path.exists(path):
            aside = f"{os.path.abspath(path).rstrip(os.sep)}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(path, aside)
        try:
            create()
        except BaseException:
            PreparedOutput(path, set(), None, aside).rollback()
            raise
        return PreparedOutput(path, set(), lock, aside)
    if not resume:
        raise FileExistsError(
            f"output store {path!r} exists and is left untouched; pass {hint} to replace it, "
            "resume=True to continue an interrupted run, or write elsewhere")
    import zarr

    try:
        attrs = dict(zarr.open_group(path, mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - whatever is there, it is not our store
        raise IOFormatError(path, None, f"exists but is not a Zarr store ({err}); it is left "
                            "untouched: remove it or write elsewhere") from None
    if attrs.get("hydroscale_store") != "output":
        raise IOFormatError(path, "hydroscale_store", "exists but is not a hydroscale output "
                            "store; it is left untouched: remove it or write elsewhere")
    if attrs.get("complete") is not False:
        raise FileExistsError(
            f"output store {path!r} exists and is complete; it is left untouched: pass "
            f"{hint} to replace it, or write elsewhere")
    old = (attrs.get("run") or {}).get("definition") or {}
    if attrs.get("fingerprint") != run_fingerprint(definition):
        diff = sorted(k for k in set(old) | set(definition) if old.get(k) != definition.get(k))
        shown = "; ".join(f"{k}: store {old.get(k)!r}, now {definition.get(k)!r}"
                          for k in diff[:6])
        raise ValueError(
            f"output store {path!r} holds an interrupted run of another definition ({shown}); "
            f"it is left untouched: rerun with the same inputs to resume it, or pass {hint} "
            "to replace it"
        )
    done = RunProgress(path).done()
    logger.info("resuming %s: %d (group, chunk) tasks recorded as finished", path, len(done))
    return PreparedOutput(path, done, lock)


# ---------------------------------------------------------------- the store's functions
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
    dtype: Any = "float32",
) -> zarr.Group:
    """Create an empty ``(reach, time)`` output store (NaN-filled) for region writes.

    ``reach_ids`` [N] in the row order the writers use (e.g. clusters contiguous); ``time``
    [T] datetime64 interval starts; ``run``: run metadata (engine, IRF, parameters source, ...)
    stored under the ``run`` attribute; ``fingerprint``: a digest of the run definition (a
    resumed run must present the same); ``dtype``: float32 (default) or float64, the dtype
    the run computes in.

    The store is CF-1.8 (``xarray.open_zarr`` decodes it): ``time`` carries CF units and
    calendar (decoded to datetime64), the discharge its ``units``, ``standard_name``,
    ``long_name`` and ``cell_methods``, the group ``Conventions`` and ``featureType``.

    Until :func:`mark_complete` the store is marked incomplete: ``attrs["complete"] = False``
    (:func:`open_output` refuses it), a ``comment`` and the discharge's ``long_name`` say
    so, and it has no consolidated metadata, so ``xarray.open_zarr`` warns on opening it
    (a ``RuntimeWarning``; an error under ``-W error``); the consolidated metadata is
    written by :func:`mark_complete`, last.
    """
    ids = np.asarray(reach_ids, np.int64)
    t = np.asarray(time).astype("datetime64[ns]")
    check_times(t, store, "time")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype of an output store must be float32 or float64, got {dt}")
    if not overwrite and isinstance(store, (str, os.PathLike)) and os.path.exists(store):
        raise FileExistsError(
            f"output store {os.fspath(store)!r} exists and is left untouched; pass "
            "overwrite=True to replace it, or write to another path"
        )
    root = zarr.open_group(store, mode="w" if overwrite else "w-")
    n, steps = ids.size, t.size
    step = interval_s if interval_s else fmt.interval_of(t)
    q = root.create_array(variable, shape=(n, steps), dtype=dt,
                          chunks=(min(chunks[0], max(n, 1)), min(chunks[1], max(steps, 1))),
                          compressors=fmt.compressors(), fill_value=np.nan,
                          dimension_names=("reach", "time"))
    q.attrs.update(_variable_attrs(units, step, complete=False))
    r = root.create_array("reach", data=ids, chunks=(max(n, 1),), dimension_names=("reach",))
    r.attrs.update({"long_name": "reach id", "cf_role": "timeseries_id"})
    tt = root.create_array("time", data=fmt.to_seconds(t), chunks=(max(steps, 1),),
                           dimension_names=("time",))
    tt.attrs.update(fmt.cf_time_attrs("start of each time step (values are means over it)"))
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    root.attrs.update({
        "Conventions": "CF-1.8", "featureType": "timeSeries",
        "title": "hydroscale routed discharge", "source": f"hydroscale {fmt.version()}",
        "history": f"{created} created by hydroscale", "comment": _INCOMPLETE,
        "hydroscale_store": "output", "variable": variable, "units": units,
        "time_units": fmt.TIME_UNITS,
        "interval_s": step,
        "time_meaning": "start of each interval; values are interval means",
        "run": {"created": created, "hydroscale_version": fmt.version(), **(run or {})},
        "fingerprint": fingerprint, "complete": False,
    })
    return root


_INCOMPLETE = ("INCOMPLETE: the run writing this store has not finished (or failed); "
               "unwritten values are NaN. Read it with hydroscale.io.open_output, which "
               "refuses it until the run completes")


def _variable_attrs(units: str, interval_s: float | None, *, complete: bool) -> dict[str, str]:
    from ..routing import DISCHARGE_ATTRS  # lazy: reading a store needs no routing

    attrs = {**DISCHARGE_ATTRS, "units": units}
    if interval_s:
        attrs["cell_methods"] = f"time: mean (interval: {interval_s:g} s)"
    if not complete:
        attrs["long_name"] = f"INCOMPLETE (run not finished) {attrs['long_name']}"
    return attrs


def mark_complete(store: Any) -> None:
    """Mark an output store complete: every block is written and flushed (call last).

    Clears the incomplete markers and writes the store's consolidated metadata (after
    which ``xarray.open_zarr`` opens it without a warning)."""
    import warnings

    root = zarr.open_group(store, mode="r+")
    completed = datetime.now(timezone.utc).isoformat(timespec="seconds")
    attrs = dict(root.attrs)
    var = root[attrs["variable"]]
    var.attrs.update(_variable_attrs(attrs.get("units", "m3 s-1"), attrs.get("interval_s"),
                                     complete=True))
    root.attrs.update({"complete": True, "completed": completed,
                       "comment": "complete: every time step of every reach was written",
                       "history": f"{attrs.get('history', '')}\n{completed} completed".strip()})
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not (yet) in the v3 specification;
        # zarr-python and xarray read it, and the store reads the same without it
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        # the run's progress record (_hydroscale/done, state) holds plain files
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        zarr.consolidate_metadata(store)


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
    OutputStore(store).write(reach_start, time_start, block)


def open_output(store: Any, network: RiverNetwork | None = None, *,
                allow_incomplete: bool = False) -> xr.DataArray:
    """An output store as a ``(reach, time)`` DataArray (network order if given; loads it):
    discharge in m³/s (the store's dtype), ``time`` the interval starts (datetime64), attrs
    those of the store and of its discharge variable (``units``, ``standard_name``, ...).

    An incomplete store (its run was interrupted, failed or is still writing) is refused
    unless ``allow_incomplete=True`` (steps not written yet read as NaN).  Plain
    ``xarray.open_zarr(store)`` opens a complete store too (CF-decoded); on an incomplete
    one it warns (no consolidated metadata) and its ``complete`` attribute is False.
    """
    root, arr = fmt.open_store(store, "output")
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
    t = (fmt.EPOCH + root["time"][:].astype("timedelta64[s]")).astype("datetime64[ns]")
    rows = np.arange(ids.size) if network is None else fmt.match_rows(ids, network, store)
    vals = arr.get_orthogonal_selection((rows, slice(None)))
    return xr.DataArray(vals, {"reach": ids[rows], "time": t}, ("reach", "time"),
                        name=root.attrs["variable"],
                        attrs={**dict(root.attrs), **dict(arr.attrs)})

"""Shared checks of the file readers: variables present, times ordered, units, ids known.

Every error is an :class:`IOFormatError` naming the file and the field at fault and saying
how to fix it, so a user with a bad NetCDF/CSV file knows which one and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..network import format_ids

__all__ = [
    "IOFormatError",
    "as_path_list",
    "netcdf_guard",
    "check_netcdf_signature",
    "check_ids_known",
    "check_steps",
    "check_times",
    "check_units",
    "decode_strings",
    "integer_ids",
    "require_vars",
    "resolve_path",
]

#: spellings of m³/s accepted in ``units`` attributes
FLOW_UNITS = frozenset(
    {"m3 s-1", "m3/s", "m^3/s", "m3 s^-1", "m**3 s**-1", "m^3 s^-1", "cms", "m3.s-1", "m3s-1"}
)
#: spellings of a volume in m³
VOLUME_UNITS = frozenset({"m3", "m^3", "m**3", "cubic meters"})
LENGTH_UNITS = frozenset({"m", "meter", "meters", "metre", "metres"})
SECOND_UNITS = frozenset({"s", "second", "seconds", "sec"})


class IOFormatError(ValueError):
    """A file does not hold what its format promises (names the file and the field)."""

    def __init__(self, path: Any, field: str | None, message: str) -> None:
        where = f"{os.fspath(path) if path is not None else '<memory>'}"
        if field:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.field = field


#: first bytes of NetCDF classic (CDF-1, CDF-2, CDF-5) and of NetCDF-4 (HDF5) files
_CDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: what some other files start with -> what they are
_OTHER_MAGIC = {b"\x1f\x8b": "gzip: decompress it first", b"PK\x03\x04": "zip: unpack it first",
                b"<!DOCTYPE": "an HTML page: the download failed?",
                b"<html": "an HTML page: the download failed?"}


def check_netcdf_signature(path: Any) -> None:
    """Raise :class:`IOFormatError` unless the file at ``path`` starts like a NetCDF file
    (classic ``CDF`` or NetCDF-4/HDF5, whose signature may follow a user block of 512·2^k
    bytes).  Missing paths, folders and URLs are left to the reader."""
    if not isinstance(path, (str, bytes, os.PathLike)):  # an open file object
        return
    p = os.fspath(path)
    if not os.path.isfile(p):
        return
    size = os.path.getsize(p)
    with open(p, "rb") as f:
        head = f.read(24)
        if head[:4] in _CDF_MAGIC or head[:8] == _HDF5_MAGIC:
            return
        offset = 512
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == _HDF5_MAGIC:
                return
            offset *= 2
    if not head:
        raise IOFormatError(path, None, "not a NetCDF file: it is empty (0 bytes); copy or "
                            "download it again")
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a cut multibyte tail
    is_text = bool(text) and all(c.isprintable() or c in "\r\n\t" for c in text)
    kind = next((k for m, k in _OTHER_MAGIC.items() if head.lower().startswith(m.lower())),
                "text" if is_text else "binary")
    raise IOFormatError(
        path, None,
        f"not a NetCDF file: it starts with {text if is_text else head!r} ({kind}, {size} "
        "bytes) where NetCDF files start with 'CDF' or the HDF5 signature; give the NetCDF "
        "file itself (a text or CSV file is not NetCDF, whatever its name)"
    )


@contextmanager
def netcdf_guard(path: Any) -> Iterator[None]:
    """Refuse a file that is not NetCDF (:func:`check_netcdf_signature`), and turn the library
    errors of a NetCDF/HDF5 file that cannot be read (truncated, damaged: ``OSError: NetCDF:
    HDF error``) into an :class:`IOFormatError` naming it."""
    check_netcdf_signature(path)
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError) as err:
        p = os.fspath(path)
        size = os.path.getsize(p) if os.path.isfile(p) else None
        raise IOFormatError(
            path, None,
            f"cannot be read as NetCDF ({err}); the file is truncated or damaged"
            f"{f' ({size} bytes)' if size is not None else ''}: copy or download it again"
        ) from err


def as_path_list(paths: Any, pattern: str = "*") -> list[str]:
    """A directory (files matching ``pattern``, sorted by name), a glob, one path or a list."""
    import glob

    if isinstance(paths, (str, os.PathLike)):
        p = os.fspath(paths)
        if os.path.isdir(p):
            out = sorted(glob.glob(os.path.join(p, pattern)))
        elif any(c in p for c in "*?["):
            out = sorted(glob.glob(p))
        else:
            out = [p]
    else:
        out = [os.fspath(p) for p in paths]
    if not out:
        raise FileNotFoundError(f"no files found in {paths!r} (pattern {pattern!r})")
    return out


def require_vars(ds: Any, names: Sequence[str], path: Any) -> None:
    """Raise if any of ``names`` is missing from the dataset ``ds`` (xarray or netCDF4)."""
    have = set(getattr(ds, "variables", {}))
    missing = [n for n in names if n not in have]
    if missing:
        raise IOFormatError(
            path,
            ", ".join(missing),
            f"missing variable(s) {missing}; the file has {sorted(have)}",
        )


def check_units(units: Any, allowed: frozenset[str], path: Any, field: str, want: str) -> None:
    """Raise if a ``units`` attribute is present and not one of ``allowed`` (case-insensitive)."""
    if units is None:
        return
    u = str(units).strip()
    if u.lower() not in {a.lower() for a in allowed}:
        raise IOFormatError(
            path, field, f"units are {u!r}, expected {want}; convert the variable to {want}"
        )


def integer_ids(values: Any, path: Any, field: str, what: str = "reach ids") -> np.ndarray:
    """``values`` as int64 ids; raise if they are strings, or numbers that are not integers.

    A NetCDF/CSV/DataArray whose ids were written as text (``"1234"``) is refused rather than
    parsed: the file is not what its format promises, and other tools would read it wrong.
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64)
    if arr.dtype.kind in "SUO":
        shown = decode_strings(arr.ravel()[:3]).tolist()
        raise IOFormatError(
            path, field,
            f"{what} are strings, e.g. {shown} ({arr.size} in all): hydroscale needs integer "
            "ids (NWM link, RAPID rivid); convert them (e.g. .astype('int64') when they are "
            "numbers stored as text) and write the file again"
        )
    bad = arr.ravel()[~(np.isfinite(arr.ravel()) & (arr.ravel() == np.round(arr.ravel())))] \
        if arr.dtype.kind == "f" else arr.ravel()
    raise IOFormatError(path, field, f"{what} must be integers, got dtype {arr.dtype}, e.g. "
                        f"{format_ids(bad.tolist(), 3)}")


def check_steps(n_steps: int, path: Any, field: str = "time") -> None:
    """Raise if a source or store holds no time step (nothing to route)."""
    if int(n_steps) == 0:
        raise IOFormatError(path, field, "no time steps: the data holds 0 records along "
                            "time; give a source with at least one time step")


def check_times(times: Any, path: Any, field: str = "time") -> np.ndarray:
    """``times`` as datetime64[ns]; raise unless strictly increasing (names duplicates)."""
    t = np.asarray(times)
    if t.ndim != 1:
        raise IOFormatError(path, field, f"times must be 1-D, got shape {t.shape}")
    if t.size > 1:
        d = np.diff(t.astype("datetime64[ns]").astype(np.int64) if t.dtype.kind == "M" else t)
        dup = np.flatnonzero(d == 0)
        if dup.size:
            raise IOFormatError(
                path, field, f"duplicated times {format_ids(t[dup + 1])}: keep one record per time"
            )
        back = np.flatnonzero(d < 0)
        if back.size:
            raise IOFormatError(
                path,
                field,
                f"times are not sorted: {format_ids(t[back + 1])} come after later times; "
                "sort the records (or pass the files) in increasing time",
            )
    return t


def check_ids_known(ids: Any, known: Any, path: Any, field: str, what: str = "network") -> None:
    """Raise if some ``ids`` are not in ``known``, listing some of them."""
    unknown = np.setdiff1d(np.asarray(ids), np.asarray(known))
    if unknown.size:
        raise IOFormatError(
            path,
            field,
            f"ids not in the {what}: {format_ids(unknown.tolist())}; "
            "subset the file or use the matching network",
        )


def decode_strings(values: Any) -> np.ndarray:
    """Byte/char arrays (``|S15``) -> stripped unicode strings."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8", errors="replace")
    elif arr.dtype.kind == "O":
        arr = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()])
        arr = arr.reshape(np.asarray(values).shape)
    return np.char.strip(arr.astype(str))


def resolve_path(reference: Any, path: str) -> str:
    """A path named in a settings file (mizuRoute control file, RAPID2 namelist): as given
    when absolute or when it exists from the working directory (as those models take it),
    else relative to the settings file's folder or that folder's parent (case folders keep
    their settings in ``settings/`` or ``input/``); unchanged when none exists."""
    import glob

    p = os.fspath(path)
    if os.path.isabs(p) or glob.glob(p):
        return p
    here = os.path.dirname(os.path.abspath(os.fspath(reference)))
    for base in (here, os.path.dirname(here)):
        cand = os.path.join(base, p)
        if glob.glob(cand):
            return cand
    return p

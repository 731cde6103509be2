"""Shared checks of the file readers: variables present, times ordered, units, ids known.

Every error is an :class:`IOFormatError` naming the file and the field at fault and saying
how to fix it, so a user with a bad NetCDF/CSV file knows which one and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "IOFormatError",
    "as_path_list",
    "netcdf_guard",
    "check_ids_known",
    "check_times",
    "check_units",
    "decode_strings",
    "require_vars",
]

#: spellings of m³/s accepted in ``units`` attributes
FLOW_UNITS = frozenset(
    {"m3 s-1", "m3/s", "m^3/s", "m3 s^-1", "m**3 s**-1", "m^3 s^-1", "cms", "m3.s-1", "m3s-1"}
)
#: spellings of a volume in m³
VOLUME_UNITS = frozenset({"m3", "m^3", "m**3", "cubic meters"})
LENGTH_UNITS = frozenset({"m", "meter", "meters", "metre", "metres"})
SECOND_UNITS = frozenset({"s", "second", "seconds", "sec"})


def _some(values: Iterable[Any], k: int = 5) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:k])
    return f"[{head}{', ...' if len(values) > k else ''}] ({len(values)} in all)"


class IOFormatError(ValueError):
    """A file does not hold what its format promises (names the file and the field)."""

    def __init__(self, path: Any, field: str | None, message: str) -> None:
        where = f"{os.fspath(path) if path is not None else '<memory>'}"
        if field:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.field = field


@contextmanager
def netcdf_guard(path: Any) -> Iterator[None]:
    """Turn the library errors of a NetCDF/HDF5 file that cannot be read (truncated, damaged,
    not NetCDF: ``OSError: NetCDF: HDF error``) into an :class:`IOFormatError` naming it."""
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
                path, field, f"duplicated times {_some(t[dup + 1])}: keep one record per time"
            )
        back = np.flatnonzero(d < 0)
        if back.size:
            raise IOFormatError(
                path,
                field,
                f"times are not sorted: {_some(t[back + 1])} come after later times; "
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
            f"ids not in the {what}: {_some(unknown.tolist())}; "
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

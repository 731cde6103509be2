"""The reader registry: one frozen :class:`Reader` per input format, chosen with ``engine=`` or
guessed from the source (the shape of xarray's backends: ``guess_can_open``, an explicit
engine, a lookup error that lists the names).

Two kinds of reader:

* ``"network"``: ``open(path, **options) -> RiverNetwork``, through :func:`open_network`;
* ``"series"``: ``open(source, **options) -> DataArray (reach, time)`` of m³/s interval means,
  through :func:`open_series` (:func:`~hydroscale.io.zarr_store.ingest` writes one to a store).

Built in (what each guess looks at):

================  =======  ==================================================================
engine            kind     recognised by
================  =======  ==================================================================
routelink         network  a NetCDF header holding ``link`` and ``to``
rapid_connect     network  a ``.csv``/``.txt`` file whose first line is integers
mizuroute         network  a NetCDF header holding segId/downSegId/hruSegId (or the aliases of
                           :data:`~hydroscale.io.mizuroute.NTOPO_ALIASES`), or a mizuRoute
                           control file (``<fname_ntopOld>``)
rapid2            network  a ``.yml``/``.yaml`` RAPID2 namelist (keys ``con_pqt``, ``bas_pqt``)
dataarray         series   an ``xarray.DataArray``
chrtout           series   ``CHRTOUT`` in the file names (a file, list, glob, or a folder's files)
                           or an NWM channel time slice (1-D ``q_lateral``/``streamflow``)
rapid_inflow      series   a NetCDF header holding ``m3_riv`` or ``Qext``
netcdf            series   a NetCDF header with a 2-D (reach-like, time) variable
mizuroute_runoff  series   a mizuRoute control file naming ``<fname_qsim>`` (or, named with
                           ``engine=``, a runoff NetCDF with ``ntopo=``): HRU runoff x area
wide_csv          series   a ``.csv`` file (header ``time,<id>,<id>,...``)
================  =======  ==================================================================

Guessing stays cheap: names, suffixes, the first line of a CSV, the header of a NetCDF file
(never its data).  With ``engine=None`` exactly one reader of the kind must recognise the
source; none or several is a :class:`ReaderGuessError` that names the source, says what every
reader looks for and how to force one (``engine=``).  A file named like NetCDF (``.nc``) that
cannot be read as NetCDF is reported as such (:class:`~hydroscale.io.IOFormatError`).
"""

from __future__ import annotations

import functools
import glob
import inspect
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # xarray is imported where a reader runs: the registry loads without it
    import xarray as xr

from ..network import RiverNetwork
from ._common import (
    _CDF_MAGIC,
    _HDF5_MAGIC,
    FLOW_UNITS,
    IOFormatError,
    check_steps,
    check_times,
    check_units,
    integer_ids,
    netcdf_guard,
)
from .mizuroute import NTOPO_ALIASES, NTOPO_NAMES, is_control_file, read_control, read_mizuroute
from .nwm import read_chrtout, read_routelink
from .rapid import read_rapid_connect, read_rapid_inflow
from .rapid2 import is_rapid2_namelist, read_rapid2_namelist

__all__ = [
    "KINDS",
    "NETCDF_SUFFIXES",
    "REACH_DIMS",
    "Reader",
    "ReaderGuessError",
    "get_reader",
    "guess_engine",
    "list_readers",
    "netcdf_header",
    "open_network",
    "open_series",
    "register_reader",
]

logger = logging.getLogger(__name__)

#: the kinds of reader: what ``open`` returns
KINDS = ("network", "series")
#: file name endings taken as NetCDF (a file without one is probed by its signature)
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
#: dimension names taken as the reach dimension of a (reach, time) NetCDF variable
REACH_DIMS = ("reach", "feature_id", "rivid", "link", "station")


class ReaderGuessError(IOFormatError):
    """``engine=None`` and not exactly one registered reader recognises the source."""


@dataclass(frozen=True)
class Reader:
    """One input format.

    Attributes
    ----------
    name : registry key, the ``engine=`` value (an identifier).
    kind : ``"network"`` (``open`` returns a :class:`~hydroscale.network.RiverNetwork`) or
        ``"series"`` (``open`` returns an ``xarray.DataArray`` ``(reach, time)`` in m³/s,
        integer reach ids, interval means).
    guess_can_open : ``guess_can_open(source) -> bool``, a cheap check (names, suffixes, a
        NetCDF header: see :func:`netcdf_header`) that never reads the data; None: the reader
        is only used when named (``engine=``).
    open : ``open(source, **options)``; its keyword parameters are the options it takes
        (:attr:`options`; an ``open`` with ``**kwargs`` takes any).
    description : what it reads, a short noun phrase (``"a RouteLink NetCDF (.nc)"``).
    looks_for : what ``guess_can_open`` checks, for error messages (default: ``description``).
    """

    name: str
    kind: str
    guess_can_open: Callable[[Any], bool] | None
    open: Callable[..., Any]
    description: str
    looks_for: str = ""
    options: tuple[str, ...] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a reader name must be an identifier (it is the engine= value), "
                             f"got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"reader {self.name!r}: kind must be one of {list(KINDS)}, got "
                             f"{self.kind!r}")
        if not callable(self.open):
            raise TypeError(f"reader {self.name!r}: open must be callable, got "
                            f"{type(self.open).__name__}")
        if self.guess_can_open is not None and not callable(self.guess_can_open):
            raise TypeError(f"reader {self.name!r}: guess_can_open must be callable or None, "
                            f"got {type(self.guess_can_open).__name__}")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"reader {self.name!r}: description must say what it reads")
        if not self.looks_for:
            object.__setattr__(self, "looks_for", self.description)
        object.__setattr__(self, "options", _options_of(self.name, self.open))


def _options_of(name: str, fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """The keyword options of ``fn`` after its first (source) parameter; None for **kwargs."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: take its word
        return None
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                            inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"reader {name!r}: open must take the source as its first positional "
                        "parameter")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params[1:] if p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


_REGISTRY: dict[str, Reader] = {}


def register_reader(reader: Reader, *, overwrite: bool = False) -> Reader:
    """Register ``reader`` under ``reader.name``; refuse to replace an existing one silently."""
    if not isinstance(reader, Reader):
        raise TypeError(f"register_reader takes a Reader, got {type(reader).__name__}")
    old = _REGISTRY.get(reader.name)
    if old is not None and not overwrite:
        raise ValueError(f"a reader named {reader.name!r} is already registered ({old.kind}: "
                         f"{old.description}); pass overwrite=True to replace it")
    _REGISTRY[reader.name] = reader
    return reader


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)} or None, got {kind!r}")


def list_readers(kind: str | None = None) -> dict[str, Reader]:
    """The registered readers (of ``kind`` if given), name -> :class:`Reader`, in the order
    they were registered."""
    _check_kind(kind)
    return {n: r for n, r in _REGISTRY.items() if kind is None or r.kind == kind}


def get_reader(engine: str | Reader, kind: str | None = None) -> Reader:
    """The reader named ``engine`` (a :class:`Reader` is returned as is), checked to be of
    ``kind`` when given; the error for an unknown name lists the registered ones."""
    _check_kind(kind)
    if isinstance(engine, Reader):
        reader = engine
    else:
        reader = _REGISTRY.get(engine) if isinstance(engine, str) else None
        if reader is None:
            names = ", ".join(list_readers(kind)) or "none"
            raise ValueError(f"unknown {kind + ' ' if kind else ''}reader engine={engine!r}; "
                             f"registered{' ' + kind if kind else ''} readers: {names}")
    if kind is not None and reader.kind != kind:
        raise ValueError(f"engine={reader.name!r} reads a {reader.kind}, not a {kind}; "
                         f"{kind} readers: {', '.join(list_readers(kind))}")
    return reader


# ------------------------------------------------------------------------ guessing
def _label(source: Any) -> str:
    """How an error names ``source``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (list, tuple)) and source and \
            all(isinstance(p, (str, os.PathLike)) for p in source):
        more = f" and {len(source) - 1} more" if len(source) > 1 else ""
        return f"{os.fspath(source[0])}{more}"
    return f"<{type(source).__name__}>"


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _existing_file(source: Any) -> str | None:
    if not isinstance(source, (str, os.PathLike)):
        return None
    p = os.fspath(source)
    return p if os.path.isfile(p) else None


def guess_engine(source: Any, kind: str) -> str:
    """The name of the one ``kind`` reader whose ``guess_can_open`` recognises ``source``.

    Raises
    ------
    ReaderGuessError
        None or several readers recognise it (the message names the source, what each reader
        looks for and ``engine=``).
    FileNotFoundError
        No reader recognises it and it names no existing file, folder or glob match.
    IOFormatError
        The source is named like NetCDF but cannot be read as NetCDF.
    """
    readers = list_readers(_require_kind(kind))
    found = []
    for reader in readers.values():
        if reader.guess_can_open is None:
            continue
        try:
            ok = reader.guess_can_open(source)
        except (IOFormatError, PermissionError):
            raise  # the source names a format and is not it: that is the answer
        except Exception as err:  # noqa: BLE001 - one broken guess must not hide the others
            logger.warning("reader %r failed while guessing %s: %s", reader.name,
                           _label(source), err)
            continue
        if ok:
            found.append(reader.name)
    if len(found) == 1:
        logger.debug("%s: read with the %r reader", _label(source), found[0])
        return found[0]
    where = _label(source)
    if found:
        raise ReaderGuessError(where, None, (
            f"{len(found)} {kind} readers recognise it ({', '.join(found)}); pass engine= one "
            f"of them\n{_looks_for(readers, found)}"))
    if isinstance(source, (str, os.PathLike)) and not os.path.exists(os.fspath(source)):
        what = "no files match this pattern" if _is_glob(where) else "no such file or folder"
        raise FileNotFoundError(f"{where}: {what}")
    names = [n for n, r in readers.items() if r.guess_can_open is not None]
    raise ReaderGuessError(where, None, (
        f"no {kind} reader recognises it; the readers look for:\n"
        f"{_looks_for(readers, names)}\npass engine=NAME to read it with a reader anyway "
        f"({kind} readers: {', '.join(readers) or 'none registered'})"))


def _require_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return kind


def _looks_for(readers: Mapping[str, Reader], names: list[str]) -> str:
    return "\n".join(f"  - {n} ({readers[n].description}): {readers[n].looks_for}"
                     for n in names)


def netcdf_header(source: Any) -> Mapping[str, tuple[str, ...]] | None:
    """variable -> dimension names of a NetCDF file, read from its header only (cached by
    path, size and modification time); None when ``source`` is not a NetCDF file by name
    (:data:`NETCDF_SUFFIXES`) nor by signature.

    Raises
    ------
    IOFormatError
        A file named like NetCDF that is not one, or is truncated or damaged.
    """
    p = _existing_file(source)
    if p is None:
        return None
    named = p.lower().endswith(NETCDF_SUFFIXES)
    if not named:
        with open(p, "rb") as f:
            head = f.read(8)
        if head[:4] not in _CDF_MAGIC and head != _HDF5_MAGIC:
            return None
    st = os.stat(p)
    try:
        return _read_header(p, st.st_mtime_ns, st.st_size)
    except IOFormatError:
        if named:
            raise
        return None  # an HDF5 file that is not NetCDF, with a name that never said it was


@functools.lru_cache(maxsize=32)
def _read_header(path: str, mtime_ns: int, size: int) -> Mapping[str, tuple[str, ...]]:
    import netCDF4  # lazy: optional on machines that only route

    with netcdf_guard(path), netCDF4.Dataset(path) as ds:
        return MappingProxyType({n: tuple(v.dimensions) for n, v in ds.variables.items()})


# ------------------------------------------------------------------------ entry points
def _call(reader: Reader, source: Any, options: dict[str, Any]) -> Any:
    if reader.options is not None:
        unknown = sorted(set(options) - set(reader.options))
        if unknown:
            takes = f"the options {list(reader.options)}" if reader.options else "no options"
            raise TypeError(f"reader {reader.name!r} takes {takes}; got {unknown}")
    return reader.open(source, **options)


def open_network(path: Any, engine: str | Reader | None = None,
                 **options: Any) -> RiverNetwork:
    """Read a river network with the reader ``engine`` (a registered name or a
    :class:`Reader`), or the one reader that recognises ``path`` (:func:`guess_engine`).

    ``options`` go to the reader (``routelink``: ``attrs``; ``rapid_connect``:
    ``riv_bas_id``); one it does not take is a ``TypeError`` naming the ones it does.
    """
    reader = get_reader(guess_engine(path, "network") if engine is None else engine,
                        "network")
    net = _call(reader, path, options)
    if not isinstance(net, RiverNetwork):
        raise TypeError(f"network reader {reader.name!r} returned {type(net).__name__}, not a "
                        "RiverNetwork")
    return net


def open_series(source: Any, engine: str | Reader | None = None,
                **options: Any) -> xr.DataArray:
    """A ``(reach, time)`` DataArray of m³/s interval means (float, integer reach ids) read
    with the reader ``engine`` or the one that recognises ``source`` (:func:`guess_engine`).

    ``source`` is an ``xarray.DataArray`` ``(reach, time)``; a folder, glob or list of NWM
    CHRTOUT files (``variable``, default ``q_lateral``); a RAPID inflow NetCDF (``m3_riv`` or
    ``Qext``; ``interval_s``, ``start`` for legacy files); a NetCDF with a ``(reach-like,
    time)`` variable (``variable``: which one, when several); a wide CSV
    (``time,<id>,<id>,...``); or what a registered reader takes.

    Values must be discharge: a DataArray or NetCDF variable whose ``units`` attribute is not
    a spelling of m³/s (``m3 s-1``, ``m3/s``, ``cms``, ...) is refused; one without ``units``
    is taken as m³/s (a warning is logged).  Reach ids must be integers (ids stored as
    strings are refused) and there must be at least one time step.

    Raises
    ------
    IOFormatError
        Naming the file (``<DataArray>`` for an array) and the field at fault.
    """
    import xarray as xr

    reader = get_reader(guess_engine(source, "series") if engine is None else engine,
                        "series")
    da = _call(reader, source, options)
    where = _label(source)
    if not isinstance(da, xr.DataArray) or da.dims != ("reach", "time"):
        got = da.dims if isinstance(da, xr.DataArray) else type(da).__name__
        raise TypeError(f"series reader {reader.name!r} returned {got} for {where}, not a "
                        "(reach, time) DataArray")
    check_units(da.attrs.get("units"), FLOW_UNITS, where, "units", "m3 s-1")
    check_steps(da.sizes["time"], where)
    return da


# ------------------------------------------------------------------------ built-in readers
def _guess_routelink(source: Any) -> bool:
    hdr = netcdf_header(source)
    return hdr is not None and "link" in hdr and "to" in hdr


def _guess_rapid_connect(source: Any) -> bool:
    p = _existing_file(source)
    if p is None or not p.lower().endswith((".csv", ".txt")):
        return False
    with open(p, "rb") as f:
        first = f.readline(4096).decode("ascii", errors="replace").strip()
    fields = [v.strip() for v in first.split(",")]
    return len(fields) >= 2 and all(v.lstrip("-").isdigit() for v in fields)


def _check_flow_units(units: Any, where: Any, field: str) -> None:
    """Discharge units only; a variable without ``units`` is taken as m³/s (with a log
    line), for NetCDF variables and DataArrays alike."""
    if units is None:
        logger.warning("%s [%s]: no 'units' attribute: taken as m3 s-1 (set units to say "
                       "so)", where, field)
        return
    check_units(units, FLOW_UNITS, where, field, "m3 s-1")


def _is_dataarray(source: Any) -> bool:
    xr = sys.modules.get("xarray")  # no DataArray exists before xarray is imported
    return xr is not None and isinstance(source, xr.DataArray)


def _open_dataarray(source: xr.DataArray) -> xr.DataArray:
    import xarray as xr

    where = "<DataArray>"
    if not isinstance(source, xr.DataArray):
        raise TypeError(f"the dataarray reader takes an xarray.DataArray, got "
                        f"{type(source).__name__}")
    if source.dims != ("reach", "time"):
        raise ValueError(f"a DataArray source must have dims (reach, time), got {source.dims}")
    _check_flow_units(source.attrs.get("units"), where, "units")
    ids = integer_ids(source["reach"].values, where, "reach")
    check_steps(source.sizes["time"], where)
    check_times(source["time"].values, where, "time")
    return source.assign_coords(reach=ids)


def _is_channel_slice(path: str) -> bool:
    """An NWM channel output time slice whatever its name (``nwm.t00z...channel_rt...nc``)."""
    hdr = netcdf_header(path)
    return hdr is not None and "feature_id" in hdr and any(
        hdr.get(v) == ("feature_id",) for v in ("q_lateral", "streamflow", "qSfcLatRunoff"))


def _guess_chrtout(source: Any) -> bool:
    if isinstance(source, (list, tuple)):
        if not source or not all(isinstance(p, (str, os.PathLike)) for p in source):
            return False
        files = [os.fspath(p) for p in source]
    elif isinstance(source, (str, os.PathLike)):
        p = os.fspath(source)
        if os.path.isdir(p):  # the files read_chrtout would read
            return next(glob.iglob(os.path.join(p, "*CHRTOUT*")), None) is not None
        files = sorted(glob.glob(p)) if _is_glob(p) and not os.path.exists(p) else [p]
        if not files:
            return False
    else:
        return False
    if all("CHRTOUT" in os.path.basename(f) for f in files):
        return True
    return _is_channel_slice(files[0])


def _open_chrtout(source: Any, *, variable: str | None = None) -> xr.DataArray:
    """``variable`` (default ``q_lateral``; ``"a+b"`` sums variables; a file without
    ``q_lateral`` gives ``qSfcLatRunoff+qBucket``) of CHRTOUT slices."""
    var = variable or "q_lateral"
    return read_chrtout(source, (var,))[var]


def _guess_rapid_inflow(source: Any) -> bool:
    hdr = netcdf_header(source)
    return hdr is not None and ("m3_riv" in hdr or "Qext" in hdr)


def _open_rapid_inflow(path: Any, *, interval_s: float | None = None,
                       start: Any = None) -> xr.DataArray:
    return read_rapid_inflow(path, interval_s=interval_s, start=start)


def _is_reach_time(dims: tuple[str, ...]) -> bool:
    return len(dims) == 2 and "time" in dims and any(d in REACH_DIMS for d in dims)


def _guess_netcdf(source: Any) -> bool:
    hdr = netcdf_header(source)
    if hdr is None or "m3_riv" in hdr or "Qext" in hdr:  # RAPID inflow: its own reader
        return False
    return any(_is_reach_time(dims) for dims in hdr.values())


def _read_netcdf_var(path: Any, *, variable: str | None = None) -> xr.DataArray:
    """A ``(reach-like, time)`` NetCDF variable (``variable``, or the only one) as m³/s."""
    import xarray as xr

    with netcdf_guard(path), xr.open_dataset(path) as ds:
        if variable is None:
            cands = [v for v in ds.data_vars if _is_reach_time(ds[v].dims)]
            if len(cands) != 1:
                raise IOFormatError(path, None, f"name the variable to ingest among {cands}")
            variable = cands[0]
        if variable not in ds.variables:
            raise IOFormatError(path, variable, f"missing variable; the file has {list(ds)}")
        da = ds[variable].load()
        dim = next((d for d in da.dims if d in REACH_DIMS), None)
        if dim is None or "time" not in da.dims or da.ndim != 2:
            raise IOFormatError(path, variable, f"needs dims (reach-like, time), got {da.dims}")
        _check_flow_units(da.attrs.get("units"), path, variable)
        ids = da[dim].values if dim in da.coords else None
        if ids is None:  # ids in a variable along the reach dimension
            ids = next((ds[n].values for n in REACH_DIMS
                        if n in ds.variables and ds[n].dims == (dim,)), None)
    if ids is None:
        raise IOFormatError(path, dim, "no reach id coordinate along the reach dimension")
    ids = integer_ids(ids, path, dim)
    check_times(da["time"].values, path, "time")
    da = da.transpose(dim, "time")
    return xr.DataArray(da.values, {"reach": ids, "time": da["time"].values},
                        ("reach", "time"), attrs={"units": "m3 s-1", "source": os.fspath(path)})


def _guess_wide_csv(source: Any) -> bool:
    p = _existing_file(source)
    return p is not None and p.lower().endswith(".csv")


def _read_csv(path: Any) -> xr.DataArray:
    """Wide CSV: header ``time,<id>,<id>,...``; one row per time (ISO 8601), values m³/s."""
    import pandas as pd
    import xarray as xr

    df = pd.read_csv(path)
    if df.columns[0].strip().lower() != "time":
        raise IOFormatError(path, "time", "the first column must be 'time' (ISO 8601)")
    try:
        ids = np.array([int(c) for c in df.columns[1:]], np.int64)
    except ValueError:
        bad = [str(c) for c in df.columns[1:] if not str(c).strip().lstrip("-").isdigit()]
        msg = (f"columns after 'time' must be integer reach ids, got {bad[:5]}"
               f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}")
        raise IOFormatError(path, "header", msg) from None
    t = pd.to_datetime(df.iloc[:, 0]).values.astype("datetime64[ns]")
    check_times(t, path, "time")
    return xr.DataArray(df.iloc[:, 1:].to_numpy(np.float64).T, {"reach": ids, "time": t},
                        ("reach", "time"), attrs={"units": "m3 s-1", "source": os.fspath(path)})


def _has_var(hdr: Mapping[str, Any], key: str) -> bool:
    names = {v.lower() for v in hdr}
    return NTOPO_NAMES[key].lower() in names or any(a in names for a in NTOPO_ALIASES[key])


def _guess_ntopo(source: Any) -> bool:
    if is_control_file(source):
        return True
    hdr = netcdf_header(source)
    return hdr is not None and "link" not in hdr and all(
        _has_var(hdr, k) for k in ("segId", "downSegId", "hruSegId"))


def _open_ntopo(path: Any, *, names: Mapping[str, str] | None = None) -> RiverNetwork:
    """A mizuRoute river network from its NTOPO NetCDF or a control file naming it."""
    return read_mizuroute(path, names=names, with_runoff=False).network


def _open_rapid2(path: Any) -> RiverNetwork:
    """The basin of a RAPID2 namelist, with attributes ``k`` (s) and ``x``."""
    return read_rapid2_namelist(path, read_inputs=False).network


def _guess_mizuroute_runoff(source: Any) -> bool:
    return is_control_file(source) and "fname_qsim" in read_control(source)


def _open_mizuroute_runoff(source: Any, *, ntopo: Any = None,
                           names: Mapping[str, str] | None = None) -> xr.DataArray:
    """mizuRoute's lateral inflow (HRU runoff x area, m³/s) from a control file, or from a
    runoff NetCDF and its ``ntopo`` (NTOPO NetCDF or control file)."""
    if ntopo is None:
        if not is_control_file(source):
            raise IOFormatError(source, None, "a mizuRoute runoff file needs its river network "
                                "for the HRU areas: pass ntopo=NTOPO.nc (or give the control "
                                "file instead)")
        return read_mizuroute(source, names=names).lateral_inflow()
    return read_mizuroute(ntopo, runoff=source, names=names).lateral_inflow()


_NC = "a NetCDF file (" + "/".join(NETCDF_SUFFIXES) + ", or by signature)"

for _reader in (
    Reader("routelink", "network", _guess_routelink, read_routelink,
           "a RouteLink NetCDF (.nc)", f"{_NC} with variables 'link' and 'to' (NWM RouteLink)"),
    Reader("rapid_connect", "network", _guess_rapid_connect, read_rapid_connect,
           "a RAPID rapid_connect CSV (.csv)",
           "a .csv or .txt file whose first line is integers: rivid, downstream rivid "
           "(0 = outlet)[, number upstream, upstream rivids...]"),
    Reader("mizuroute", "network", _guess_ntopo, _open_ntopo,
           "a mizuRoute river network (NTOPO .nc or control file)",
           f"{_NC} with segId, downSegId and hruSegId (or seg_id, Tosegment, seg_hru_id), or "
           "a mizuRoute control file (<fname_ntopOld>)"),
    Reader("rapid2", "network", is_rapid2_namelist, _open_rapid2,
           "a RAPID2 namelist (.yml) and its connectivity, basin, k and x tables",
           "a .yml/.yaml file with the RAPID2 keys con_pqt and bas_pqt"),
    Reader("dataarray", "series", _is_dataarray, _open_dataarray,
           "an xarray.DataArray (reach, time) in m3 s-1", "an xarray.DataArray"),
    Reader("chrtout", "series", _guess_chrtout, _open_chrtout,
           "NWM/WRF-Hydro CHRTOUT time slices (q_lateral by default, else "
           "qSfcLatRunoff+qBucket; variable='a+b' sums)",
           "'CHRTOUT' in the file names (a file, a list, a glob, or a folder holding "
           "*CHRTOUT* files), or a NetCDF time slice with a 1-D q_lateral, streamflow or "
           "qSfcLatRunoff over feature_id"),
    Reader("rapid_inflow", "series", _guess_rapid_inflow, _open_rapid_inflow,
           "a RAPID inflow NetCDF (m3_riv or Qext)", f"{_NC} with a variable m3_riv or Qext"),
    Reader("netcdf", "series", _guess_netcdf, _read_netcdf_var,
           "a (reach-like, time) NetCDF variable",
           f"{_NC} with a 2-D variable over time and one of {', '.join(REACH_DIMS)} (and no "
           "m3_riv/Qext)"),
    Reader("mizuroute_runoff", "series", _guess_mizuroute_runoff, _open_mizuroute_runoff,
           "mizuRoute HRU runoff x HRU area (a control file, or runoff .nc with ntopo=)",
           "a mizuRoute control file naming <fname_ntopOld> and <fname_qsim>"),
    Reader("wide_csv", "series", _guess_wide_csv, _read_csv,
           "a wide CSV: time,<id>,<id>,... (m3 s-1)", "a .csv file"),
):
    register_reader(_reader)
del _reader

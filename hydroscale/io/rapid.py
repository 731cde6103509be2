"""RAPID files: network CSVs, k/x, external inflow NetCDF, Qinit, and Qout/Qfinal writers.

Formats (RAPID, https://github.com/c-h-david/rapid):

* ``rapid_connect.csv``: one row per reach, ``rivid, downstream rivid (0 = outlet)`` followed,
  in the full form, by the number of upstream reaches and their ids (zero-padded); the
  two-column form has only the first two columns.
* ``riv_bas_id.csv``: the rivids of the basin to route, one per line, in RAPID's order;
  ``k.csv`` (s) and ``x.csv`` (-): one value per line in that order.
* Inflow NetCDF: ``m3_riv`` (m³ per interval) or ``Qext`` (m³/s) ``(time, rivid)``, ``rivid``,
  ``time`` (seconds since 1970-01-01, the start of each interval), ``time_bnds``.
* ``Qout`` (CF-1.6, ``featureType = timeSeries``): ``Qout (time, rivid)`` float32 m³/s, mean of
  each interval, ``rivid``, ``time`` and ``time_bnds`` (int s since 1970), ``lon``, ``lat``,
  ``crs``.  ``Qfinal``: the same layout with one instantaneous time, float64; it is what
  RAPID reads back as ``Qinit``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # xarray is imported where a reader runs: the registry loads without it
    import xarray as xr

from ..network import RiverNetwork
from ._common import (
    FLOW_UNITS,
    VOLUME_UNITS,
    IOFormatError,
    check_ids_known,
    check_times,
    check_units,
    integer_ids,
    netcdf_guard,
    require_vars,
)

__all__ = [
    "append_qout",
    "create_qout",
    "read_k",
    "read_qinit",
    "read_qout",
    "read_rapid_connect",
    "read_rapid_inflow",
    "read_riv_bas_id",
    "read_x",
    "write_column",
    "write_qfinal",
    "write_qout",
    "write_rapid_connect",
    "write_rapid_inflow",
]

logger = logging.getLogger(__name__)

TIME_UNITS = "seconds since 1970-01-01 00:00:00 +00:00"
_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


def _read_csv_ints(path: Any) -> np.ndarray:
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise IOFormatError(path, None, f"not a CSV of integers: {err}") from None
    return arr


def read_riv_bas_id(path: Any) -> np.ndarray:
    """``riv_bas_id.csv`` -> int64 [N] rivids (order kept); duplicates are an error."""
    ids = _read_csv_ints(path)[:, 0]
    u, c = np.unique(ids, return_counts=True)
    if (c > 1).any():
        raise IOFormatError(path, "rivid", f"rivids listed twice: {u[c > 1][:5].tolist()}")
    return ids


def read_rapid_connect(path: Any, *, riv_bas_id: Any = None) -> RiverNetwork:
    """Read ``rapid_connect.csv`` (full or two-column form) as a :class:`RiverNetwork`.

    Parameters
    ----------
    path : the CSV file.
    riv_bas_id : optional ``riv_bas_id.csv`` path or int array: route only these reaches, in
        this order (downstream reaches outside the basin become outlets, as in RAPID).

    In the full form the upstream lists must agree with the downstream column; a mismatch is
    an error naming the reaches.
    """
    table = _read_csv_ints(path)
    if table.shape[1] < 2:
        raise IOFormatError(path, "downstream", "needs at least two columns: rivid, downstream")
    ids, down = table[:, 0], table[:, 1]
    if table.shape[1] > 2:
        n_up = table[:, 2]
        width = table.shape[1] - 3
        if (n_up < 0).any() or (n_up > width).any():
            bad = ids[(n_up < 0) | (n_up > width)]
            raise IOFormatError(path, "upstream count", f"impossible counts at rivids {bad[:5]}")
        cols = np.arange(width)
        mask = cols[None, :] < n_up[:, None]
        up = table[:, 3:][mask]
        to = np.repeat(ids, n_up)
        listed = np.sort(up)
        from_down = np.sort(ids[down > 0])
        if listed.size != from_down.size or (listed != from_down).any():
            diff = np.setxor1d(listed, from_down)
            raise IOFormatError(
                path,
                "upstream ids",
                f"upstream lists disagree with the downstream column for rivids "
                f"{diff[:5].tolist()}; fix the file or use the two-column form",
            )
        order = np.argsort(ids)
        down_of_up = down[order[np.searchsorted(ids[order], up)]]
        wrong = up[down_of_up != to]
        if wrong.size:
            raise IOFormatError(
                path, "upstream ids",
                f"rivids {wrong[:5].tolist()} are listed upstream of the wrong reach",
            )
    if riv_bas_id is not None:
        bas = (
            read_riv_bas_id(riv_bas_id)
            if isinstance(riv_bas_id, (str, os.PathLike))
            else np.asarray(riv_bas_id, np.int64)
        )
        check_ids_known(bas, ids, riv_bas_id if isinstance(riv_bas_id, str) else path,
                        "rivid", "rapid_connect file")
        order = np.argsort(ids)
        rows = order[np.searchsorted(ids[order], bas)]
        ids, down = ids[rows], down[rows]
        outside = (down > 0) & ~np.isin(down, ids)
        if outside.any():
            logger.info("%d reaches drain out of the basin: outlets here", int(outside.sum()))
        down = np.where(outside, 0, down)
    else:
        unknown = np.setdiff1d(down[down > 0], ids)
        if unknown.size:
            raise IOFormatError(
                path,
                "downstream",
                f"downstream rivids {unknown[:5].tolist()} are not reaches of the file; "
                "set them to 0 (outlet) or add the reaches",
            )
    return RiverNetwork.from_arrays(ids, down)


def write_rapid_connect(network: RiverNetwork, path: Any, *, form: str = "full") -> None:
    """Write ``rapid_connect.csv`` in ``form`` ``"full"`` (with upstream lists) or ``"two"``."""
    ids, down = network.ids, network.downstream_ids
    if form == "two":
        np.savetxt(path, np.stack([ids, down], 1), fmt="%d", delimiter=",")
        return
    if form != "full":
        raise ValueError(f"form must be 'full' or 'two', got {form!r}")
    ptr, idx = network.upstream_csr
    counts = np.diff(ptr)
    width = int(counts.max()) if counts.size else 0
    ups = np.zeros((ids.size, width), np.int64)
    rows = np.repeat(np.arange(ids.size), counts)
    cols = np.arange(idx.size) - np.repeat(ptr[:-1], counts)
    ups[rows, cols] = ids[idx]
    np.savetxt(path, np.column_stack([ids, down, counts, ups]), fmt="%d", delimiter=",")


def _read_column(path: Any, field: str, n: int | None) -> np.ndarray:
    try:
        v = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)[:, 0]
    except ValueError as err:
        raise IOFormatError(path, field, f"not a CSV of numbers: {err}") from None
    if n is not None and v.size != n:
        raise IOFormatError(
            path, field, f"has {v.size} values for {n} reaches (one per riv_bas_id line)"
        )
    if not np.isfinite(v).all():
        lines = np.flatnonzero(~np.isfinite(v))[:5] + 1
        raise IOFormatError(path, field, f"non-finite values at lines {lines.tolist()}")
    return v


def read_k(path: Any, n: int | None = None) -> np.ndarray:
    """``k.csv`` -> float64 [N] Muskingum k in seconds (must be > 0)."""
    k = _read_column(path, "k", n)
    if (k <= 0).any():
        raise IOFormatError(path, "k", f"k must be > 0 s; lines {np.flatnonzero(k <= 0)[:5] + 1}")
    return k


def read_x(path: Any, n: int | None = None) -> np.ndarray:
    """``x.csv`` -> float64 [N] Muskingum x (0 <= x <= 0.5)."""
    x = _read_column(path, "x", n)
    bad = np.flatnonzero((x < 0) | (x > 0.5))
    if bad.size:
        raise IOFormatError(path, "x", f"x must be in [0, 0.5]; lines {bad[:5] + 1}")
    return x


def write_column(path: Any, values: Any, fmt: str = "%.17g") -> None:
    """Write one value per line (``riv_bas_id.csv``: ``fmt="%d"``, ``k.csv``, ``x.csv``)."""
    np.savetxt(path, np.asarray(values).reshape(-1, 1), fmt=fmt)


def _decode_time(ds: Any, path: Any) -> np.ndarray:
    import netCDF4  # lazy: optional on machines that only route

    var = ds.variables["time"]
    units = getattr(var, "units", None)
    if units is None:
        raise IOFormatError(path, "time", f"missing units (expected {TIME_UNITS!r})")
    dates = netCDF4.num2date(var[:], units, getattr(var, "calendar", "standard"),
                             only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    return np.array([np.datetime64(d.replace(tzinfo=None), "s") for d in np.atleast_1d(dates)])


def _rows_for(file_ids: np.ndarray, network: RiverNetwork | None, path: Any,
              allow_extra: bool) -> np.ndarray:
    if network is None:
        return np.arange(file_ids.size)
    if not allow_extra:
        check_ids_known(file_ids, network.ids, path, "rivid")
    missing = np.setdiff1d(network.ids, file_ids)
    if missing.size:
        raise IOFormatError(path, "rivid", f"reaches of the network missing from the file: "
                            f"{missing[:5].tolist()} ({missing.size} in all)")
    order = np.argsort(file_ids)
    return order[np.searchsorted(file_ids[order], network.ids)]


def read_rapid_inflow(
    path: Any,
    network: RiverNetwork | None = None,
    *,
    allow_extra: bool = False,
    interval_s: float | None = None,
    start: Any = None,
) -> xr.DataArray:
    """Read RAPID external inflow (``m3_riv`` m³/interval or ``Qext`` m³/s) as m³/s.

    Parameters
    ----------
    path : inflow NetCDF with ``rivid``, ``time``, ``time_bnds`` (optional when times are
        regular) and ``m3_riv`` or ``Qext`` ``(time, rivid)``.  Legacy files (ids in
        ``COMID``, dimension ``Time``, no ``time`` variable) need ``interval_s`` and ``start``.
    network : if given, rows follow ``network.ids``; file rivids not in the network are an
        error unless ``allow_extra``; network reaches missing from the file are an error.
    interval_s, start : the interval (s) and the first interval's start (datetime64 or ISO
        string) for files without a ``time`` variable.

    Returns
    -------
    DataArray ``(reach, time)`` float64 m³/s (mean over each interval), ``time`` = interval
    starts; attribute ``interval_s`` (s).
    """
    import netCDF4  # lazy: optional on machines that only route
    import xarray as xr

    with netcdf_guard(path), netCDF4.Dataset(path) as ds:
        id_name = "rivid" if "rivid" in ds.variables else "COMID"
        require_vars(ds, [id_name], path)
        name = "m3_riv" if "m3_riv" in ds.variables else "Qext"
        if name not in ds.variables:
            raise IOFormatError(
                path, "m3_riv/Qext",
                f"missing inflow variable: need m3_riv (m3) or Qext (m3 s-1); the file has "
                f"{sorted(ds.variables)}",
            )
        var = ds.variables[name]
        if len(var.dimensions) != 2 or var.dimensions[1] != ds.variables[id_name].dimensions[0]:
            raise IOFormatError(
                path, name, f"dimensions must be (time, {id_name}), got {var.dimensions}"
            )
        units = getattr(var, "units", None)
        if name == "m3_riv":
            check_units(units, VOLUME_UNITS, path, name, "m3 (volume per interval)")
        else:
            check_units(units, FLOW_UNITS, path, name, "m3 s-1")
        rivid = integer_ids(ds.variables[id_name][:], path, id_name)
        raw = np.asarray(var[:], np.float64).T  # [rivid, time]
        if "time" in ds.variables:
            times = check_times(_decode_time(ds, path), path, "time")
            if "time_bnds" in ds.variables:
                bnds = np.asarray(ds.variables["time_bnds"][:], np.int64)
                widths = np.unique(bnds[:, 1] - bnds[:, 0])
            elif times.size > 1:
                widths = np.unique(np.diff(times).astype("timedelta64[s]").astype(np.int64))
            else:
                raise IOFormatError(path, "time_bnds", "one time and no time_bnds: "
                                    "interval unknown; pass interval_s")
            if interval_s is not None:
                widths = np.array([interval_s])
        else:
            if interval_s is None or start is None:
                raise IOFormatError(path, "time", "no time variable (legacy RAPID file): pass "
                                    "interval_s and start")
            widths = np.array([interval_s])
            step = np.timedelta64(int(round(interval_s)), "s")
            times = np.datetime64(start, "s") + np.arange(raw.shape[1]) * step
    if widths.size != 1 or widths[0] <= 0:
        raise IOFormatError(path, "time_bnds", f"intervals must be equal and > 0, got {widths} s")
    dt = float(widths[0])
    rows = _rows_for(rivid, network, path, allow_extra)
    q = raw[rows] / dt if name == "m3_riv" else raw[rows]
    return xr.DataArray(
        q, {"reach": rivid[rows], "time": times.astype("datetime64[ns]")}, ("reach", "time"),
        name="Qext", attrs={"units": "m3 s-1", "interval_s": dt, "source": os.fspath(path)},
    )


def _seconds(times: Any) -> np.ndarray:
    t = np.asarray(times)
    if t.dtype.kind == "M":
        return (t.astype("datetime64[s]") - _EPOCH).astype(np.int64)
    return t.astype(np.int64)


def _create(path: Any, rivid: np.ndarray, title: str, lon: Any, lat: Any, source: str):
    import netCDF4  # lazy: optional on machines that only route

    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    ds.createDimension("time", None)
    ds.createDimension("rivid", rivid.size)
    ds.createDimension("nv", 2)
    v = ds.createVariable("rivid", "i4", ("rivid",))
    v.long_name, v.units, v.cf_role = "unique identifier for each river reach", "1", "timeseries_id"
    v[:] = rivid
    t = ds.createVariable("time", "i4", ("time",))
    t.standard_name, t.long_name, t.units = "time", "time", TIME_UNITS
    t.calendar, t.axis = "gregorian", "T"
    for name, axis, std, unit, values in (
        ("lon", "X", "longitude", "degrees_east", lon),
        ("lat", "Y", "latitude", "degrees_north", lat),
    ):
        c = ds.createVariable(name, "f8", ("rivid",), fill_value=-9999.0)
        c.standard_name, c.units, c.axis = std, unit, axis
        c.long_name = f"{std} of a point related to each river reach"
        if values is not None:
            c[:] = np.asarray(values, np.float64)
    crs = ds.createVariable("crs", "i4")
    crs.grid_mapping_name = "latitude_longitude"
    crs.semi_major_axis, crs.inverse_flattening = 6378137.0, 298.257223563
    ds.Conventions = "CF-1.6"
    ds.title = title
    ds.institution = ""
    ds.source = source
    ds.history = "date_created: " + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    ds.references = "https://github.com/c-h-david/rapid/, http://dx.doi.org/10.1175/2011JHM1345.1"
    ds.featureType = "timeSeries"
    return ds


def write_qout(
    path: Any,
    qout: Any,
    rivid: Any,
    time: Any,
    dt_s: float,
    *,
    lon: Any = None,
    lat: Any = None,
    title: str = "hydroscale RAPID-mode discharge",
    source: str = "hydroscale",
) -> None:
    """Write a RAPID ``Qout`` file.

    Parameters
    ----------
    qout : ``[N, T]`` m³/s, mean over each interval (rows follow ``rivid``).
    rivid : int [N] reach ids.
    time : [T] interval starts (datetime64, or int seconds since 1970-01-01 UTC).
    dt_s : interval length (s); ``time_bnds = [start, start + dt_s]``.
    lon, lat : optional [N] degrees (else the fill value -9999, as RAPID).
    """
    q = np.asarray(qout, np.float32)
    rivid = np.asarray(rivid, np.int64)
    t = _seconds(time)
    if q.shape != (rivid.size, t.size):
        raise ValueError(f"qout must be [N={rivid.size}, T={t.size}], got {q.shape}")
    ds = create_qout(path, rivid, dt_s, lon=lon, lat=lat, title=title, source=source)
    try:
        append_qout(ds, 0, q, t, dt_s)
    finally:
        ds.close()


def create_qout(path: Any, rivid: Any, dt_s: float, *, lon: Any = None, lat: Any = None,
                title: str = "hydroscale RAPID-mode discharge",
                source: str = "hydroscale") -> Any:
    """Create an empty RAPID ``Qout`` file (``time`` unlimited) and return it open
    (a ``netCDF4.Dataset``: fill it with :func:`append_qout`, then close it)."""
    ds = _create(path, np.asarray(rivid, np.int64), title, lon, lat, source)
    try:
        ds.variables["time"].bounds = "time_bnds"
        ds.createVariable("time_bnds", "i4", ("time", "nv"))
        v = ds.createVariable("Qout", "f4", ("time", "rivid"))
        v.long_name = "average river water discharge downstream of each river reach"
        v.units, v.coordinates, v.grid_mapping = "m3 s-1", "lon lat", "crs"
        v.cell_methods = "time: mean"
    except BaseException:
        ds.close()
        raise
    return ds


def append_qout(ds: Any, start: int, qout: Any, time: Any, dt_s: float) -> None:
    """Write ``qout`` ``[N, t]`` (m³/s, rows in the file's ``rivid`` order) at steps
    ``start:start + t`` of a file made by :func:`create_qout`; ``time`` [t] interval starts."""
    t = _seconds(time)
    q = np.asarray(qout, np.float32)
    end = int(start) + t.size
    ds.variables["time"][start:end] = t
    ds.variables["time_bnds"][start:end] = np.stack([t, t + int(round(dt_s))], 1)
    ds.variables["Qout"][start:end, :] = q.T


def write_qfinal(
    path: Any, qfinal: Any, rivid: Any, time: Any, *, lon: Any = None, lat: Any = None,
    title: str = "hydroscale RAPID-mode final state", source: str = "hydroscale",
) -> None:
    """Write a RAPID ``Qfinal`` file: instantaneous discharge ``[N]`` (m³/s) at ``time``
    (the end of the run); RAPID and :func:`read_qinit` read it back as ``Qinit``."""
    q = np.asarray(qfinal, np.float64).reshape(-1)
    rivid = np.asarray(rivid, np.int64)
    if q.size != rivid.size:
        raise ValueError(f"qfinal must be [N={rivid.size}], got {q.shape}")
    ds = _create(path, rivid, title, lon, lat, source)
    try:
        ds.variables["time"][:] = _seconds(np.atleast_1d(time))
        v = ds.createVariable("Qout", "f8", ("time", "rivid"))
        v.long_name = "instantaneous river water discharge downstream of each river reach"
        v.units, v.coordinates, v.grid_mapping = "m3 s-1", "lon lat", "crs"
        v.cell_methods = "time: point"
        v[0, :] = q
    finally:
        ds.close()


def read_qout(path: Any, network: RiverNetwork | None = None) -> xr.DataArray:
    """Read a RAPID ``Qout`` file as ``(reach, time)`` float32 m³/s (rows per ``network``)."""
    import netCDF4  # lazy: optional on machines that only route
    import xarray as xr

    with netcdf_guard(path), netCDF4.Dataset(path) as ds:
        require_vars(ds, ["Qout", "rivid", "time"], path)
        check_units(getattr(ds.variables["Qout"], "units", None), FLOW_UNITS, path, "Qout",
                    "m3 s-1")
        rivid = integer_ids(ds.variables["rivid"][:], path, "rivid")
        times = check_times(_decode_time(ds, path), path, "time")
        q = np.asarray(ds.variables["Qout"][:]).T
    rows = _rows_for(rivid, network, path, allow_extra=False)
    return xr.DataArray(q[rows], {"reach": rivid[rows], "time": times.astype("datetime64[ns]")},
                        ("reach", "time"), name="Qout", attrs={"units": "m3 s-1"})


def read_qinit(path: Any, network: RiverNetwork | None = None) -> np.ndarray:
    """Initial discharge float64 [N] (m³/s) from a ``Qfinal``-style NetCDF (its last time) or
    a one-column CSV (one value per ``riv_bas_id`` line, RAPID's older ``Qinit`` form)."""
    import netCDF4  # lazy: optional on machines that only route

    p = os.fspath(path)
    if p.endswith(".csv"):
        return _read_column(p, "Qinit", None if network is None else network.n_reaches)
    with netcdf_guard(p), netCDF4.Dataset(p) as ds:
        require_vars(ds, ["Qout", "rivid"], p)
        check_units(getattr(ds.variables["Qout"], "units", None), FLOW_UNITS, p, "Qout",
                    "m3 s-1")
        rivid = integer_ids(ds.variables["rivid"][:], p, "rivid")
        q = np.asarray(ds.variables["Qout"][-1, :], np.float64)
    # a Qinit file covers all reaches of rapid_connect: extra rivids are expected
    return q[_rows_for(rivid, network, p, allow_extra=True)]


def write_rapid_inflow(
    path: Any, qext: Any, rivid: Any, time: Any, dt_s: float, *, as_volume: bool = True,
    lon: Any = None, lat: Any = None,
) -> None:
    """Write a RAPID inflow file from ``qext`` ``[N, T]`` m³/s: ``m3_riv`` (m³ per interval,
    ``as_volume``) or ``Qext`` (m³/s), with ``rivid``, ``time`` (interval starts) and
    ``time_bnds``."""
    q = np.asarray(qext, np.float64)
    rivid = np.asarray(rivid, np.int64)
    t = _seconds(time)
    ds = _create(path, rivid, "RAPID inflow written by hydroscale", lon, lat, "hydroscale")
    try:
        ds.variables["time"].bounds = "time_bnds"
        ds.variables["time"][:] = t
        b = ds.createVariable("time_bnds", "i4", ("time", "nv"))
        b[:] = np.stack([t, t + int(round(dt_s))], 1)
        name = "m3_riv" if as_volume else "Qext"
        v = ds.createVariable(name, "f8", ("time", "rivid"))
        v.units = "m3" if as_volume else "m3 s-1"
        v.long_name = ("accumulated external water volume inflow upstream of each river reach"
                       if as_volume else "external water inflow upstream of each river reach")
        v.coordinates, v.grid_mapping = "lon lat", "crs"
        v[:] = (q * dt_s if as_volume else q).T
    finally:
        ds.close()

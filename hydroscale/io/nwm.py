"""National Water Model files: ``RouteLink.nc``, CHRTOUT time slices, USGS time slices.

* :func:`read_routelink` -> :class:`~hydroscale.network.RiverNetwork` (``link`` -> ``to``) with
  the per-link attributes renamed to hydroscale names and units (length m, musk s, ...).  A
  RouteLink *subset* (t-route's test domains) whose ``to`` links lie outside the file is read
  with those links' upstream neighbours as outlets, listed in a warning.
* :func:`read_chrtout` -> ``xarray.Dataset`` of ``(reach, time)`` variables (``q_lateral``,
  ``streamflow``; m³/s) from hourly ``*.CHRTOUT_DOMAIN1`` files, rows in a given reach order.
  A variable may be a sum (``"qSfcLatRunoff+qBucket"``); ``q_lateral`` is derived that way from
  WRF-Hydro files that do not carry it.
* :func:`boundary_inflow` -> the ``streamflow`` that enters a RouteLink subset from the links
  upstream of it (read from a CHRTOUT series), per reach of the subset.
* :func:`read_usgs_timeslices` -> ``xarray.Dataset`` ``(station, time)`` of 15-minute
  observations (``discharge`` m³/s, ``quality`` 0..1); :func:`gauge_table` and
  :func:`observations_at_reaches` join stations to reaches through RouteLink ``gages``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # xarray is imported where a reader runs: the registry loads without it
    import xarray as xr

from ..network import RiverNetwork, format_ids
from ._common import (
    FLOW_UNITS,
    LENGTH_UNITS,
    SECOND_UNITS,
    IOFormatError,
    as_path_list,
    check_times,
    check_units,
    decode_strings,
    integer_ids,
    netcdf_guard,
    require_vars,
)

__all__ = [
    "LATERAL_PARTS",
    "ROUTELINK_ATTRS",
    "boundary_inflow",
    "gauge_table",
    "iter_chrtout",
    "observations_at_reaches",
    "read_chrtout",
    "read_routelink",
    "read_usgs_timeslices",
]

logger = logging.getLogger(__name__)

#: RouteLink variable -> (hydroscale attribute, accepted units or None)
ROUTELINK_ATTRS: dict[str, tuple[str, frozenset[str] | None]] = {
    "Length": ("length", LENGTH_UNITS),  # m
    "So": ("slope", None),  # m/m
    "n": ("manning_n", None),
    "MusK": ("musk", SECOND_UNITS),  # s
    "MusX": ("musx", None),
    "BtmWdth": ("bottom_width", LENGTH_UNITS),  # m
    "TopWdth": ("top_width", LENGTH_UNITS),  # m
    "ChSlp": ("side_slope", None),
    "order": ("order", None),
    "alt": ("altitude", LENGTH_UNITS),  # m
    "lat": ("lat", None),
    "lon": ("lon", None),
    "NHDWaterbodyComID": ("waterbody", None),
    "gages": ("gages", None),
}


#: the WRF-Hydro CHRTOUT variables whose sum is NWM's ``q_lateral`` (m³/s): surface and
#: subsurface runoff from terrain routing, and the groundwater bucket's outflow
LATERAL_PARTS = ("qSfcLatRunoff", "qBucket")


def read_routelink(
    path: Any, *, attrs: Mapping[str, tuple[str, frozenset[str] | None]] | None = None,
    closed: bool = False,
) -> RiverNetwork:
    """Read an NWM ``RouteLink.nc`` as a river network.

    Parameters
    ----------
    path : the RouteLink NetCDF file.
    attrs : RouteLink variable -> (attribute name, accepted units); default
        :data:`ROUTELINK_ATTRS`.  Variables absent from the file are skipped.
    closed : refuse a subset (``to`` links that are not in ``link``) instead of cutting it.

    Returns
    -------
    RiverNetwork with ids = ``link`` (NHD COMIDs) in file order, outlets where ``to`` is 0
    or names a link outside the file (a RouteLink subset, as t-route's test domains are:
    a ``UserWarning`` gives their count and first ids; :func:`boundary_inflow` reads what
    enters the subset from upstream), and attributes ``length`` (m), ``slope`` (m/m),
    ``manning_n``, ``musk`` (s), ``musx``, ``gages`` (USGS station ids as stripped strings,
    ``""`` for ungauged reaches), ``lat``, ``lon`` (degrees) and the others of
    :data:`ROUTELINK_ATTRS` that the file holds.
    """
    import xarray as xr

    attrs = ROUTELINK_ATTRS if attrs is None else attrs
    with netcdf_guard(path), xr.open_dataset(path, decode_times=False) as ds:
        require_vars(ds, ["link", "to"], path)
        link = integer_ids(ds["link"].values, path, "link")
        to = integer_ids(ds["to"].values, path, "to", "downstream ids")
        values: dict[str, np.ndarray] = {}
        for var, (name, units) in attrs.items():
            if var not in ds.variables:
                continue
            if units is not None:
                check_units(ds[var].attrs.get("units"), units, path, var, sorted(units)[0])
            v = ds[var].values
            values[name] = decode_strings(v) if v.dtype.kind in "SOU" else v
    not_ids = np.unique(link[link <= 0])
    if not_ids.size:
        one = not_ids.size == 1
        raise IOFormatError(
            path, "link",
            f"link{'' if one else 's'} {not_ids[0] if one else not_ids[:5].tolist()} "
            f"{'is not a valid reach id' if one else 'are not valid reach ids'}: 0 in `to` "
            "marks an outlet (as does any negative value), so no reach could drain into "
            f"{'it' if one else 'them'}; renumber {'that reach' if one else 'those reaches'} "
            "(any unused positive id, and the `to` values pointing at it)"
        )
    cut = (to > 0) & ~np.isin(to, link)
    if cut.any():
        missing_to = np.unique(to[cut])
        if closed:
            raise IOFormatError(
                path, "to",
                f"downstream links {format_ids(missing_to)} are not in `link`; the RouteLink "
                "subset is not closed: read it with closed=False (they become outlets), set "
                "them to 0 or add the links")
        warnings.warn(
            f"{path}: RouteLink subset: {int(cut.sum())} links drain to {missing_to.size} "
            f"`to` links outside the file and are outlets here: links "
            f"{format_ids(link[cut], 5)} -> {format_ids(missing_to, 5)}; inflow from links "
            "upstream of the subset is not included unless you add "
            "hydroscale.io.nwm.boundary_inflow(network, CHRTOUT files, routelink=FULL.nc)",
            UserWarning, stacklevel=2)
        to = np.where(cut, 0, to)
    net = RiverNetwork.from_arrays(link, to, **values)
    logger.info("read %s: %d reaches, %d outlets", path, net.n_reaches, net.outlets.size)
    return net


def _order_rows(ids: np.ndarray, reach_ids: np.ndarray | None, path: str) -> np.ndarray:
    """Row index into ``ids`` for every id of ``reach_ids`` (all must be present)."""
    if reach_ids is None:
        return np.arange(ids.size)
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], reach_ids)
    pos = np.clip(pos, 0, ids.size - 1)
    found = ids[order][pos] == reach_ids
    if not found.all():
        raise IOFormatError(
            path,
            "feature_id",
            f"reaches {reach_ids[~found][:5].tolist()} ({int((~found).sum())} in all) of the "
            "network are missing from the file; use the matching network or subset it",
        )
    return order[pos]


def read_chrtout(
    paths: Any,
    variables: Sequence[str] = ("q_lateral", "streamflow"),
    *,
    reach_ids: Any = None,
    dtype: Any = np.float32,
) -> xr.Dataset:
    """Read NWM CHRTOUT time slices (one file per time) into ``(reach, time)`` arrays.

    Parameters
    ----------
    paths : a directory (``*CHRTOUT*`` files sorted by name), a glob, or a list of files in
        increasing time order.
    variables : flow variables to read (units must be m³/s); ``"a+b"`` reads the sum of ``a``
        and ``b`` (e.g. ``"qSfcLatRunoff+qBucket"``), and ``q_lateral`` in a file without it
        but with both :data:`LATERAL_PARTS` (WRF-Hydro output) is their sum.
    reach_ids : optional int64 [N]: the rows, in this order (e.g. ``network.ids``); every id
        must be in every file (extra file reaches are dropped).  Default: the first file's
        ``feature_id`` order.
    dtype : dtype of the returned values (float32 by default; CHRTOUT stores 0.01-0.1 m³/s
        packed integers).

    Returns
    -------
    Dataset with ``variables`` ``[reach, time]`` (m³/s; NaN where the file holds its fill
    value, e.g. NWM ``streamflow`` on lake reaches), coordinates ``reach`` (ids) and ``time``
    (datetime64, the file's valid time: ``q_lateral`` is the mean over the hour ending there,
    ``streamflow`` the instantaneous value).  All files are read into memory.
    """
    import xarray as xr

    files = as_path_list(paths, "*CHRTOUT*")
    rows = None if reach_ids is None else np.asarray(reach_ids, dtype=np.int64)
    times: list[np.datetime64] = []
    data: dict[str, list[np.ndarray]] = {v: [] for v in variables}
    for _, ids, t, values in iter_chrtout(files, variables, reach_ids=rows, dtype=dtype):
        rows = ids
        times.append(t)
        for v in variables:
            data[v].append(values[v])
    out = xr.Dataset(
        {v: (("reach", "time"), np.stack(data[v], axis=1)) for v in variables},
        coords={"reach": rows, "time": np.array(times, dtype="datetime64[ns]")},
    )
    for v in variables:
        out[v].attrs["units"] = "m3 s-1"
    out.attrs["source"] = f"NWM CHRTOUT ({len(files)} files from {files[0]})"
    return out


def iter_chrtout(
    paths: Any,
    variables: Sequence[str] = ("q_lateral",),
    *,
    reach_ids: Any = None,
    dtype: Any = np.float32,
) -> Iterator[tuple[str, np.ndarray, np.datetime64, dict[str, np.ndarray]]]:
    """Stream CHRTOUT files one at a time (for ingesting more than fits in memory).

    Yields ``(path, reach ids [N], time, {variable: values [N]})`` with rows in ``reach_ids``
    order (default: the first file's); checks variables, units, ids and that each file's time
    is later than the previous one (the error names the file).
    """
    import xarray as xr

    files = as_path_list(paths, "*CHRTOUT*")
    rows = None if reach_ids is None else np.asarray(reach_ids, dtype=np.int64)
    last: np.datetime64 | None = None
    for f in files:
        with netcdf_guard(f), xr.open_dataset(f) as ds:
            parts = {v: _parts(v, ds.variables, f) for v in variables}
            require_vars(ds, ["feature_id", "time", *{p for ps in parts.values() for p in ps}],
                         f)
            ids = ds["feature_id"].values.astype(np.int64)
            if rows is None:
                rows = ids
            idx = _order_rows(ids, rows, f)
            t = np.atleast_1d(ds["time"].values)
            if t.size != 1:
                raise IOFormatError(f, "time", f"a CHRTOUT slice holds one time, got {t.size}")
            t0 = t[0].astype("datetime64[ns]")
            if last is not None and t0 <= last:
                what = "duplicated" if t0 == last else "not sorted"
                raise IOFormatError(
                    f, "time",
                    f"times are {what}: {t0} follows {last}; pass one file per time step, "
                    "in increasing time",
                )
            last = t0
            values = {}
            for v in variables:
                total = None
                for p in parts[v]:
                    check_units(ds[p].attrs.get("units"), FLOW_UNITS, f, p, "m3 s-1")
                    arr = np.asarray(ds[p].values, np.float64)
                    if arr.ndim == 2:  # (time, feature_id) layout
                        arr = arr[0]
                    total = arr if total is None else total + arr
                values[v] = total[idx].astype(dtype)
        yield f, rows, t0, values


def _parts(variable: str, have: Any, path: Any) -> list[str]:
    """The file variables whose sum is ``variable``: ``"a+b"`` -> ``[a, b]``; ``q_lateral``
    absent from a WRF-Hydro file -> :data:`LATERAL_PARTS` (logged); else ``[variable]``."""
    parts = [p.strip() for p in variable.split("+")]
    if not all(parts):
        raise ValueError(f"variable {variable!r}: expected NAME or NAME+NAME+..., e.g. "
                         "'qSfcLatRunoff+qBucket'")
    if parts == ["q_lateral"] and "q_lateral" not in have and all(p in have for p in
                                                                    LATERAL_PARTS):
        logger.info("%s: no q_lateral: using %s (WRF-Hydro output)", path,
                    "+".join(LATERAL_PARTS))
        return list(LATERAL_PARTS)
    if parts == ["q_lateral"] and "q_lateral" not in have:
        raise IOFormatError(
            path, "q_lateral",
            f"missing variable q_lateral, and it cannot be derived as "
            f"{'+'.join(LATERAL_PARTS)} (missing "
            f"{[p for p in LATERAL_PARTS if p not in have]}); the file has {sorted(have)}; "
            "name the lateral inflow variable(s) with variable= (--variable), e.g. 'a+b'")
    return parts


def boundary_inflow(
    network: RiverNetwork,
    chrtout: Any,
    *,
    routelink: Any,
    variable: str = "streamflow",
    dtype: Any = np.float64,
) -> xr.DataArray:
    """The discharge that enters a RouteLink subset from upstream, as lateral inflow.

    A subset (e.g. one basin cut out of the NWM domain) misses the links upstream of it whose
    ``to`` is inside it: their discharge enters the subset at the upstream end of that ``to``
    link, exactly where hydroscale lets lateral inflow enter.  This reads the boundary links
    from a larger RouteLink (``routelink``: the full domain or any superset; its links that
    are outside ``network`` and whose ``to`` is inside it) and their ``streamflow`` from the
    CHRTOUT series, and sums it per receiving reach.  Add the result to the subset's
    ``q_lateral`` (same rows, same times) before routing.

    CHRTOUT ``streamflow`` is the instantaneous discharge at each file's valid time, while a
    lateral inflow is the mean over the interval that ends there: the mean over interval k
    is taken as the trapezoid ``(Q[k-1] + Q[k]) / 2`` (exact for discharge linear over the
    hour, as NWM's Muskingum-Cunge assumes between its time levels); the first interval,
    with no earlier value, takes ``Q[0]``.

    Parameters
    ----------
    network : the subset, N reaches (e.g. :func:`read_routelink` of the subset file).
    chrtout : CHRTOUT files (a folder, glob or list, as :func:`read_chrtout`) holding every
        boundary link.
    routelink : the larger RouteLink NetCDF (``link``, ``to``) holding the boundary links.
    variable : the CHRTOUT discharge variable (m³/s).
    dtype : dtype of the result.

    Returns
    -------
    DataArray ``(reach, time)`` [N, T] in m³/s, rows in ``network.ids`` order, ``time`` the
    CHRTOUT valid times (interval ends, as :func:`read_chrtout`), zero on reaches no
    boundary link drains into; attribute ``boundary_links`` (int64 [B], the links read).
    """
    import xarray as xr

    with netcdf_guard(routelink), xr.open_dataset(routelink, decode_times=False) as ds:
        require_vars(ds, ["link", "to"], routelink)
        link = integer_ids(ds["link"].values, routelink, "link")
        to = integer_ids(ds["to"].values, routelink, "to", "downstream ids")
    inside = np.isin(to, network.ids) & ~np.isin(link, network.ids)
    links, into = link[inside], to[inside]
    files = as_path_list(chrtout, "*CHRTOUT*")
    if not links.size:
        logger.info("boundary_inflow: no link of %s outside the subset drains into it",
                    routelink)
    ds_q = read_chrtout(files, (variable,), reach_ids=links if links.size else None,
                        dtype=np.float64)
    times = ds_q["time"].values
    out = np.zeros((network.n_reaches, times.size), np.float64)
    if links.size:
        q = ds_q[variable].values  # [B, T] instantaneous at the interval ends
        bad = ~np.isfinite(q)
        if bad.any():
            b, t = (int(v) for v in np.argwhere(bad)[0])
            raise IOFormatError(
                files[t], variable,
                f"{int(bad.sum())} missing (fill) values of boundary links, e.g. link "
                f"{int(links[b])} at {times[t]}: boundary inflow needs the discharge of every "
                "link that drains into the subset")
        mean = q.copy()
        mean[:, 1:] = 0.5 * (q[:, 1:] + q[:, :-1])
        np.add.at(out, network.index_of(into), mean)
        logger.info("boundary_inflow: %d links upstream of the subset drain into %d reaches",
                    links.size, np.unique(into).size)
    return xr.DataArray(
        out.astype(dtype), {"reach": network.ids, "time": times}, ("reach", "time"),
        name="boundary_inflow",
        attrs={"units": "m3 s-1", "boundary_links": links,
               "source": f"{variable} of {links.size} boundary links in {files[0]} .. "
                         f"{files[-1]}"})


def read_usgs_timeslices(paths: Any, *, min_quality: float = 0.01) -> xr.Dataset:
    """Read NWM USGS time slices (``*.usgsTimeSlice.ncdf``) into ``(station, time)`` arrays.

    Parameters
    ----------
    paths : a directory (``*usgsTimeSlice*`` files sorted by name), a glob, or a list of files
        in increasing time order.
    min_quality : observations with ``discharge_quality / 100`` below this are NaN.

    Returns
    -------
    Dataset with ``discharge`` ``[station, time]`` (m³/s, NaN = no observation) and
    ``quality`` (0..1), coordinates ``station`` (stripped USGS ids, sorted) and ``time``
    (each slice's ``sliceCenterTimeUTC``; records within the slice window are placed there).
    """
    import xarray as xr

    files = as_path_list(paths, "*usgsTimeSlice*")
    recs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    centers = []
    for f in files:
        with netcdf_guard(f), xr.open_dataset(f, decode_times=False) as ds:
            require_vars(ds, ["stationId", "discharge"], f)
            check_units(ds["discharge"].attrs.get("units"), FLOW_UNITS, f, "discharge", "m3 s-1")
            center = ds.attrs.get("sliceCenterTimeUTC")
            if center is None:
                raise IOFormatError(f, "sliceCenterTimeUTC", "missing global attribute")
            centers.append(np.datetime64(str(center).replace("_", "T"), "ns"))
            st = decode_strings(ds["stationId"].values)
            q = ds["discharge"].values.astype(np.float64)
            qual = (
                ds["discharge_quality"].values.astype(np.float64) / 100.0
                if "discharge_quality" in ds.variables
                else np.ones_like(q)
            )
            recs.append((st, q, qual))
    t = check_times(np.array(centers), f"{files[0]} .. {files[-1]}", "sliceCenterTimeUTC")
    stations = np.unique(np.concatenate([r[0] for r in recs]))
    dis = np.full((stations.size, t.size), np.nan)
    qual = np.zeros((stations.size, t.size))
    for j, (st, q, ql) in enumerate(recs):
        i = np.searchsorted(stations, st)
        dis[i, j] = np.where(ql >= min_quality, q, np.nan)
        qual[i, j] = ql
    return xr.Dataset(
        {
            "discharge": (("station", "time"), dis, {"units": "m3 s-1"}),
            "quality": (("station", "time"), qual),
        },
        coords={"station": stations, "time": t},
        attrs={"source": f"USGS time slices ({len(files)} files from {files[0]})"},
    )


def gauge_table(network: RiverNetwork) -> tuple[np.ndarray, np.ndarray]:
    """``(station ids [G] str, reach ids [G] int64)`` of the gauged reaches (``gages`` != "")."""
    if "gages" not in network.attrs:
        raise KeyError("the network has no 'gages' attribute; read it with read_routelink")
    g = np.asarray(network.attrs["gages"]).astype(str)
    has = np.flatnonzero(np.char.strip(g) != "")
    return np.char.strip(g[has]), network.ids[has]


def observations_at_reaches(obs: xr.Dataset | xr.DataArray, network: RiverNetwork) -> xr.DataArray:
    """USGS ``discharge`` ``(station, time)`` -> ``(reach, time)`` on the gauged reaches.

    Stations without a gauged reach are dropped; the result has a ``station`` coordinate
    along ``reach``.  Gauged reaches without observations are all-NaN rows.
    """
    import xarray as xr

    da = obs["discharge"] if isinstance(obs, xr.Dataset) else obs
    stations, reaches = gauge_table(network)
    have = np.isin(stations, da["station"].values)
    out = da.reindex(station=stations).rename(station="reach")
    out = out.assign_coords(reach=reaches, station=("reach", stations))
    logger.info("%d of %d gauged reaches have observations", int(have.sum()), stations.size)
    return out

"""mizuRoute inputs: the river network NetCDF (NTOPO), HRU runoff and the control file.

Formats as mizuRoute documents them (users' guide, "Input files" and "Control file", v3):

* **NTOPO** (``<fname_ntopOld>``): dimensions ``seg`` and ``hru``; ``segId`` (seg, int, > 0),
  ``downSegId`` (seg: the downstream reach; ``<= 0``, e.g. 0 or -9999, = no downstream reach),
  ``HRUid`` (hru), ``hruSegId`` (hru: the reach the HRU drains into; ``<= 0`` = none),
  ``area`` (hru, m²), ``length`` (seg, m), ``slope`` (seg, m/m).  Other names are given in the
  control file with ``<varname_segId>``, ``<varname_downSegId>``, ``<varname_hruSegId>``,
  ``<varname_HRUid>``, ``<varname_area>``, ``<varname_length>``, ``<varname_slope>``.
* **Runoff** (``<fname_qsim>``, option 1: runoff given on the river network's HRUs):
  ``<vname_qsim>`` (default ``runoff``) over (``<dname_time>``, ``<dname_hruid>``), a depth
  rate in ``<units_qsim>`` or its ``units`` attribute (``mm/s``, ``mm/d``, ``m/s``, ``mm/h``,
  ...), HRU ids in ``<vname_hruid>`` (default ``hru``), times in ``<vname_time>`` marking
  the ``<ro_time_stamp>`` (start, the default, middle or end) of each ``<dt_ro>`` interval.
* **Control file**: lines ``<key>   value   ! comment``; ``!`` starts a comment.  Paths are
  ``<ancil_dir>`` + ``<fname_ntopOld>`` and ``<input_dir>`` + ``<fname_qsim>``, relative to the
  working directory as mizuRoute takes them, else to the control file's folder or its parent.

mizuRoute's lateral inflow of a reach (its ``instRunoff``) is the runoff of the HRUs that drain
into it times their areas: ``r_j = Σ_{h → j} area_h · q_h`` (m² · m/s = m³/s).  Remapping
hydrologic-model HRUs or grids to the network's HRUs (``<is_remap> T``, options 2 and 3) is not
read here: build a :class:`~hydroscale.models.CatchmentInterpolator` from the weights instead.

Many NTOPO files use other names (mizuRoute's test cases: ``seg_id``, ``Tosegment``,
``seg_hru_id``, ``hruid``, ``Basin_Area``); a name absent from the file is looked up among
:data:`NTOPO_ALIASES` (case-insensitive) before it is an error that lists the file's variables.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

from ..network import RiverNetwork, format_ids
from ._common import IOFormatError, check_times, integer_ids, netcdf_guard, resolve_path

__all__ = [
    "NTOPO_ALIASES",
    "NTOPO_NAMES",
    "RUNOFF_NAMES",
    "MizuRouteCase",
    "depth_rate_factor",
    "is_control_file",
    "read_control",
    "read_mizuroute",
    "read_ntopo",
]

logger = logging.getLogger(__name__)

#: NTOPO variables: hydroscale key (the control file's ``<varname_KEY>``) -> default name
NTOPO_NAMES = {"segId": "segId", "downSegId": "downSegId", "hruSegId": "hruSegId",
               "HRUid": "HRUid", "area": "area", "length": "length", "slope": "slope"}
#: other names found in NTOPO files (matched case-insensitively when the default is absent)
NTOPO_ALIASES = {"segId": ("seg_id", "segid", "seg"), "downSegId": ("tosegment", "to_segment",
                                                                     "downsegid"),
                 "hruSegId": ("seg_hru_id", "hru_seg_id", "hrusegid"),
                 "HRUid": ("hruid", "hru_id", "hru"), "area": ("basin_area", "hru_area"),
                 "length": ("length",), "slope": ("slope",)}
#: runoff file names: key (control ``<vname_KEY>`` / ``<dname_KEY>``) -> default
RUNOFF_NAMES = {"qsim": "runoff", "hruid": "hru", "time": "time"}
#: keys a name mapping may hold: the NTOPO and runoff keys and these control keys
OTHER_KEYS = ("units_qsim", "dt_ro", "ro_time_stamp")

_DEPTH = {"m": 1.0, "mm": 1.0e-3}
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "h": 3600.0, "hr": 3600.0,
        "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0}
_AREA = {"m2": 1.0, "m^2": 1.0, "m**2": 1.0, "square meters": 1.0, "km2": 1.0e6, "km^2": 1.0e6,
         "km**2": 1.0e6}


# ------------------------------------------------------------------------ control file
def read_control(path: Any) -> dict[str, str]:
    """A mizuRoute control file as ``{key: value}`` (keys without ``<>``, values stripped;
    ``!`` starts a comment; a line that is not ``<key> value`` is an error naming it)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            text = line.split("!", 1)[0].strip()
            if not text:
                continue
            m = re.fullmatch(r"<([^<>\s]+)>\s+(.+)", text)
            if m is None:
                raise IOFormatError(path, f"line {n}", f"expected '<key>  value  ! comment', "
                                    f"got {line.strip()!r}")
            out[m.group(1)] = m.group(2).strip()
    return out


def is_control_file(source: Any) -> bool:
    """A text file whose first ``<key>`` lines look like a mizuRoute control file (it names
    ``<fname_ntopOld>``); read only up to 64 kB."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.isfile(os.fspath(source)):
        return False
    with open(os.fspath(source), "rb") as f:
        head = f.read(65536)
    if b"\0" in head:
        return False
    return b"<fname_ntopOld>" in head


def _names_from(control: Mapping[str, str] | None, names: Mapping[str, str] | None) -> dict:
    """Variable names: defaults, then the control file's ``<varname_*>``/``<vname_*>``/
    ``<dname_*>``, then ``names`` (keys of :data:`NTOPO_NAMES`, :data:`RUNOFF_NAMES`,
    ``units_qsim``, ``dt_ro``, ``ro_time_stamp``)."""
    out: dict[str, Any] = {**NTOPO_NAMES, **RUNOFF_NAMES}
    given: set[str] = set()
    if control:
        for key in NTOPO_NAMES:
            if f"varname_{key}" in control:
                out[key] = control[f"varname_{key}"]
                given.add(key)
        for key in RUNOFF_NAMES:
            if f"vname_{key}" in control:
                out[key] = control[f"vname_{key}"]
                given.add(key)
        if "dname_hruid" in control:
            out["dname_hruid"] = control["dname_hruid"]
        if "dname_time" in control:
            out["dname_time"] = control["dname_time"]
        for key in OTHER_KEYS:
            if key in control:
                out[key] = control[key]
        if "dt_rof" in control and "dt_ro" not in out:  # an older spelling
            out["dt_ro"] = control["dt_rof"]
    for key, value in (names or {}).items():
        known = (*NTOPO_NAMES, *RUNOFF_NAMES, *OTHER_KEYS, "dname_hruid", "dname_time")
        if key not in known:
            raise ValueError(f"names: unknown key {key!r}; keys are {list(known)} (mizuRoute's "
                             "control keys without varname_/vname_)")
        out[key] = value
        given.add(key)
    out["_given"] = given
    return out


def _find(ds: Any, key: str, names: dict, path: Any, required: bool = True) -> str | None:
    """The file variable holding ``key``: its given name, else the default or one alias."""
    name = names[key]
    if name in ds.variables:
        return name
    if key in names["_given"]:
        raise IOFormatError(path, name, f"missing variable (named for {key}); the file has "
                            f"{sorted(ds.variables)}")
    lower = {v.lower(): v for v in ds.variables}
    hits = [lower[a] for a in NTOPO_ALIASES.get(key, ()) if a in lower]
    if len(hits) >= 1:
        logger.debug("%s: %s read from %r", path, key, hits[0])
        return hits[0]
    if not required:
        return None
    raise IOFormatError(
        path, name,
        f"missing variable {name!r} ({key}); the file has {sorted(ds.variables)}: name it "
        f"with the control file's <varname_{key}> or names={{{key!r}: 'NAME'}}")


# ------------------------------------------------------------------------ units
def depth_rate_factor(units: Any, where: Any, field: str) -> float:
    """Metres per second in one unit of a runoff depth rate (``mm/s`` -> 1e-3, ``mm/d`` ->
    1e-3/86400; also ``mm s-1``, ``m d-1``, ``kg m-2 s-1`` = mm/s of water)."""
    u = str(units).strip().lower()
    if u in ("kg m-2 s-1", "kg/m2/s", "kg m^-2 s^-1", "kg/m^2/s"):
        return 1.0e-3
    m = re.fullmatch(r"(mm|m)\s*(?:/\s*|\s+)([a-z]+?)(?:\s*\^?-1|\*\*-1)?", u)
    if m is None or m.group(2) not in _PER:
        raise IOFormatError(
            where, field,
            f"runoff units {units!r} are not a depth per time: expected DEPTH/TIME with DEPTH "
            "m or mm and TIME s, h or d (mm/s, mm/d, m/s, mm s-1, kg m-2 s-1); set the "
            "variable's units attribute or <units_qsim>")
    return _DEPTH[m.group(1)] / _PER[m.group(2)]


def _area_factor(units: Any, where: Any, field: str) -> float:
    if units is None:
        logger.info("%s [%s]: no units: taken as m2 (mizuRoute's unit)", where, field)
        return 1.0
    u = str(units).strip().lower()
    if u not in _AREA:
        raise IOFormatError(where, field, f"HRU area units {units!r}: expected m2 (or km2)")
    return _AREA[u]


# ------------------------------------------------------------------------ the case
@dataclass(frozen=True)
class MizuRouteCase:
    """A mizuRoute case read by :func:`read_mizuroute`.

    Attributes
    ----------
    network : the reaches (``segId`` order), attributes ``length`` (m) and ``slope`` (m/m)
        when the file has them.
    hru_ids : int64 [H] the HRUs that drain into a reach of the network.
    hru_reach : int64 [H] the reach id each drains into.
    hru_area_m2 : float64 [H] their areas (m²).
    runoff : DataArray ``(hru, time)`` [H, T] of runoff depth rate in m/s (rows = ``hru_ids``,
        ``time`` = interval starts), or None when no runoff was read.
    interval_s : runoff interval (s), or None.
    source : what was read, for messages.
    """

    network: RiverNetwork
    hru_ids: np.ndarray
    hru_reach: np.ndarray
    hru_area_m2: np.ndarray
    runoff: xr.DataArray | None = None
    interval_s: float | None = None
    source: str = ""

    def lateral_inflow(self) -> xr.DataArray:
        """mizuRoute's ``instRunoff``: ``r_j = Σ_{h → j} area_h · q_h`` as a ``(reach, time)``
        DataArray [N, T] of m³/s interval means (float64, rows in ``network.ids`` order)."""
        import xarray as xr

        if self.runoff is None:
            raise ValueError(f"{self.source}: no runoff was read: pass runoff= (or a control "
                             "file naming <fname_qsim>)")
        flux = self.runoff.values * self.hru_area_m2[:, None]  # [H, T] m³/s
        out = np.zeros((self.network.n_reaches, flux.shape[1]))
        np.add.at(out, self.network.index_of(self.hru_reach), flux)
        return xr.DataArray(out, {"reach": self.network.ids,
                                  "time": self.runoff["time"].values}, ("reach", "time"),
                            name="instRunoff",
                            attrs={"units": "m3 s-1", "interval_s": self.interval_s,
                                   "source": self.source})

    def runoff_depth_mm(self) -> np.ndarray:
        """Runoff depth per interval, float64 [H, T] in mm (what
        :class:`~hydroscale.models.CatchmentInterpolator` takes)."""
        if self.runoff is None or self.interval_s is None:
            raise ValueError(f"{self.source}: no runoff was read")
        return self.runoff.values * 1.0e3 * self.interval_s


def read_ntopo(path: Any, *, names: Mapping[str, str] | None = None,
               control: Mapping[str, str] | None = None) -> MizuRouteCase:
    """Read a mizuRoute river network NetCDF (see the module docstring) without runoff.

    Outlets: ``downSegId <= 0`` (0, -9999: mizuRoute's markers) or a reach id absent from
    the file (a subset; those are listed in a ``UserWarning``).  HRUs whose ``hruSegId`` is
    ``<= 0`` or not a reach of the file drain nowhere and are left out (logged).
    """
    import xarray as xr

    nm = _names_from(control, names)
    with netcdf_guard(path), xr.open_dataset(path, decode_times=False) as ds:
        seg_v = _find(ds, "segId", nm, path)
        down_v = _find(ds, "downSegId", nm, path)
        seg = integer_ids(ds[seg_v].values, path, seg_v)
        down = integer_ids(ds[down_v].values, path, down_v, "downstream ids")
        attrs = {}
        for key in ("length", "slope"):
            v = _find(ds, key, nm, path, required=False)
            if v is not None and ds[v].dims == ds[seg_v].dims:
                attrs[key] = np.asarray(ds[v].values, np.float64)
        hru_v = _find(ds, "HRUid", nm, path)
        hseg_v = _find(ds, "hruSegId", nm, path)
        area_v = _find(ds, "area", nm, path)
        hru = integer_ids(ds[hru_v].values, path, hru_v)
        hseg = integer_ids(ds[hseg_v].values, path, hseg_v, "reach ids")
        area = np.asarray(ds[area_v].values, np.float64) * _area_factor(
            ds[area_v].attrs.get("units"), path, area_v)
    bad = ~np.isfinite(area) | (area < 0)
    if bad.any():
        raise IOFormatError(path, area_v, f"HRU areas must be finite and >= 0; HRUs "
                            f"{format_ids(hru[bad])} have {format_ids(area[bad])}")
    cut = (down > 0) & ~np.isin(down, seg)
    if cut.any():
        warnings.warn(
            f"{path}: {int(cut.sum())} reaches drain to {np.unique(down[cut]).size} "
            f"{down_v} ids that are not reaches of the file and are outlets here: reaches "
            f"{format_ids(seg[cut], 5)} -> {format_ids(np.unique(down[cut]), 5)}",
            UserWarning, stacklevel=2)
    down = np.where(cut | (down <= 0), 0, down)
    net = RiverNetwork.from_arrays(seg, down, **attrs)
    drains = np.isin(hseg, seg)
    if not drains.all():
        logger.warning("%s: %d HRUs drain into no reach of the file (%s <= 0 or unknown): "
                       "their runoff is left out: HRUs %s", path, int((~drains).sum()),
                       hseg_v, format_ids(hru[~drains], 5))
    logger.info("read %s: %d reaches, %d outlets, %d HRUs", path, net.n_reaches,
                net.outlets.size, int(drains.sum()))
    return MizuRouteCase(net, hru[drains], hseg[drains], area[drains], source=os.fspath(path))


def _read_runoff(path: Any, case: MizuRouteCase, nm: dict) -> tuple[xr.DataArray, float]:
    """Runoff depth rate (m/s) ``(hru, time)`` on ``case.hru_ids`` and the interval (s)."""
    import xarray as xr

    files = sorted(glob.glob(os.fspath(path))) or [os.fspath(path)]
    parts = []
    for f in files:
        with netcdf_guard(f), xr.open_dataset(f) as ds:
            q = nm["qsim"]
            if q not in ds.variables:
                raise IOFormatError(f, q, f"missing runoff variable; the file has "
                                    f"{sorted(ds.variables)}: name it with <vname_qsim> or "
                                    "names={'qsim': 'NAME'}")
            da = ds[q].load()
            units = nm.get("units_qsim") or da.attrs.get("units")
            if units is None:
                raise IOFormatError(f, q, "no units: set the variable's units attribute or "
                                    "<units_qsim> (e.g. mm/s)")
            factor = depth_rate_factor(units, f, q)
            hdim = nm.get("dname_hruid") or next(
                (d for d in da.dims if d != (nm.get("dname_time") or "time")), None)
            tdim = nm.get("dname_time") or "time"
            if da.ndim != 2 or hdim not in da.dims or tdim not in da.dims:
                raise IOFormatError(f, q, f"needs dims ({tdim}, {hdim}) (runoff on the river "
                                    f"network's HRUs), got {da.dims}; gridded or remapped "
                                    "runoff is not read here")
            hv = nm["hruid"]
            ids = ds[hv].values if hv in ds.variables else (
                da[hdim].values if hdim in da.coords else None)
            if ids is None:
                raise IOFormatError(f, hv, f"no HRU ids: the file has {sorted(ds.variables)}; "
                                    "name them with <vname_hruid> or names={'hruid': ...}")
            tv = nm["time"]
            if tv not in ds.variables:
                raise IOFormatError(f, tv, f"missing time variable; the file has "
                                    f"{sorted(ds.variables)}")
            times = np.asarray(ds[tv].values)
            parts.append(xr.DataArray(
                da.transpose(hdim, tdim).values.astype(np.float64) * factor,
                {"hru": integer_ids(ids, f, hv), "time": times}, ("hru", "time")))
    da = parts[0] if len(parts) == 1 else xr.concat(parts, "time")
    if da["time"].dtype.kind != "M":
        raise IOFormatError(path, nm["time"], "times could not be decoded: give the time "
                            "variable CF units ('hours since 2000-01-01')")
    t = check_times(da["time"].values.astype("datetime64[ns]"), path, nm["time"])
    if "dt_ro" in nm:
        dt = float(nm["dt_ro"])
    elif t.size > 1:
        steps = np.unique(np.diff(t).astype("timedelta64[s]").astype(np.int64))
        if steps.size != 1:
            raise IOFormatError(path, nm["time"], f"irregular runoff times (steps {steps} s): "
                                "give <dt_ro>")
        dt = float(steps[0])
    else:
        raise IOFormatError(path, nm["time"], "one runoff time: give <dt_ro> (s)")
    stamp = str(nm.get("ro_time_stamp", "start")).lower()
    shift = {"start": 0.0, "middle": 0.5, "end": 1.0}.get(stamp)
    if shift is None:
        raise IOFormatError(path, "ro_time_stamp", f"expected start, middle or end, got "
                            f"{stamp!r}")
    t = t - np.timedelta64(int(round(shift * dt)), "s")
    have = da["hru"].values
    missing = np.setdiff1d(case.hru_ids, have)
    if missing.size:
        raise IOFormatError(path, nm["hruid"], f"HRUs of the river network missing from the "
                            f"runoff: {format_ids(missing)}; the runoff must be given on the "
                            "network's HRUs (HRUid)")
    order = np.argsort(have, kind="stable")
    rows = order[np.searchsorted(have[order], case.hru_ids)]
    values = da.values[rows]
    if not np.isfinite(values).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(values))[0])
        raise IOFormatError(path, nm["qsim"], f"NaN or infinite runoff, e.g. HRU "
                            f"{int(case.hru_ids[i])} at {t[j]}")
    out = xr.DataArray(values, {"hru": case.hru_ids, "time": t}, ("hru", "time"),
                       attrs={"units": "m s-1"})
    return out, dt


def read_mizuroute(source: Any, runoff: Any = None, *,
                   names: Mapping[str, str] | None = None,
                   with_runoff: bool = True) -> MizuRouteCase:
    """Read a mizuRoute case: the river network, its HRUs and (when given) their runoff.

    Parameters
    ----------
    source : a control file (its NTOPO, and its runoff unless ``runoff`` is given), or an
        NTOPO NetCDF.
    runoff : a runoff NetCDF (or glob of files along time), overriding the control file's.
    names : variable names and settings by key, over the control file's: the NTOPO keys of
        :data:`NTOPO_NAMES` (``segId``, ``downSegId``, ``hruSegId``, ``HRUid``, ``area``,
        ...), the runoff keys ``qsim``, ``hruid``, ``time``, ``dname_hruid``, ``dname_time``,
        and ``units_qsim``, ``dt_ro`` (s), ``ro_time_stamp``.
    with_runoff : False: read the network and HRUs only (not the control file's runoff).

    Returns
    -------
    :class:`MizuRouteCase`; its :meth:`~MizuRouteCase.lateral_inflow` is the ``(reach, time)``
    inflow in m³/s.

    Raises
    ------
    IOFormatError
        Naming the file and variable: missing variables (with the file's list), runoff units
        that are not a depth rate, HRUs without runoff, remapped runoff (``<is_remap> T``).
    """
    control = None
    ntopo = source
    if is_control_file(source):
        control = read_control(source)
        c = os.fspath(source)
        if control.get("is_remap", "F").strip().upper() in ("T", "TRUE", ".TRUE."):
            raise IOFormatError(source, "is_remap", "runoff remapped from hydrologic-model "
                                "HRUs or a grid (options 2, 3) is not read here: remap it to "
                                "the network's HRUs first, or build a "
                                "hydroscale.models.CatchmentInterpolator from the weights")
        if "fname_ntopOld" not in control:
            raise IOFormatError(source, "fname_ntopOld", "missing: the river network file")
        ntopo = resolve_path(c, os.path.join(control.get("ancil_dir", ""),
                                             control["fname_ntopOld"]))
        if runoff is None and "fname_qsim" in control and with_runoff:
            runoff = resolve_path(c, os.path.join(control.get("input_dir", ""),
                                                  control["fname_qsim"]))
    case = read_ntopo(ntopo, names=names, control=control)
    if runoff is None or not with_runoff:
        return case
    nm = _names_from(control, names)
    ro, dt = _read_runoff(runoff, case, nm)
    return MizuRouteCase(case.network, case.hru_ids, case.hru_reach, case.hru_area_m2, ro, dt,
                         f"mizuRoute {os.fspath(ntopo)} + {os.fspath(runoff)}")

"""Lake readers: NWM ``LAKEPARM.nc`` with the RouteLink waterbody mapping, and a generic table.

* :func:`read_lakeparm` -> :class:`~hydroscale.routing.Lakes`: which reaches form which lake
  from the RouteLink ``NHDWaterbodyComID`` of each reach (the network's ``waterbody``
  attribute, as :func:`~hydroscale.io.nwm.read_routelink` reads it, or a RouteLink file), the
  level-pool parameters from the LAKEPARM rows of those lakes (``LkArea`` km² -> m²).
* :func:`read_lake_table` -> the same from a CSV table, one row per lake: ``lake_id``, the
  member reaches (``reaches``: ids separated by spaces or ``;``) or the ``outlet`` reach
  alone, and the LAKEPARM parameter columns (same names and units: ``LkArea`` km², ``LkMxE``,
  ``WeirE``, ``OrificeE`` m, ``WeirC``, ``WeirL`` m, ``Dam_Length`` m, ``OrificeC``,
  ``OrificeA`` m², ``ifd``), optionally ``name``.
* :func:`write_lake_table` writes that table; :func:`open_lakes` picks the reader by the
  file's suffix (``.nc`` LAKEPARM, ``.csv`` table).

The outlet of each lake (the lake reach whose downstream reach is not in the lake) is found
when the lakes are bound to the network (:class:`~hydroscale.routing.LakeLayout`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..network import RiverNetwork, format_ids
from ..routing import LEVEL_POOL_PARAMS, LakeError, Lakes
from ._common import IOFormatError, integer_ids, netcdf_guard, require_vars

__all__ = ["LAKEPARM_COLUMNS", "open_lakes", "read_lake_table", "read_lakeparm",
           "waterbody_members", "write_lake_table"]

logger = logging.getLogger(__name__)

#: LAKEPARM variable -> (level-pool parameter, factor to SI)
LAKEPARM_COLUMNS: dict[str, tuple[str, float]] = {
    "LkArea": ("area", 1.0e6),  # km2 -> m2
    "LkMxE": ("max_elevation", 1.0),
    "WeirE": ("weir_elevation", 1.0),
    "WeirC": ("weir_coefficient", 1.0),
    "WeirL": ("weir_length", 1.0),
    "Dam_Length": ("dam_length", 1.0),
    "OrificeE": ("orifice_elevation", 1.0),
    "OrificeC": ("orifice_coefficient", 1.0),
    "OrificeA": ("orifice_area", 1.0),
}
_BY_PARAM = {v[0]: (k, v[1]) for k, v in LAKEPARM_COLUMNS.items()}


def waterbody_members(network: RiverNetwork, waterbody: Any = None,
                      routelink: Any = None) -> dict[int, np.ndarray]:
    """``{lake id: member reach ids}`` from each reach's waterbody id (> 0 in a lake).

    ``waterbody``: ``[N]`` ids in network order; default the network's ``waterbody``
    attribute, or read from ``routelink`` (``NHDWaterbodyComID`` by ``link``).
    """
    if waterbody is None and routelink is not None:
        import xarray as xr

        with netcdf_guard(routelink), xr.open_dataset(routelink, decode_times=False) as ds:
            require_vars(ds, ["link", "NHDWaterbodyComID"], routelink)
            link = integer_ids(ds["link"].values, routelink, "link")
            wb = np.asarray(ds["NHDWaterbodyComID"].values, np.int64)
        pos = {int(v): i for i, v in enumerate(link)}
        missing = [int(r) for r in network.ids if int(r) not in pos]
        if missing:
            raise IOFormatError(routelink, "link", f"reaches {format_ids(missing)} of the "
                                "network are not in this RouteLink")
        waterbody = wb[[pos[int(r)] for r in network.ids]]
    if waterbody is None:
        if "waterbody" not in network.attrs:
            raise LakeError("the network has no 'waterbody' attribute (RouteLink "
                            "NHDWaterbodyComID): read it with hydroscale.io.nwm.read_routelink, "
                            "or pass routelink=PATH or waterbody=[N] ids")
        waterbody = network.attrs["waterbody"]
    wb = np.asarray(waterbody).astype(np.int64)
    if wb.shape != (network.n_reaches,):
        raise LakeError(f"waterbody must hold one id per reach ({network.n_reaches}), got "
                        f"{wb.shape}")
    inl = np.flatnonzero(wb > 0)
    order = np.argsort(wb[inl], kind="stable")
    lakes, start = np.unique(wb[inl][order], return_index=True)
    parts = np.split(network.ids[inl][order], start[1:]) if lakes.size else []
    return {int(k): p for k, p in zip(lakes, parts)}


def read_lakeparm(path: Any, network: RiverNetwork, *, waterbody: Any = None,
                  routelink: Any = None) -> Lakes:
    """Read the lakes of ``network`` from an NWM ``LAKEPARM.nc``.

    Parameters
    ----------
    path : the LAKEPARM NetCDF file (``lake_id``, ``LkArea`` km², ``LkMxE``, ``WeirE``,
        ``WeirC``, ``WeirL``, ``Dam_Length``, ``OrificeE``, ``OrificeC``, ``OrificeA``, ``ifd``).
    network : the river network; its lakes are the waterbody ids of its reaches
        (:func:`waterbody_members`: ``waterbody``, ``routelink`` or the network's
        ``waterbody`` attribute).  LAKEPARM rows of other lakes are ignored.

    Returns
    -------
    :class:`~hydroscale.routing.Lakes` in ascending lake id (parameters in SI: area m²).
    A waterbody of the network without a LAKEPARM row is an error naming it.
    """
    import xarray as xr

    members = waterbody_members(network, waterbody, routelink)
    want = np.fromiter(members, np.int64, len(members))
    cols = ["lake_id", *LAKEPARM_COLUMNS, "ifd"]
    with netcdf_guard(path), xr.open_dataset(path, decode_times=False) as ds:
        require_vars(ds, cols, path)
        lake_id = integer_ids(ds["lake_id"].values, path, "lake_id", "lake ids")
        rows = np.full(want.size, -1, np.int64)
        pos = {int(v): i for i, v in enumerate(lake_id)}
        for j, k in enumerate(want):
            rows[j] = pos.get(int(k), -1)
        if (rows < 0).any():
            raise LakeError(f"{os.fspath(path)}: no level-pool parameters for the waterbodies "
                            f"{format_ids(want[rows < 0])} of the network (RouteLink "
                            "NHDWaterbodyComID): use a LAKEPARM that holds them, or leave "
                            "those reaches out of the lakes")
        values = {c: np.asarray(ds[c].values, np.float64)[rows] for c in cols[1:]}
    params = np.stack([values[_BY_PARAM[p][0]] * _BY_PARAM[p][1] for p in LEVEL_POOL_PARAMS],
                      axis=1)
    lakes = Lakes.from_members({int(k): members[int(k)] for k in want}, params, values["ifd"])
    logger.info("read %s: %d lakes, %d reaches", path, lakes.n_lakes, lakes.reach_ids.size)
    return lakes


def _split_ids(text: Any, path: Any, lake: int) -> np.ndarray:
    parts = str(text).replace(";", " ").replace(",", " ").split()
    try:
        return np.asarray([int(p) for p in parts], np.int64)
    except ValueError:
        raise IOFormatError(path, "reaches", f"lake {lake}: reach ids must be integers "
                            f"separated by spaces or ';', got {text!r}") from None


def read_lake_table(path: Any, network: RiverNetwork | None = None) -> Lakes:
    """Read lakes from a CSV table (one row per lake; see the module docstring).

    With ``network``, the member reaches may be given by the ``outlet`` column alone (the
    lake is that reach); without it the table must list ``reaches`` or ``outlet``.
    """
    import pandas as pd

    df = pd.read_csv(path)
    need = ["lake_id", *LAKEPARM_COLUMNS, "ifd"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise IOFormatError(path, None, f"lake table misses columns {missing}; it needs "
                            f"{need} and 'reaches' (member ids) or 'outlet'")
    if "reaches" not in df.columns and "outlet" not in df.columns:
        raise IOFormatError(path, None, "lake table needs a 'reaches' column (member reach "
                            "ids separated by spaces or ';') or an 'outlet' column")
    ids = integer_ids(df["lake_id"].values, path, "lake_id", "lake ids")
    members: dict[int, np.ndarray] = {}
    for j, lake in enumerate(ids):
        text = df["reaches"].iloc[j] if "reaches" in df.columns else None
        if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
            out = df["outlet"].iloc[j] if "outlet" in df.columns else np.nan
            if pd.isna(out):
                raise LakeError(f"{os.fspath(path)}: lakes without reaches: lake {int(lake)} "
                                "has neither 'reaches' nor 'outlet'")
            members[int(lake)] = np.asarray([int(out)], np.int64)
        else:
            members[int(lake)] = _split_ids(text, path, int(lake))
    values = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in need[1:]}
    params = np.stack([values[_BY_PARAM[p][0]] * _BY_PARAM[p][1] for p in LEVEL_POOL_PARAMS],
                      axis=1)
    names = tuple(df["name"].fillna("").astype(str)) if "name" in df.columns else ()
    try:
        lakes = Lakes.from_members(members, params, values["ifd"], names)
    except LakeError as exc:
        raise LakeError(f"{os.fspath(path)}: {exc}") from None
    logger.info("read %s: %d lakes, %d reaches", path, lakes.n_lakes, lakes.reach_ids.size)
    return lakes


def write_lake_table(lakes: Lakes, path: Any) -> Path:
    """Write ``lakes`` as the CSV table :func:`read_lake_table` reads (LAKEPARM units)."""
    import pandas as pd

    data: dict[str, Any] = {"lake_id": lakes.ids}
    if lakes.names:
        data["name"] = list(lakes.names)
    data["reaches"] = [" ".join(str(int(r)) for r in lakes.reach_ids[lakes.lake_of == j])
                       for j in range(lakes.n_lakes)]
    for col, (param, factor) in LAKEPARM_COLUMNS.items():
        data[col] = lakes.param(param) / factor
    data["ifd"] = lakes.ifd
    path = Path(path)
    pd.DataFrame(data).to_csv(path, index=False, float_format="%.10g")
    return path


def open_lakes(path: Any, network: RiverNetwork, **options: Any) -> Lakes:
    """Read lakes for ``network`` from ``path``: ``.nc`` LAKEPARM (:func:`read_lakeparm`),
    ``.csv`` table (:func:`read_lake_table`)."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix in (".nc", ".nc4", ".cdf"):
        return read_lakeparm(path, network, **options)
    if suffix in (".csv", ".txt"):
        return read_lake_table(path, network, **options)
    raise IOFormatError(path, None, f"unknown lake file type {suffix!r}: give an NWM "
                        "LAKEPARM NetCDF (.nc) or a lake table (.csv)")

"""Rebuild ``hydroscale/data/lower_colorado.npz`` from the NWM files of the Lower Colorado (TX).

Usage::

    python examples/make_lower_colorado_data.py [SOURCE_DIR] [OUT_NPZ]

SOURCE_DIR defaults to ``../shared/data/lower_colorado_tx`` (RouteLink, CHRTOUT, USGS time
slices shipped with t-route, Apache-2.0).  The npz holds, in RouteLink order: the RouteLink
fields ``link, to, length (m), slope, manning_n, musk (s), musx, order, gages, lat, lon``;
``q_lateral`` and ``streamflow`` ``[reach, time]`` float32 (m³/s) with ``chrt_time``; and the
15-minute USGS ``usgs_discharge`` ``[station, time]`` float32 (m³/s, NaN = missing or quality 0)
for the stations of gauged reaches, with ``usgs_station`` and ``usgs_time``.  Beside it,
``lower_colorado_lakes.csv``: the domain's 30 level-pool lakes (NWM v2.1 ``LAKEPARM.nc``
rows of the RouteLink ``NHDWaterbodyComID`` waterbodies, with their 371 member reaches) as a
lake table.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from hydroscale.io.lakes import read_lakeparm, write_lake_table
from hydroscale.io.nwm import (
    gauge_table,
    read_chrtout,
    read_routelink,
    read_usgs_timeslices,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SRC = os.path.join(HERE, "..", "..", "shared", "data", "lower_colorado_tx")
DEFAULT_OUT = os.path.join(HERE, "..", "hydroscale", "data", "lower_colorado.npz")
#: the Highland Lakes among the domain's waterbodies (NWM lake_id -> name, by location)
HIGHLAND_LAKES = {5756886: "Lake Buchanan", 5756912: "Inks Lake", 5756952: "Lake LBJ",
                  120053393: "Lake Travis", 5781691: "Lake Austin"}
KEEP = ("length", "slope", "manning_n", "musk", "musx", "order", "lat", "lon")


def build(src: str, out: str) -> dict[str, np.ndarray]:
    net = read_routelink(os.path.join(src, "domain", "RouteLink.nc"))
    chrt = read_chrtout(os.path.join(src, "channel_forcing"), reach_ids=net.ids)
    usgs = read_usgs_timeslices(os.path.join(src, "usgs_timeslice"))
    stations, _ = gauge_table(net)
    keep = np.isin(usgs["station"].values, stations)
    usgs = usgs.isel(station=np.flatnonzero(keep))
    arrays: dict[str, np.ndarray] = {
        "link": net.ids,
        "to": net.downstream_ids,
        "gages": np.asarray(net.attrs["gages"]).astype("U15"),
    }
    for name in KEEP:
        v = np.asarray(net.attrs[name])
        arrays[name] = v.astype(np.float32) if v.dtype.kind == "f" else v
    arrays["chrt_time"] = chrt["time"].values.astype("datetime64[s]")
    arrays["q_lateral"] = chrt["q_lateral"].values.astype(np.float32)
    arrays["streamflow"] = chrt["streamflow"].values.astype(np.float32)
    arrays["usgs_station"] = usgs["station"].values.astype("U15")
    arrays["usgs_time"] = usgs["time"].values.astype("datetime64[s]")
    arrays["usgs_discharge"] = usgs["discharge"].values.astype(np.float32)
    np.savez_compressed(out, **arrays)
    build_lakes(src, os.path.join(os.path.dirname(out), "lower_colorado_lakes.csv"), net)
    logging.info("wrote %s (%.2f MB)", out, os.path.getsize(out) / 1e6)
    return arrays


def build_lakes(src: str, out: str, net=None) -> str:
    """Write the domain's level-pool lakes (LAKEPARM rows of the RouteLink waterbodies, with
    their member reaches) as a lake table (:func:`hydroscale.io.read_lake_table`)."""
    from hydroscale.routing import Lakes

    net = net if net is not None else read_routelink(os.path.join(src, "domain", "RouteLink.nc"))
    lakes = read_lakeparm(os.path.join(src, "domain", "LAKEPARM.nc"), net)
    members = {int(k): lakes.reach_ids[lakes.lake_of == j] for j, k in enumerate(lakes.ids)}
    names = [HIGHLAND_LAKES.get(int(k), "") for k in lakes.ids]
    write_lake_table(Lakes.from_members(members, lakes.params, lakes.ifd, names), out)
    logging.info("wrote %s (%d lakes, %d reaches)", out, lakes.n_lakes, lakes.reach_ids.size)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    build(src, out)

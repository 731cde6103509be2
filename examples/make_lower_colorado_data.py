"""Rebuild ``hydroscale/data/lower_colorado.npz`` from the NWM files of the Lower Colorado (TX).

Usage::

    python examples/make_lower_colorado_data.py [SOURCE_DIR] [OUT_NPZ]

SOURCE_DIR defaults to ``../shared/data/lower_colorado_tx`` (RouteLink, CHRTOUT, USGS time
slices shipped with t-route, Apache-2.0).  The npz holds, in RouteLink order: the RouteLink
fields ``link, to, length (m), slope, manning_n, musk (s), musx, order, gages, lat, lon``;
``q_lateral`` and ``streamflow`` ``[reach, time]`` float32 (m³/s) with ``chrt_time``; and the
15-minute USGS ``usgs_discharge`` ``[station, time]`` float32 (m³/s, NaN = missing or quality 0)
for the stations of gauged reaches, with ``usgs_station`` and ``usgs_time``.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from hydroscale.io.nwm import (
    gauge_table,
    read_chrtout,
    read_routelink,
    read_usgs_timeslices,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SRC = os.path.join(HERE, "..", "..", "shared", "data", "lower_colorado_tx")
DEFAULT_OUT = os.path.join(HERE, "..", "hydroscale", "data", "lower_colorado.npz")
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
    logging.info("wrote %s (%.2f MB)", out, os.path.getsize(out) / 1e6)
    return arrays


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    out = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_OUT
    build(src, out)

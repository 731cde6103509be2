"""Writers of small NWM-like files in tmp dirs (a 5-reach network, 3 hourly slices, 2 stations)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

LINKS = np.array([11, 12, 13, 14, 15], dtype=np.int32)
TO = np.array([13, 13, 15, 15, 0], dtype=np.int32)
GAGES = np.array([b"       0800001", b"", b"", b"       0800002", b"       0800003"], dtype="S15")


def write_routelink(path, **overrides):
    data = {
        "link": ("feature_id", LINKS),
        "to": ("feature_id", TO),
        "Length": ("feature_id", np.array([1000, 2000, 1500, 800, 3000], np.float32)),
        "So": ("feature_id", np.full(5, 0.001, np.float32)),
        "MusK": ("feature_id", np.full(5, 3600, np.float32)),
        "MusX": ("feature_id", np.full(5, 0.2, np.float32)),
        "gages": ("feature_id", GAGES),
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not None}
    xr.Dataset(data).to_netcdf(path)
    return path


def write_chrtout(path, time, q_lateral, ids=LINKS, units="m3 s-1", drop=()):
    ds = xr.Dataset(
        {
            "q_lateral": ("feature_id", np.asarray(q_lateral, np.float64), {"units": units}),
            "streamflow": ("feature_id", 2.0 * np.asarray(q_lateral), {"units": "m3 s-1"}),
        },
        coords={"feature_id": np.asarray(ids, np.int64), "time": [pd.Timestamp(time)]},
    )
    ds.drop_vars(list(drop)).to_netcdf(path)
    return path


def write_usgs(path, center, stations, discharge, quality=None, units="m^3/s"):
    n = len(stations)
    quality = np.full(n, 100, np.int16) if quality is None else np.asarray(quality, np.int16)
    ds = xr.Dataset(
        {
            "stationId": ("stationIdInd", np.array([s.rjust(15) for s in stations], "S15")),
            "discharge": ("stationIdInd", np.asarray(discharge, np.float32), {"units": units}),
            "discharge_quality": ("stationIdInd", quality),
        },
        attrs={"sliceCenterTimeUTC": center},
    )
    ds.to_netcdf(path)
    return path


@pytest.fixture
def nwm_dir(tmp_path):
    """RouteLink + 3 CHRTOUT (feature order shuffled in the 2nd) + 2 USGS slices."""
    write_routelink(tmp_path / "RouteLink.nc")
    chrt = tmp_path / "chrt"
    chrt.mkdir()
    for h in range(3):
        ids = LINKS if h != 1 else LINKS[::-1]
        q = (ids % 10) + 10.0 * h  # q_lateral = last digit of the id + 10 h
        write_chrtout(chrt / f"2021082300{h}0.CHRTOUT_DOMAIN1", f"2021-08-23T0{h}:00", q, ids)
    usgs = tmp_path / "usgs"
    usgs.mkdir()
    write_usgs(usgs / "a.usgsTimeSlice.ncdf", "2021-08-23_00:00:00", ["0800001", "0800009"],
               [1.5, 9.0])
    write_usgs(usgs / "b.usgsTimeSlice.ncdf", "2021-08-23_00:15:00", ["0800002", "0800001"],
               [2.5, 1.75], quality=[0, 100])
    return tmp_path

"""examples/lower_colorado.py: its lake and time-window helpers on hand-made cases (the
scores themselves are hydroscale.calibration.metrics.score, tested there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

from hydroscale.network import RiverNetwork
from hydroscale.routing import LEVEL_POOL_PARAMS, Lakes

PATH = Path(__file__).resolve().parents[1] / "examples" / "lower_colorado.py"


def _example():
    spec = importlib.util.spec_from_file_location("lower_colorado_example", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_below_lake_is_the_lake_or_anything_downstream_of_it():
    ex = _example()
    #  1 -> 3 -> 5 (outlet);  2 -> 3;  4 -> 5;  6 alone
    net = RiverNetwork.from_arrays(ids=[1, 2, 3, 4, 5, 6], downstream_ids=[3, 3, 5, 5, 0, 0])
    lake = np.array([False, True, False, False, False, False])  # reach 2 lies in a lake
    np.testing.assert_array_equal(ex.below_lake(net, lake),
                                  [False, True, True, False, True, False])
    # lake membership from a Lakes table
    row = np.ones((1, len(LEVEL_POOL_PARAMS)))
    got = ex.lake_reaches(net, Lakes.from_members({9: [2]}, row, [0.5]))
    np.testing.assert_array_equal(got, lake)


def test_hourly_means_of_15_minute_values():
    ex = _example()
    t = np.datetime64("2021-08-23T12:00") + np.arange(1, 9) * np.timedelta64(15, "m")
    v = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, np.nan, np.nan, 8.0]])  # 12:15 .. 14:00
    obs = xr.DataArray(v, {"station": ["x"], "time": t}, ("station", "time"))
    starts = np.array(["2021-08-23T12:00", "2021-08-23T13:00", "2021-08-23T14:00"],
                      "datetime64[ns]")
    got = ex.hourly_means_15min(obs, starts)
    # (12:00, 13:00]: 1..4 -> 2.5; (13:00, 14:00]: 5, 8 only two values -> NaN; after: none
    np.testing.assert_array_equal(np.isnan(got), [[False, True, True]])
    assert got[0, 0] == 2.5

from __future__ import annotations

import numpy as np
import pytest
from nwm_files import write_chrtout, write_routelink, write_usgs

from hydroscale.io import (
    IOFormatError,
    load_lower_colorado,
    observations_at_reaches,
    read_chrtout,
    read_routelink,
    read_usgs_timeslices,
)


def test_routelink_network_and_attributes(nwm_dir):
    net = read_routelink(str(nwm_dir / "RouteLink.nc"))
    np.testing.assert_array_equal(net.ids, [11, 12, 13, 14, 15])
    np.testing.assert_array_equal(net.downstream, [2, 2, 4, 4, -1])
    np.testing.assert_array_equal(net.attrs["length"], [1000, 2000, 1500, 800, 3000])
    np.testing.assert_array_equal(net.attrs["musk"], np.full(5, 3600.0))
    assert list(net.attrs["gages"]) == ["0800001", "", "", "0800002", "0800003"]


def test_chrtout_aligns_reaches_across_files(nwm_dir):
    ds = read_chrtout(nwm_dir / "chrt", reach_ids=[15, 11, 13])
    expected = np.array([[5, 15, 25], [1, 11, 21], [3, 13, 23]], np.float32)
    np.testing.assert_array_equal(ds["q_lateral"].values, expected)
    np.testing.assert_array_equal(ds["streamflow"].values, 2 * expected)
    assert ds["time"].values[1] == np.datetime64("2021-08-23T01:00")
    assert ds["q_lateral"].attrs["units"] == "m3 s-1"


def test_usgs_slices_and_join_through_gages(nwm_dir):
    obs = read_usgs_timeslices(nwm_dir / "usgs")
    assert list(obs["station"].values) == ["0800001", "0800002", "0800009"]
    d = obs["discharge"].values
    np.testing.assert_array_equal(d[0], [1.5, 1.75])
    assert np.isnan(d[1, 0]) and np.isnan(d[1, 1])  # missing, then quality 0
    net = read_routelink(nwm_dir / "RouteLink.nc")
    at = observations_at_reaches(obs, net)
    np.testing.assert_array_equal(at["reach"].values, [11, 14, 15])
    np.testing.assert_array_equal(at.sel(reach=11).values, [1.5, 1.75])
    assert at.sel(reach=15).isnull().all()


def test_routelink_bad_files(tmp_path):
    with pytest.raises(IOFormatError, match=r"RouteLink.nc \[to\].*missing variable"):
        read_routelink(write_routelink(tmp_path / "RouteLink.nc", to=None))
    bad_to = ("feature_id", np.array([13, 13, 15, 99, 0], np.int32))
    with pytest.raises(IOFormatError, match=r"\[to\].*\[99\]"):
        read_routelink(write_routelink(tmp_path / "r2.nc", to=bad_to), closed=True)
    km = ("feature_id", np.ones(5, np.float32), {"units": "km"})
    with pytest.raises(IOFormatError, match=r"r3.nc \[Length\].*'km'"):
        read_routelink(write_routelink(tmp_path / "r3.nc", Length=km))


def test_chrtout_bad_files(tmp_path):
    q = np.ones(5)
    a = write_chrtout(tmp_path / "a.CHRTOUT", "2021-08-23T01:00", q)
    b = write_chrtout(tmp_path / "b.CHRTOUT", "2021-08-23T00:00", q)
    c = write_chrtout(tmp_path / "c.CHRTOUT", "2021-08-23T01:00", q)
    with pytest.raises(IOFormatError, match=r"\[time\].*not sorted"):
        read_chrtout([a, b])
    with pytest.raises(IOFormatError, match=r"\[time\].*duplicated"):
        read_chrtout([a, c])
    cfs = write_chrtout(tmp_path / "d.CHRTOUT", "2021-08-23T00:00", q, units="ft3 s-1")
    with pytest.raises(IOFormatError, match=r"d.CHRTOUT \[q_lateral\].*'ft3 s-1'"):
        read_chrtout([cfs])
    nov = write_chrtout(tmp_path / "e.CHRTOUT", "2021-08-23T00:00", q, drop=("streamflow",))
    with pytest.raises(IOFormatError, match=r"e.CHRTOUT \[streamflow\].*missing"):
        read_chrtout([nov])
    with pytest.raises(IOFormatError, match=r"a.CHRTOUT \[feature_id\].*\[77\]"):
        read_chrtout([a], reach_ids=[11, 77])


def test_usgs_bad_units_and_duplicated_slices(tmp_path):
    a = write_usgs(tmp_path / "a.ncdf", "2021-08-23_00:00:00", ["1"], [1.0], units="ft^3/s")
    with pytest.raises(IOFormatError, match=r"a.ncdf \[discharge\].*'ft\^3/s'"):
        read_usgs_timeslices([a])
    b = write_usgs(tmp_path / "b.ncdf", "2021-08-23_00:00:00", ["1"], [1.0])
    c = write_usgs(tmp_path / "c.ncdf", "2021-08-23_00:00:00", ["1"], [2.0])
    with pytest.raises(IOFormatError, match=r"\[sliceCenterTimeUTC\].*duplicated"):
        read_usgs_timeslices([b, c])


def test_bundled_lower_colorado():
    lc = load_lower_colorado()
    net = lc.network
    assert net.n_reaches == 11248 and net.outlets.size == 1
    assert lc.q_lateral.shape == (11248, 28) and lc.streamflow.shape == (11248, 28)
    np.testing.assert_array_equal(lc.q_lateral["reach"].values, net.ids)
    dt = np.diff(lc.q_lateral["time"].values).astype("timedelta64[m]").astype(int)
    assert (dt == 60).all()
    assert (np.char.str_len(net.attrs["gages"].astype(str)) > 0).sum() == 76
    assert float(lc.q_lateral.min()) >= 0.0
    # NWM streamflow at the outlet carries the basin's flow: it exceeds any lateral inflow
    out = int(net.ids[net.outlets[0]])
    assert float(lc.streamflow.sel(reach=out).min()) > float(lc.q_lateral.sel(reach=out).max())
    assert lc.gauged_reaches.size == 56

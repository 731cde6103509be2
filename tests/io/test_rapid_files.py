from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from hydroscale.io import IOFormatError
from hydroscale.io.rapid import (
    read_k,
    read_qinit,
    read_qout,
    read_rapid_connect,
    read_rapid_inflow,
    read_riv_bas_id,
    read_x,
    write_column,
    write_qfinal,
    write_qout,
    write_rapid_connect,
    write_rapid_inflow,
)
from hydroscale.network import RiverNetwork
from hydroscale.routing.rapid import route_rapid

IDS = [40, 10, 20, 30, 50, 60, 70, 80, 90]
DOWN = [50, 40, 40, 40, 90, 70, 90, 90, 0]
FULL = """40,50,3,10,20,30
10,40,0,0,0,0
20,40,0,0,0,0
30,40,0,0,0,0
50,90,1,40,0,0
60,70,0,0,0,0
70,90,1,60,0,0
80,90,0,0,0,0
90,0,3,50,70,80
"""
T0 = np.datetime64("2000-01-01T00:00", "s")


@pytest.fixture
def net():
    return RiverNetwork.from_arrays(IDS, DOWN)


def test_connect_full_form_by_hand(tmp_path, net):
    (tmp_path / "c.csv").write_text(FULL)
    got = read_rapid_connect(tmp_path / "c.csv")
    np.testing.assert_array_equal(got.ids, IDS)
    np.testing.assert_array_equal(got.downstream_ids, DOWN)


@pytest.mark.parametrize("form", ["full", "two"])
def test_connect_round_trip(tmp_path, net, form):
    write_rapid_connect(net, tmp_path / "c.csv", form=form)
    got = read_rapid_connect(str(tmp_path / "c.csv"))
    np.testing.assert_array_equal(got.ids, net.ids)
    np.testing.assert_array_equal(got.downstream, net.downstream)
    if form == "full":
        assert (tmp_path / "c.csv").read_text() == FULL


def test_riv_bas_id_subset_k_x(tmp_path, net):
    write_rapid_connect(net, tmp_path / "c.csv")
    write_column(tmp_path / "riv_bas_id.csv", [60, 10, 70, 40], fmt="%d")
    sub = read_rapid_connect(tmp_path / "c.csv", riv_bas_id=str(tmp_path / "riv_bas_id.csv"))
    np.testing.assert_array_equal(sub.ids, [60, 10, 70, 40])
    np.testing.assert_array_equal(sub.downstream_ids, [70, 40, 0, 0])  # 90, 50 outside
    k = np.array([3600.0, 1800.5, 7200.0, 900.0])
    write_column(tmp_path / "k.csv", k)
    write_column(tmp_path / "x.csv", [0.1, 0.2, 0.3, 0.0])
    np.testing.assert_array_equal(read_k(tmp_path / "k.csv", 4), k)
    np.testing.assert_array_equal(read_x(tmp_path / "x.csv", 4), [0.1, 0.2, 0.3, 0.0])
    np.testing.assert_array_equal(read_riv_bas_id(tmp_path / "riv_bas_id.csv"), sub.ids)


@pytest.mark.parametrize("as_volume", [True, False])
def test_inflow_round_trip_and_network_order(tmp_path, net, as_volume):
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 5, (9, 6))
    times = T0 + np.arange(6) * np.timedelta64(3, "h")
    write_rapid_inflow(tmp_path / "in.nc", q[::-1], net.ids[::-1], times, 10800.0,
                       as_volume=as_volume)
    da = read_rapid_inflow(tmp_path / "in.nc", net)
    np.testing.assert_array_equal(da["reach"].values, net.ids)
    np.testing.assert_allclose(da.values, q, rtol=1e-12)
    assert da.attrs["interval_s"] == 10800.0 and da.attrs["units"] == "m3 s-1"
    np.testing.assert_array_equal(da["time"].values, times.astype("datetime64[ns]"))


def test_qout_qfinal_written_as_rapid_and_route_from_files(tmp_path, net):
    rng = np.random.default_rng(1)
    qext = rng.uniform(0, 5, (9, 4))
    k, x = rng.uniform(1800, 7200, 9), rng.uniform(0, 0.4, 9)
    lat, lon = np.linspace(30, 31, 9), np.linspace(-97, -96, 9)
    qout, qfinal = route_rapid(net, qext, k, x, 3600.0, 900.0)
    times = T0 + np.arange(4) * np.timedelta64(1, "h")
    write_qout(tmp_path / "Qout.nc", qout.numpy(), net.ids, times, 3600.0, lon=lon, lat=lat)
    write_qfinal(tmp_path / "Qfinal.nc", qfinal.numpy(), net.ids, times[-1] + 3600)
    ds = xr.open_dataset(tmp_path / "Qout.nc")
    assert ds.attrs["Conventions"] == "CF-1.6" and ds.attrs["featureType"] == "timeSeries"
    assert ds["Qout"].dims == ("time", "rivid") and ds["Qout"].dtype == np.float32
    assert ds["Qout"].attrs["units"] == "m3 s-1"
    assert ds["Qout"].attrs["cell_methods"] == "time: mean"
    assert ds["rivid"].attrs["cf_role"] == "timeseries_id"
    assert ds["time"].attrs["bounds"] == "time_bnds"
    np.testing.assert_array_equal(ds["time"].values, times.astype("datetime64[ns]"))
    np.testing.assert_allclose(ds["lat"].values, lat)
    with netCDF4.Dataset(tmp_path / "Qout.nc") as raw:
        bnds = raw["time_bnds"][:]
    np.testing.assert_array_equal(bnds[:, 1] - bnds[:, 0], 3600)
    back = read_qout(tmp_path / "Qout.nc", net)
    np.testing.assert_allclose(back.values, qout.numpy(), rtol=1e-6)
    # restart: Qfinal as Qinit continues the run exactly
    qinit = read_qinit(tmp_path / "Qfinal.nc", net)
    np.testing.assert_array_equal(qinit, qfinal.numpy())
    more = rng.uniform(0, 5, (9, 3))
    whole, _ = route_rapid(net, np.concatenate([qext, more], 1), k, x, 3600.0, 900.0)
    cont, _ = route_rapid(net, more, k, x, 3600.0, 900.0, qinit=qinit)
    np.testing.assert_allclose(cont.numpy(), whole[:, 4:].numpy(), rtol=1e-12, atol=1e-12)


def _inflow(path, rivid=(10, 20), times=(0, 3600), units="m3", name="m3_riv", bnds=True):
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", len(times))
        ds.createDimension("rivid", len(rivid))
        ds.createDimension("nv", 2)
        ds.createVariable("rivid", "i4", ("rivid",))[:] = rivid
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "seconds since 1970-01-01 00:00:00 +00:00"
        t[:] = times
        if bnds:
            ds.createVariable("time_bnds", "i4", ("time", "nv"))[:] = np.stack(
                [times, np.asarray(times) + 3600], 1)
        if name:
            v = ds.createVariable(name, "f8", ("time", "rivid"))
            v.units = units
            v[:] = np.ones((len(times), len(rivid)))
    return path


def test_bad_rapid_files(tmp_path):
    net = RiverNetwork.from_arrays([10, 20], [20, 0])
    with pytest.raises(IOFormatError, match=r"a.nc \[m3_riv/Qext\].*missing"):
        read_rapid_inflow(_inflow(tmp_path / "a.nc", name=None))
    with pytest.raises(IOFormatError, match=r"b.nc \[m3_riv\].*'m3 s-1'"):
        read_rapid_inflow(_inflow(tmp_path / "b.nc", units="m3 s-1"))
    with pytest.raises(IOFormatError, match=r"c.nc \[Qext\].*'mm'"):
        read_rapid_inflow(_inflow(tmp_path / "c.nc", units="mm", name="Qext"))
    with pytest.raises(IOFormatError, match=r"d.nc \[time\].*not sorted"):
        read_rapid_inflow(_inflow(tmp_path / "d.nc", times=(3600, 0)))
    with pytest.raises(IOFormatError, match=r"e.nc \[time\].*duplicated"):
        read_rapid_inflow(_inflow(tmp_path / "e.nc", times=(0, 0)))
    with pytest.raises(IOFormatError, match=r"f.nc \[rivid\].*\[30\]"):
        read_rapid_inflow(_inflow(tmp_path / "f.nc", rivid=(10, 20, 30)), net)
    bad = tmp_path / "c.csv"
    bad.write_text("10,20,0,0\n20,0,1,99\n")
    with pytest.raises(IOFormatError, match=r"c.csv \[upstream ids\].*10"):
        read_rapid_connect(bad)
    (tmp_path / "d.csv").write_text("10,20\n20,55\n")
    with pytest.raises(IOFormatError, match=r"d.csv \[downstream\].*\[55\]"):
        read_rapid_connect(tmp_path / "d.csv")
    write_column(tmp_path / "k.csv", [3600.0, -1.0])
    with pytest.raises(IOFormatError, match=r"k.csv \[k\].*lines \[2\]"):
        read_k(tmp_path / "k.csv", 2)
    with pytest.raises(IOFormatError, match=r"k.csv \[k\].*2 values for 3 reaches"):
        read_k(tmp_path / "k.csv", 3)


def test_legacy_inflow_without_time(tmp_path):
    with netCDF4.Dataset(tmp_path / "old.nc", "w") as ds:
        ds.createDimension("Time", 2)
        ds.createDimension("COMID", 2)
        ds.createVariable("COMID", "i4", ("COMID",))[:] = [20, 10]
        v = ds.createVariable("m3_riv", "f4", ("Time", "COMID"))
        v[:] = [[360.0, 720.0], [1080.0, 0.0]]
    with pytest.raises(IOFormatError, match=r"old.nc \[time\].*pass interval_s and start"):
        read_rapid_inflow(tmp_path / "old.nc")
    net = RiverNetwork.from_arrays([10, 20], [20, 0])
    da = read_rapid_inflow(tmp_path / "old.nc", net, interval_s=3600.0, start="2000-01-01")
    np.testing.assert_allclose(da.values, [[0.2, 0.0], [0.1, 0.3]])
    assert da["time"].values[1] == np.datetime64("2000-01-01T01:00")

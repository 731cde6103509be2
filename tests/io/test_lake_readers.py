"""Lake readers: NWM LAKEPARM + RouteLink waterbody mapping, and the CSV table."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from hydroscale.io import nwm, open_lakes, read_lake_table, read_lakeparm, write_lake_table
from hydroscale.network import RiverNetwork
from hydroscale.routing import LakeError, LakeLayout

DOMAIN = "/work/shared/data/lower_colorado_tx/domain"


def _lakeparm(path, ids, **override):
    n = len(ids)
    cols = dict(LkArea=np.linspace(1.0, 2.0, n), LkMxE=np.full(n, 110.0),
                WeirE=np.full(n, 108.0), WeirC=np.full(n, 0.4), WeirL=np.full(n, 10.0),
                Dam_Length=np.full(n, 10, np.int32), OrificeE=np.full(n, 100.0),
                OrificeC=np.full(n, 0.1), OrificeA=np.full(n, 1.0),
                ifd=np.full(n, 0.9, np.float32))
    cols.update(override)
    ds = xr.Dataset({k: ("feature_id", v) for k, v in cols.items()})
    ds["lake_id"] = ("feature_id", np.asarray(ids, np.int32))
    ds.to_netcdf(path)
    return path


@pytest.fixture
def net():
    """1, 2 -> 3 -> 4 -> 5 -> 6 (outlet); lake 77 = {2, 3, 4}, lake 88 = {5}."""
    return RiverNetwork.from_arrays([1, 2, 3, 4, 5, 6], [3, 3, 4, 5, 6, 0],
                                    waterbody=[-9999, 77, 77, 77, 88, -9999])


def test_lakeparm_with_waterbodies(tmp_path, net):
    path = _lakeparm(tmp_path / "LAKEPARM.nc", [55, 88, 77])  # 55 is not in the network
    lakes = read_lakeparm(path, net)
    assert lakes.ids.tolist() == [77, 88]
    assert sorted(lakes.reach_ids[lakes.lake_of == 0].tolist()) == [2, 3, 4]
    np.testing.assert_allclose(lakes.param("area"), [2.0e6, 1.5e6])  # km2 -> m2
    np.testing.assert_allclose(lakes.ifd, 0.9, rtol=1e-6)
    np.testing.assert_allclose(lakes.initial_elevation(), 100.0 + 0.9 * 10.0, rtol=1e-6)
    lay = LakeLayout.build(net, lakes)
    assert net.ids[lay.outlet].tolist() == [4, 5]  # the lake reach draining out of the lake
    assert lay.lake_stage.tolist() == [1, 2]  # 88 is downstream of 77
    # the same through a table, written and read back, and through open_lakes
    table = write_lake_table(lakes, tmp_path / "lakes.csv")
    back = open_lakes(table, net)
    np.testing.assert_array_equal(back.ids, lakes.ids)
    np.testing.assert_array_equal(back.reach_ids, lakes.reach_ids)
    np.testing.assert_allclose(back.params, lakes.params, rtol=1e-9)


def test_waterbodies_from_a_routelink(tmp_path):
    rl = xr.Dataset({"link": ("feature_id", np.array([1, 2, 3], np.int32)),
                     "to": ("feature_id", np.array([2, 3, 0], np.int32)),
                     "NHDWaterbodyComID": ("feature_id", np.array([-9999, 9, 9], np.int32))})
    rl.to_netcdf(tmp_path / "RouteLink.nc")
    net = RiverNetwork.from_arrays([3, 1, 2], [0, 2, 3])  # no waterbody attribute
    with pytest.raises(LakeError, match="no 'waterbody' attribute"):
        read_lakeparm(_lakeparm(tmp_path / "L.nc", [9]), net)
    lakes = read_lakeparm(tmp_path / "L.nc", net, routelink=tmp_path / "RouteLink.nc")
    assert lakes.ids.tolist() == [9] and sorted(lakes.reach_ids.tolist()) == [2, 3]


def test_errors_name_the_lakes(tmp_path, net):
    with pytest.raises(LakeError, match=r"no level-pool parameters for the waterbodies \[77\]"):
        read_lakeparm(_lakeparm(tmp_path / "a.nc", [88]), net)
    bad = _lakeparm(tmp_path / "b.nc", [77, 88], WeirC=np.array([0.4, np.nan]))
    with pytest.raises(LakeError, match=r"lakes \[88\] miss level-pool parameters "
                                        r"\['weir_coefficient'\]"):
        read_lakeparm(bad, net)
    two = RiverNetwork.from_arrays([1, 2, 3, 4], [3, 3, 0, 0], waterbody=[5, 0, 0, 5])
    lakes = read_lakeparm(_lakeparm(tmp_path / "c.nc", [5]), two)
    with pytest.raises(LakeError, match=r"lakes \[5\].*more than one reach.*\[1, 4\]"):
        LakeLayout.build(two, lakes)
    csv = tmp_path / "t.csv"
    csv.write_text("lake_id,outlet,reaches,LkArea,LkMxE,WeirE,WeirC,WeirL,Dam_Length,"
                   "OrificeE,OrificeC,OrificeA,ifd\n"
                   "1,4,,1,110,108,0.4,10,10,100,0.1,1,0.9\n"
                   "2,,,1,110,108,0.4,10,10,100,0.1,1,0.9\n")
    with pytest.raises(LakeError, match="lake 2 has neither"):
        read_lake_table(csv, net)
    csv.write_text("lake_id,reaches,LkArea\n1,4,1\n")
    with pytest.raises(ValueError, match=r"misses columns \['LkMxE'"):
        read_lake_table(csv, net)


@pytest.mark.skipif(not os.path.exists(f"{DOMAIN}/LAKEPARM.nc"), reason="no shared data")
def test_lower_colorado_lakes():
    net = nwm.read_routelink(f"{DOMAIN}/RouteLink.nc")
    lakes = read_lakeparm(f"{DOMAIN}/LAKEPARM.nc", net)
    assert lakes.n_lakes == 30 and lakes.reach_ids.size == 371
    lay = LakeLayout.build(net, lakes)
    travis = int(np.flatnonzero(lakes.ids == 120053393)[0])
    assert (lakes.reach_ids[lakes.lake_of == travis]).size == 86
    assert lakes.param("area")[travis] == pytest.approx(77.553902e6, rel=1e-6)
    assert lay.n_stages >= 3  # the Highland Lakes chain: Buchanan -> Inks -> LBJ -> ...

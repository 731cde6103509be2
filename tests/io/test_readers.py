"""The reader registry (``hydroscale.io.open_network`` / ``open_series``): guesses on small
files of each format, explicit engines, lookup errors, custom readers, and the CLI and
workflows reading a registered network reader."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from nwm_files import LINKS, TO, write_chrtout, write_routelink

from hydroscale.cli import EXIT_OK, EXIT_USAGE
from hydroscale.cli import main as cli_main
from hydroscale.io import (
    IOFormatError,
    Reader,
    ReaderGuessError,
    guess_engine,
    ingest,
    list_readers,
    open_forcing,
    open_network,
    open_series,
    register_reader,
)
from hydroscale.io.rapid import write_rapid_connect, write_rapid_inflow
from hydroscale.network import RiverNetwork
from hydroscale.workflows import WorkflowError, build_network, workflow_from_mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
from workflow_cases import small_route  # noqa: E402

T0 = np.datetime64("2021-08-23T00:00", "ns")
HOURS = T0 + np.arange(4) * np.timedelta64(1, "h")
NET = RiverNetwork.from_arrays([3, 1, 2], [2, 2, 0])
Q = np.arange(12.0).reshape(3, 4)  # rows: reaches 3, 1, 2


@pytest.fixture
def registry():
    """Restores the registry after a test that registers readers."""
    from hydroscale.io import _readers

    saved = dict(_readers._REGISTRY)
    yield
    _readers._REGISTRY.clear()
    _readers._REGISTRY.update(saved)


def _edges(path: Path, ids=(1, 2, 3, 4), down=(2, 4, 4, 0)) -> Path:
    """A made-up network format: ``id down`` per line, ``.edges`` files."""
    path.write_text("".join(f"{i} {d}\n" for i, d in zip(ids, down)))
    return path


def _read_edges(path, *, scale: float = 1.0) -> RiverNetwork:
    table = np.loadtxt(path, dtype=np.int64, ndmin=2)
    return RiverNetwork.from_arrays(table[:, 0], table[:, 1], length=np.full(len(table), scale))


EDGES = Reader("edges", "network", lambda s: str(s).endswith(".edges"), _read_edges,
               "an edge list (.edges)", "a file named *.edges")


# ------------------------------------------------------------------------ built-in guesses
def test_the_built_in_readers_are_registered():
    assert list(list_readers("network")) == ["routelink", "rapid_connect", "mizuroute",
                                             "rapid2"]
    assert list(list_readers("series")) == ["dataarray", "chrtout", "rapid_inflow", "netcdf",
                                            "mizuroute_runoff", "wide_csv"]
    assert set(list_readers()) == set(list_readers("network")) | set(list_readers("series"))
    with pytest.raises(ValueError, match=r"kind must be one of \['network', 'series'\]"):
        list_readers("grid")


def test_routelink_is_guessed(tmp_path):
    path = write_routelink(tmp_path / "RouteLink.nc")
    assert guess_engine(path, "network") == "routelink"
    net = open_network(path)
    np.testing.assert_array_equal(net.ids, LINKS)
    np.testing.assert_array_equal(net.attrs["musk"], 3600.0)


def test_rapid_connect_is_guessed_and_takes_riv_bas_id(tmp_path):
    net = RiverNetwork.from_arrays(LINKS, TO)
    for form in ("full", "two"):
        write_rapid_connect(net, tmp_path / f"{form}.csv", form=form)
        assert guess_engine(tmp_path / f"{form}.csv", "network") == "rapid_connect"
        np.testing.assert_array_equal(open_network(tmp_path / f"{form}.csv").downstream_ids,
                                      net.downstream_ids)
    sub = open_network(tmp_path / "full.csv", riv_bas_id=[11, 13])
    np.testing.assert_array_equal(sub.ids, [11, 13])
    np.testing.assert_array_equal(sub.downstream_ids, [13, 0])  # 15 is outside: an outlet
    with pytest.raises(TypeError, match=r"reader 'rapid_connect' takes the options "
                                        r"\['riv_bas_id'\]; got \['attrs'\]"):
        open_network(tmp_path / "full.csv", attrs={})


def test_chrtout_folder_glob_and_list_are_guessed(nwm_dir):
    chrt = nwm_dir / "chrt"
    files = sorted(str(p) for p in chrt.iterdir())
    for source in (chrt, str(chrt / "*.CHRTOUT_DOMAIN1"), files, files[0]):
        assert guess_engine(source, "series") == "chrtout"
    da = open_series(chrt)
    assert da.dims == ("reach", "time") and da.attrs["units"] == "m3 s-1"
    np.testing.assert_array_equal(da.values, (LINKS % 10)[:, None] + 10.0 * np.arange(3))
    np.testing.assert_array_equal(open_series(files, variable="streamflow").values,
                                  2 * da.values)


def test_an_nwm_channel_slice_is_chrtout_whatever_its_name(tmp_path):
    """Operational NWM files are named ``nwm.t00z...channel_rt...nc``: the header says it."""
    files = [write_chrtout(tmp_path / f"nwm.t0{h}z.short_range.channel_rt.f001.conus.nc",
                           f"2021-08-23T0{h}:00", LINKS * 1.0 + h) for h in range(2)]
    assert guess_engine(files[0], "series") == "chrtout"
    assert guess_engine(files, "series") == "chrtout"
    np.testing.assert_array_equal(open_series(files).values[:, 1], LINKS + 1.0)


def test_rapid_inflow_is_guessed(tmp_path):
    write_rapid_inflow(tmp_path / "m3_riv.nc", Q, [3, 1, 2], HOURS, 3600.0)
    assert guess_engine(tmp_path / "m3_riv.nc", "series") == "rapid_inflow"
    da = open_series(tmp_path / "m3_riv.nc")
    np.testing.assert_allclose(da.values, Q)
    np.testing.assert_array_equal(da["reach"], [3, 1, 2])


def test_a_reach_time_netcdf_variable_is_guessed(tmp_path):
    xr.Dataset({"qlat": (("time", "feature_id"), Q.T, {"units": "m3/s"}),
                "time_bnds": (("time", "nv"), np.zeros((4, 2)))},
               coords={"feature_id": [3, 1, 2], "time": HOURS}).to_netcdf(tmp_path / "q.nc")
    assert guess_engine(tmp_path / "q.nc", "series") == "netcdf"
    da = open_series(tmp_path / "q.nc")  # time_bnds is not a (reach, time) variable
    np.testing.assert_allclose(da.values, Q)
    assert da.attrs["units"] == "m3 s-1"


def test_a_wide_csv_is_guessed(tmp_path):
    rows = [f"{pd.Timestamp(t).isoformat()},{','.join(str(v) for v in q)}"
            for t, q in zip(HOURS, Q.T)]
    (tmp_path / "q.csv").write_text("time,3,1,2\n" + "\n".join(rows) + "\n")
    assert guess_engine(tmp_path / "q.csv", "series") == "wide_csv"
    da = open_series(tmp_path / "q.csv")
    np.testing.assert_allclose(da.values, Q)
    np.testing.assert_array_equal(da["time"], HOURS)


def test_a_dataarray_passes_through(tmp_path):
    da = xr.DataArray(Q, {"reach": [3.0, 1.0, 2.0], "time": HOURS}, ("reach", "time"),
                      attrs={"units": "cms"})
    assert guess_engine(da, "series") == "dataarray"
    out = open_series(da)
    assert out["reach"].dtype == np.int64 and out.attrs["units"] == "cms"
    with pytest.raises(ValueError, match=r"dims \(reach, time\), got \('time', 'reach'\)"):
        open_series(da.T)


# ------------------------------------------------------------------------ explicit engines
def test_an_explicit_engine_overrides_the_guess(tmp_path):
    write_rapid_inflow(tmp_path / "qext.nc", Q, [3, 1, 2], HOURS, 3600.0, as_volume=False)
    assert guess_engine(tmp_path / "qext.nc", "series") == "rapid_inflow"
    da = open_series(tmp_path / "qext.nc", engine="netcdf", variable="Qext")
    np.testing.assert_allclose(da.values, Q)
    assert "interval_s" not in da.attrs  # the generic reader, not the RAPID one
    write_rapid_connect(NET, tmp_path / "net.dat")  # a name no guess takes
    with pytest.raises(ReaderGuessError):
        open_network(tmp_path / "net.dat")
    np.testing.assert_array_equal(open_network(tmp_path / "net.dat", "rapid_connect").ids,
                                  NET.ids)
    root = ingest(tmp_path / "qext.nc", tmp_path / "f.zarr", engine="netcdf", variable="Qext")
    np.testing.assert_allclose(root["runoff"][:], Q)


def test_an_unknown_engine_lists_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown series reader engine='grib'; registered "
                                         r"series readers: dataarray, chrtout, rapid_inflow, "
                                         r"netcdf, mizuroute_runoff, wide_csv"):
        open_series(tmp_path / "q.grib", engine="grib")
    with pytest.raises(ValueError, match=r"unknown network reader engine='shp'; registered "
                                         r"network readers: routelink, rapid_connect, "
                                         r"mizuroute, rapid2"):
        open_network(tmp_path / "x.shp", engine="shp")
    with pytest.raises(ValueError, match=r"engine='wide_csv' reads a series, not a network; "
                                         r"network readers: routelink, rapid_connect, "
                                         r"mizuroute, rapid2"):
        open_network(tmp_path / "x.csv", engine="wide_csv")
    with pytest.raises(ValueError, match=r"engine='routelink' reads a network, not a series"):
        ingest(tmp_path / "x.nc", tmp_path / "x.zarr", engine="routelink")


def test_a_file_no_reader_opens_names_it_and_what_the_readers_look_for(tmp_path):
    path = write_routelink(tmp_path / "RouteLink.nc")
    with pytest.raises(ReaderGuessError) as err:
        open_series(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: no series reader recognises it; the readers look for:")
    for name in ("dataarray", "chrtout", "rapid_inflow", "netcdf", "wide_csv"):
        assert f"\n  - {name} (" in msg
    assert "with a variable m3_riv or Qext" in msg and "pass engine=NAME" in msg
    (tmp_path / "notes.txt").write_text("a river, somewhere\n")
    with pytest.raises(ReaderGuessError, match=r"(?s)notes.txt: no network reader recognises it"
                                               r".*variables 'link' and 'to'.*first line is "
                                               r"integers"):
        open_network(tmp_path / "notes.txt")
    with pytest.raises(IOFormatError, match=r"notes.txt: no series reader"):
        ingest(tmp_path / "notes.txt", tmp_path / "n.zarr")
    assert not (tmp_path / "n.zarr").exists()


def test_missing_sources_and_text_named_netcdf(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.nc: no such file or folder"):
        open_network(tmp_path / "nowhere.nc")
    with pytest.raises(FileNotFoundError, match=r"\*.CHRTOUT_DOMAIN1: no files match"):
        open_series(str(tmp_path / "*.CHRTOUT_DOMAIN1"))
    (tmp_path / "RouteLink.nc").write_text("link,to\n1,0\n")
    with pytest.raises(IOFormatError, match=r"RouteLink.nc: not a NetCDF file: it starts with"):
        open_network(tmp_path / "RouteLink.nc")


# ------------------------------------------------------------------------ custom readers
def test_register_a_custom_reader_and_refuse_a_silent_overwrite(tmp_path, registry):
    assert register_reader(EDGES) is EDGES
    assert list(list_readers("network")) == ["routelink", "rapid_connect", "mizuroute",
                                             "rapid2", "edges"]
    path = _edges(tmp_path / "basin.edges")
    assert guess_engine(path, "network") == "edges"
    net = open_network(path, scale=2.0)
    np.testing.assert_array_equal(net.downstream_ids, [2, 4, 4, 0])
    np.testing.assert_array_equal(net.attrs["length"], 2.0)
    with pytest.raises(TypeError, match=r"reader 'edges' takes the options \['scale'\]; got "
                                        r"\['riv_bas_id'\]"):
        open_network(path, riv_bas_id=[1])
    other = Reader("edges", "network", None, _read_edges, "another edge list")
    with pytest.raises(ValueError, match=r"a reader named 'edges' is already registered "
                                         r"\(network: an edge list \(.edges\)\); pass "
                                         r"overwrite=True"):
        register_reader(other)
    register_reader(other, overwrite=True)
    assert list_readers()["edges"] is other
    with pytest.raises(ReaderGuessError):  # no guess: only used when named
        open_network(path)
    assert open_network(path, "edges").n_reaches == 4


def test_reader_specs_are_validated():
    with pytest.raises(ValueError, match=r"an identifier .* got 'my reader'"):
        Reader("my reader", "network", None, _read_edges, "x")
    with pytest.raises(ValueError, match=r"kind must be one of \['network', 'series'\], got "
                                         r"'grid'"):
        Reader("grid", "grid", None, _read_edges, "x")
    with pytest.raises(ValueError, match="description must say what it reads"):
        Reader("edges", "network", None, _read_edges, "")
    with pytest.raises(TypeError, match="open must take the source"):
        Reader("edges", "network", None, lambda *, path: path, "x")
    with pytest.raises(TypeError, match="register_reader takes a Reader, got dict"):
        register_reader({"name": "edges"})
    assert Reader("kw", "series", None, lambda s, **kw: s, "x").options is None


def test_two_readers_that_recognise_a_source_is_an_error(tmp_path, registry):
    register_reader(Reader("csv_twin", "series", lambda s: str(s).endswith(".csv"),
                           lambda s: None, "a second CSV reader"))
    (tmp_path / "q.csv").write_text("time,1\n2021-01-01,1\n")
    with pytest.raises(ReaderGuessError, match=r"q.csv: 2 series readers recognise it "
                                               r"\(wide_csv, csv_twin\); pass engine="):
        open_series(tmp_path / "q.csv")
    assert open_series(tmp_path / "q.csv", "wide_csv").shape == (1, 1)


def test_a_failing_guess_is_logged_and_skipped(tmp_path, registry, caplog):
    def broken(source):
        raise RuntimeError("guess exploded")

    register_reader(Reader("broken", "series", broken, lambda s: None, "nothing"))
    (tmp_path / "q.csv").write_text("time,1\n2021-01-01,1\n")
    with caplog.at_level(logging.WARNING, logger="hydroscale.io"):
        assert guess_engine(tmp_path / "q.csv", "series") == "wide_csv"
    assert "reader 'broken' failed while guessing" in caplog.text


def test_a_custom_series_reader_is_checked_and_ingested(tmp_path, registry):
    def read_npz(path, *, units="m3 s-1"):
        with np.load(path) as z:
            return xr.DataArray(z["q"], {"reach": z["ids"], "time": HOURS}, ("reach", "time"),
                                attrs={"units": units})

    register_reader(Reader("npz", "series", lambda s: str(s).endswith(".npz"), read_npz,
                           "a NumPy archive"))
    np.savez(tmp_path / "q.npz", q=Q, ids=[3, 1, 2])
    ingest(tmp_path / "q.npz", tmp_path / "f.zarr")
    np.testing.assert_allclose(open_forcing(tmp_path / "f.zarr", NET).to_xarray().values, Q)
    with pytest.raises(IOFormatError, match=r"q.npz \[units\]: units are 'mm'"):
        open_series(tmp_path / "q.npz", units="mm")
    register_reader(Reader("flat", "series", None, lambda s: xr.DataArray(Q), "wrong shape"))
    with pytest.raises(TypeError, match=r"series reader 'flat' returned \('dim_0', 'dim_1'\)"):
        open_series(tmp_path / "q.npz", "flat")


# ------------------------------------------------------------------------ workflows and CLI
def test_a_workflow_reads_a_registered_network_reader(tmp_path, registry):
    path = _edges(tmp_path / "basin.edges")
    wf = small_route(tmp_path / "out", network={"source": "edges", "path": str(path)})
    with pytest.raises(WorkflowError, match=r"network.source: expected one of 'synthetic', "
                                            r"'routelink', 'rapid', 'lower_colorado' or a "
                                            r"network reader's engine \(routelink, "
                                            r"rapid_connect, mizuroute, rapid2\), got 'edges'"):
        workflow_from_mapping(wf)
    register_reader(EDGES)
    cfg = workflow_from_mapping(wf)
    net, basin = build_network(cfg["network"])
    assert basin is None and net.n_reaches == 4
    # the built-in names map onto the registry's engines
    write_rapid_connect(NET, tmp_path / "c.csv")
    for source in ("rapid", "rapid_connect"):
        cfg = workflow_from_mapping(small_route(tmp_path, network={
            "source": source, "path": str(tmp_path / "c.csv"), "riv_bas_id": None}))
        np.testing.assert_array_equal(build_network(cfg["network"])[0].ids, NET.ids)


def test_the_cli_guesses_the_network_reader(tmp_path, registry, capsys):
    write_routelink(tmp_path / "RouteLink.nc")
    assert cli_main(["route", "--network", str(tmp_path / "RouteLink.nc"), "--steps", "3",
                     "--check"]) == EXIT_OK
    net = yaml.safe_load(capsys.readouterr().out)["network"]
    assert net["source"] == "routelink" and net["path"] == str(tmp_path / "RouteLink.nc")
    path = _edges(tmp_path / "basin.edges")
    assert cli_main(["route", "--network", str(path), "--check"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"--network '{path}': expected 'synthetic', 'lower_colorado', a RouteLink NetCDF " \
           "(.nc), a RAPID rapid_connect CSV (.csv), a mizuRoute river network (NTOPO .nc or " \
           "control file) or a RAPID2 namelist (.yml) and its connectivity, basin, k and x " \
           "tables, or ENGINE:PATH" in err
    assert "basin.edges: no network reader recognises it" in err
    register_reader(EDGES)
    out = tmp_path / "run"
    code = cli_main(["route", _write(tmp_path / "w.yaml", small_route(out)), "--network",
                     str(path), "--no-progress"])
    assert code == EXIT_OK and "hydroscale route: done" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["reaches"] == 4
    # ENGINE:PATH names the reader of a file no guess takes
    write_rapid_connect(NET, tmp_path / "net.dat")
    assert cli_main(["route", "--network", f"rapid_connect:{tmp_path / 'net.dat'}", "--steps",
                     "3", "--check"]) == EXIT_OK
    net = yaml.safe_load(capsys.readouterr().out)["network"]
    assert net["source"] == "rapid_connect" and net["path"] == str(tmp_path / "net.dat")


def _write(path: Path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)

"""The ``hydroscale`` command line: each subcommand on small inputs, outputs and exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hydroscale.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from hydroscale.io import open_output
from hydroscale.routing import route_oracle
from hydroscale.workflows import build_inputs, load_workflow

sys.path.insert(0, str(Path(__file__).parent / "workflows"))
from workflow_cases import small_calibrate, small_route  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def tiny_file(tmp_path) -> str:
    return _write(tmp_path / "tiny.yaml", small_route(tmp_path / "out"))


def test_help_lists_commands_and_exit_codes(capsys):
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for cmd in ("route", "partition", "ingest", "bench", "demo", "validate"):
        assert cmd in out
    assert "exit codes: 0 ok, 1 the run failed, 2 bad flags" in out
    assert main(["route", "--help"]) == EXIT_OK
    assert "--set KEY=VALUE" in capsys.readouterr().out


def test_no_command_and_bad_flags_are_usage_errors(capsys):
    assert main([]) == EXIT_USAGE
    assert main(["route", "--bogus"]) == EXIT_USAGE
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["route", "--substeps", "0"]) == EXIT_USAGE
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["route", "--engine", "gpu"]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["route", "--param", "tau"]) == EXIT_USAGE
    assert "--param 'tau': expected NAME=VALUE" in capsys.readouterr().err
    assert main(["route", "--", "x"]) == EXIT_USAGE
    assert main(["route", "--network", "net.shp"]) == EXIT_USAGE
    assert "a RouteLink NetCDF (.nc), a RAPID rapid_connect CSV (.csv), a mizuRoute" in \
        capsys.readouterr().err


def test_invalid_workflow_files_exit_2_naming_the_key(tmp_path, capsys):
    wf = small_route(tmp_path)
    wf["routing"]["substepz"] = 3
    assert main(["route", _write(tmp_path / "a.yaml", wf)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "routing.substepz: unknown key" in err and "substeps" in err
    wf = small_route(tmp_path)
    wf["forcing"]["steps"] = "ten"
    assert main(["route", _write(tmp_path / "b.yaml", wf)]) == EXIT_USAGE
    assert "forcing.steps: expected an integer >= 1 or null, got str 'ten'" in \
        capsys.readouterr().err
    assert main(["route", str(tmp_path / "missing.yaml")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    assert main(["route", _write(tmp_path / "c.yaml", small_route(tmp_path)),
                 "--set", "routing.window=wide"]) == EXIT_USAGE
    assert "routing.window: expected an integer >= 1 or 'auto', got str 'wide'" in \
        capsys.readouterr().err


def test_check_prints_resolved_workflow_with_flags_and_overrides(tiny_file, capsys):
    code = main(["route", tiny_file, "--check", "--substeps", "3", "--set",
                 "routing.substeps=4", "--steps", "7", "--reach", "5", "--reach", "9"])
    assert code == EXIT_OK
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["routing"]["substeps"] == 4  # --set is applied after the flags
    assert cfg["forcing"]["steps"] == 7
    assert cfg["output"]["hydrographs"]["reaches"] == [5, 9]
    assert cfg["routing"]["irf"] == "linear_storage"  # from the file


def _readme_commands() -> list[list[str]]:
    """The `hydroscale` commands of README.md's code blocks (`dev.py demo` is `demo`)."""
    import shlex

    cmds = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith((".venv/bin/hydroscale", "python3 dev.py")):
            continue
        words = shlex.split(line.split("#")[0])
        if words[:1] == [".venv/bin/hydroscale"] and len(words) > 1 and words[1] != "--help":
            cmds.append(words[1:])
        elif words[:3] == ["python3", "dev.py", "demo"]:
            cmds.append(["demo"])
    return cmds


def _output_dir(argv: list[str], capsys) -> str:
    """Where ``hydroscale ARGV`` writes, from its resolved workflow (``--check``)."""
    from hydroscale.cli import build_parser

    if argv[0] == "demo":  # demo runs the packaged workflow with its own --out
        return build_parser().parse_args(argv).out
    assert main([*argv, "--check"]) == EXIT_OK, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)["output"]["dir"]


def test_readme_commands_write_distinct_folders(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # README paths are relative to the repository root
    cmds = _readme_commands()
    assert len(cmds) >= 6, cmds  # demo, two routes, partition, two calibrations
    folders = {" ".join(c): _output_dir(c, capsys) for c in cmds}
    assert folders == {
        "demo": "out/demo",
        "route --reaches 100000 --steps 365": "out/route",
        "route workflows/route.yaml --cluster local-cpu": "out/route-cluster",
        "partition --reaches 1000000 --out out/partition": "out/partition",
        "calibrate workflows/calibrate.yaml": "out/calibrate",
        "calibrate workflows/calibrate.yaml --cluster local-cpu": "out/calibrate-cluster",
    }


def test_default_output_folder_per_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    for argv, folder in ((["route", "--steps", "3"], "out/route"),
                         (["bench", "--steps", "3"], "out/bench"),
                         (["partition", "--reaches", "10"], "out/partition"),
                         (["route", "workflows/route.yaml"], "out/route"),
                         (["bench", "workflows/route.yaml"], "out/bench"),
                         (["partition", "workflows/route.yaml"], "out/partition"),
                         (["bench", "workflows/benchmark.yaml"], "out/bench"),
                         (["route", "workflows/demo.yaml"], "out/demo-workflow")):
        assert _output_dir(argv, capsys) == folder, argv
    # a folder given in the file, by --out or --set wins, on a cluster too
    wf = small_route(tmp_path / "mine")
    path = _write(tmp_path / "wf.yaml", wf)
    assert _output_dir(["route", path, "--cluster", "local-cpu"], capsys) == \
        str(tmp_path / "mine")
    assert _output_dir(["route", "--steps", "3", "--out", "elsewhere"], capsys) == "elsewhere"
    assert _output_dir(["calibrate", "workflows/calibrate.yaml", "--set", "output.dir=o"],
                       capsys) == "o"
    # the library resolves a null output.dir to the command of the workflow's kind
    from hydroscale.workflows import default_output_dir

    cfg = load_workflow(None, kind="benchmark", values={"forcing.steps": 3})
    assert cfg["output"]["dir"] == default_output_dir("bench") == "out/bench"


def test_show_schema(capsys):
    assert main(["route", "--show-schema"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "routing.substeps: an integer >= 1 (default: 1)" in out
    assert "output.hydrographs.reaches" in out
    assert main(["ingest", "--show-schema"]) == EXIT_OK
    assert "ingest.time_is_end: true or false" in capsys.readouterr().out


def test_route_runs_and_prints_summary(tiny_file, tmp_path, capsys):
    code = main(["route", tiny_file, "--no-progress", "--out", str(tmp_path / "r"),
                 "--set", "routing.engine=torch"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "hydroscale route: done" in out and "reaches      150" in out
    assert "reach-steps/s routing" in out and str(tmp_path / "r" / "discharge.zarr") in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["reaches"] == 150 and summary["steps"] == 12
    assert Path(summary["outputs"]["hydrographs"]).is_file()
    cfg = load_workflow(tiny_file)
    inputs = build_inputs(cfg)
    q0 = route_oracle(inputs.network, inputs.forcing.read_all(0, 12).astype(np.float64),
                      "linear_storage", inputs.params, substeps=2)
    q = open_output(tmp_path / "r" / "discharge.zarr", inputs.network).values
    np.testing.assert_allclose(q, np.asarray(q0), rtol=1e-5, atol=1e-5)


def test_route_runtime_errors_exit_1(tmp_path, capsys):
    code = main(["route", "--reaches", "50", "--steps", "4", "--forcing",
                 str(tmp_path / "nowhere.zarr"), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == EXIT_ERROR
    assert "hydroscale route: error:" in capsys.readouterr().err
    # Muskingum with k x > dt/2 is refused unless --allow-unstable: a runtime error naming ids
    code = main(["route", "--reaches", "50", "--steps", "4", "--param", "k=3", "--param",
                 "x=0.3", "--out", str(tmp_path / "o"), "--no-progress", "--engine", "oracle"])
    assert code == EXIT_ERROR
    assert "negative Muskingum coefficient" in capsys.readouterr().err


def test_route_on_existing_cluster_matches_oracle(tmp_path, capsys):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc:
        cluster = _write(tmp_path / "cluster.yaml", {"kind": "scheduler",
                                                     "address": lc.scheduler_address})
        wf = small_route(tmp_path / "dist")
        wf["routing"]["engine"] = "auto"
        path = _write(tmp_path / "wf.yaml", wf)
        assert main(["route", path, "--cluster", cluster, "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "Dask cluster with 2 workers" in out and "dashboard: http" in out
    assert "distributed/auto on cluster" in out and "2 workers" in out
    cfg = load_workflow(path)
    inputs = build_inputs(cfg)
    q0 = route_oracle(inputs.network, inputs.forcing.read_all(0, 12).astype(np.float64),
                      "linear_storage", inputs.params, substeps=2)
    q = open_output(tmp_path / "dist" / "discharge.zarr", inputs.network).values
    np.testing.assert_allclose(q, np.asarray(q0), rtol=1e-5, atol=1e-5)
    summary = json.loads((tmp_path / "dist" / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["tasks"] == summary["groups"] * 3  # 3 chunks


def test_partition_command(tiny_file, tmp_path, capsys):
    code = main(["partition", tiny_file, "--workers", "3", "--max-reaches", "40", "--out",
                 str(tmp_path / "p"), "--no-progress"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "p" / "partition_summary.json").read_text())
    assert f"-> {s['clusters']} clusters" in out and s["reaches"] == 150
    from hydroscale.partition import Partition

    part = Partition.load(s["outputs"]["partition"], build_inputs(load_workflow(tiny_file)).network)
    assert part.n_workers == 3 and part.options["max_reaches"] == 40
    assert int(part.size.max()) <= 40
    for key in ("report", "figure"):
        assert Path(s["outputs"][key]).is_file()


def test_ingest_command_paths_and_workflow(tmp_path, capsys):
    csv = tmp_path / "q.csv"
    csv.write_text("time,7,8\n2020-01-01T00:00,1.5,2.5\n2020-01-02T00:00,3.5,4.5\n")
    store = tmp_path / "q.zarr"
    assert main(["ingest", str(csv), str(store), "--chunks", "1,2", "--no-progress"]) == EXIT_OK
    assert "2 reaches x 2 steps (interval 86400.0 s)" in capsys.readouterr().out
    import zarr

    root = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(root["runoff"][:], [[1.5, 3.5], [2.5, 4.5]])
    assert root["runoff"].chunks == (1, 2)
    assert main(["ingest", str(csv), str(store)]) == EXIT_ERROR  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    wf = _write(tmp_path / "ing.yaml", {"kind": "ingest", "ingest": {
        "source": str(csv), "store": str(tmp_path / "w.zarr"), "name": "qlat"}})
    assert main(["ingest", wf, "--no-progress"]) == EXIT_OK
    assert "qlat" in zarr.open_group(tmp_path / "w.zarr", mode="r")
    assert main(["ingest", "a", "b", "c"]) == EXIT_USAGE
    assert main(["ingest", str(csv), str(tmp_path / "x.zarr"), "--chunks", "a,b"]) == EXIT_USAGE
    assert main(["ingest", str(tmp_path / "bad.yaml")]) == EXIT_USAGE


def test_bench_workflow_and_scripts(tiny_file, tmp_path, capsys):
    code = main(["bench", tiny_file, "--set", "benchmark.oracle_reaches=80", "--set",
                 "routing.dtype=float32", "--out", str(tmp_path / "b"), "--no-progress"])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert "reach-steps/s" in out and f"rel. L2 {r['oracle']['rel_l2']:.2e}" in out
    assert r["oracle"]["rel_l2"] < 1e-5 and r["reaches"] == 150
    assert main(["bench", "--list"]) == EXIT_OK
    listed = capsys.readouterr().out
    assert "partition" in listed and "network" in listed
    assert main(["bench", "--script", "nope"]) == EXIT_USAGE
    assert "no such bench script" in capsys.readouterr().err


def test_bench_script_runs_with_its_arguments(capsys):
    assert main(["bench", "--script", "network", "--", "--reaches", "2000"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "reaches" in out and "2000" in out


def test_validate_command(tmp_path, capsys):
    files = [str(p) for p in sorted((ROOT / "workflows").glob("*.yaml"))]
    assert len(files) >= 4
    assert main(["validate", *files]) == EXIT_OK
    assert capsys.readouterr().out.count(": ok (") == len(files)
    bad = _write(tmp_path / "bad.yaml", {"kind": "route", "routing": {"irf": 3}})
    assert main(["validate", files[0], bad]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "bad.yaml: INVALID" in err and "routing.irf: expected a string, got int 3" in err


def _check_summary_matches_json(out: str, summary: dict) -> None:
    """The printed route summary states what summary.json holds (truncation, window, size)."""
    line = next(x for x in out.splitlines() if x.strip().startswith("truncation"))
    printed = float(line.split("max_truncated_mass")[1].split(":")[0])
    assert printed == float(f"{summary['max_truncated_mass']:.3g}")
    assert ("the window spans the whole run" in line) == summary["window_is_run_length"]
    assert summary["window_is_run_length"] == (summary["window"] >= summary["steps"])
    if summary["window_is_run_length"]:
        assert summary["max_truncated_mass"] == 0.0
    assert f"window {summary['window']} steps" in out
    assert f"reaches      {summary['reaches']:,}" in out
    assert f"steps        {summary['steps']:,} of" in out
    lake_lines = [x for x in out.splitlines() if x.strip().startswith("lakes ")]
    if not summary.get("lakes"):
        assert not lake_lines
        return
    (line,) = lake_lines
    lakes = summary["lakes"]
    total = sum(lk["storage_change_m3"] for lk in lakes)
    stages = max(lk["stage"] for lk in lakes)
    assert f"{len(lakes)} level-pool lakes in {stages} stages" in line
    assert f"storage change {total:+.3g} m³" in line


def _demo_oracle(steps: int):
    """The demo's discharge [N, steps] by the float64 oracle from the steady state of NWM's
    streamflow at the first CHRTOUT time (lake reaches passing their inflow through)."""
    import torch

    from hydroscale.api import upstream
    from hydroscale.io import load_lower_colorado

    basin = load_lower_colorado()
    net = basin.network
    nwm = basin.streamflow.values[:, 0].astype(np.float64)
    lat = basin.q_lateral.values[:, 0].astype(np.float64)
    q0 = basin.nwm_discharge(0)
    lake = np.isnan(nwm)
    assert lake.sum() == 341 and np.isfinite(q0).all()
    np.testing.assert_array_equal(q0[~lake], nwm[~lake])  # NWM's value where it reports one
    up = np.asarray(upstream(net, q0))
    np.testing.assert_allclose(q0[lake], lat[lake] + up[lake], rtol=1e-12)  # passes through
    r = basin.q_lateral.values[:, :steps].astype(np.float64)
    a = net.attrs
    p = {"k": torch.from_numpy(a["musk"] / 3600.0), "x": torch.from_numpy(a["musx"])}
    r_star = q0 - up  # the steady inflow that yields q0 (negative where NWM falls downstream)
    assert (r_star < 0).sum() == 314
    want = q0[:, None] + route_oracle(net, torch.from_numpy(r - r_star[:, None]), "muskingum",
                                      p).numpy()
    return net, q0, want


def _demo_oracle_lakes(steps: int):
    """The demo with its level-pool lakes (the default): the float64 oracle engine routing
    the network stage by stage between the lakes (LakeRouter's stage path, independent of
    the block-sparse engine's node clusters), from the steady state of NWM's streamflow,
    each lake at the level releasing it."""
    import torch

    from hydroscale.io import load_lower_colorado
    from hydroscale.routing import LakeRouter

    basin = load_lower_colorado()
    net = basin.network
    q0 = torch.as_tensor(basin.nwm_discharge(0))[None]
    r = torch.as_tensor(basin.q_lateral.values[:, :steps].astype(np.float64))[None]
    a = net.attrs
    p = torch.from_numpy(np.stack([a["musk"] / 3600.0, a["musx"]], 1))
    router = LakeRouter(net, basin.lakes, irf="muskingum", dt=3600.0, engine="oracle",
                        dtype=torch.float64, allow_unstable=True)
    want = router(r, p, offsets=router.steady_offsets(q0))[0].numpy()
    return net, q0[0].numpy(), want, basin.lakes


def test_demo_runs_the_packaged_workflow_and_matches_the_oracle(tmp_path, capsys):
    """`hydroscale demo` on one device, 6 steps: Zarr + PNG + summary; the discharge is the
    oracle's from the steady state of NWM's streamflow; the printed summary is summary.json's."""
    import zarr

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--set", "cluster=null",
                 "--set", "forcing.steps=6"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "hydroscale route: done" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reaches"] == 11_248 and summary["steps"] == 6
    _check_summary_matches_json(printed, summary)
    assert (out / "hydrographs.png").stat().st_size > 10_000
    assert len(summary["lakes"]) == 30  # the basin's level-pool lakes, by default
    q = zarr.open_group(str(out / "discharge.zarr"), mode="r")
    net, q0, want, lakes = _demo_oracle_lakes(6)
    order = net.index_of(np.asarray(q["reach"][:]))
    got = np.asarray(q["discharge"][:], dtype=np.float64)
    err = np.linalg.norm(got - want[order]) / np.linalg.norm(want)
    assert err < 1e-5
    outlet = net.outlets[0]
    assert abs(got[np.argsort(order)][outlet, 0] - q0[outlet]) < 0.01 * q0[outlet]  # ~70 m³/s
    # the lakes act: without them (the lake-free oracle) the reaches below differ
    _, _, free = _demo_oracle(6)
    below = net.index_of(lakes.reach_ids)
    assert np.abs(free[below] - want[below]).max() > 1e-3


def test_demo_on_a_cluster_matches_one_device_and_its_summary(tmp_path, capsys):
    """The demo through the Dask runtime (the workers route r - r*, Q0 is added; the lakes
    as lake groups): the same discharge as the oracle with lakes, and the printed summary
    states summary.json's truncation."""
    import zarr
    from distributed import LocalCluster

    out = tmp_path / "demo-cluster"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc:
        cluster = _write(tmp_path / "cluster.yaml", {"kind": "scheduler",
                                                     "address": lc.scheduler_address})
        assert main(["demo", "--out", str(out), "--cluster", cluster,
                     "--set", "forcing.steps=6"]) == EXIT_OK
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"].startswith("distributed/") and summary["steps"] == 6
    _check_summary_matches_json(printed, summary)
    assert summary["lake_groups"] >= 1  # the lakes, as groups of the wave plan
    assert len(summary["lakes"]) == 30  # each with its start and end level from the workers
    assert all(np.isfinite(lk["elevation_end_m"]) for lk in summary["lakes"])
    for lk in summary["lakes"]:  # and the volumes in and out, which close its balance
        assert lk["inflow_m3"] >= 0 and lk["outflow_m3"] >= 0
        assert lk["inflow_m3"] - lk["outflow_m3"] == pytest.approx(
            lk["storage_change_m3"], abs=1e-6 * max(lk["inflow_m3"], lk["outflow_m3"]) + 1e-3)
    assert sum(lk["inflow_m3"] > 0 for lk in summary["lakes"]) >= 20
    q = zarr.open_group(str(out / "discharge.zarr"), mode="r")
    net, _, want, _ = _demo_oracle_lakes(6)
    order = net.index_of(np.asarray(q["reach"][:]))
    got = np.asarray(q["discharge"][:], dtype=np.float64)
    assert np.linalg.norm(got - want[order]) / np.linalg.norm(want) < 1e-5


def test_route_summary_states_a_window_shorter_than_the_run(tiny_file, tmp_path, capsys):
    """A run longer than its fitted window: the printed truncated mass is summary.json's."""
    out = tmp_path / "long"
    assert main(["route", tiny_file, "--no-progress", "--out", str(out), "--set",
                 "forcing.steps=200"]) == EXIT_OK
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["window_is_run_length"] and 0 < summary["max_truncated_mass"] <= 1e-6
    _check_summary_matches_json(capsys.readouterr().out, summary)


def test_demo_workflow_has_one_source():
    """`hydroscale demo` runs the packaged file; workflows/demo.yaml is a link to it."""
    from hydroscale.cli import DEMO_WORKFLOW

    linked = ROOT / "workflows" / "demo.yaml"
    assert linked.is_symlink()
    assert linked.resolve() == ROOT / "hydroscale" / "workflows" / "demo.yaml"
    assert linked.read_bytes() == DEMO_WORKFLOW.read_bytes()


def test_calibrate_command(tmp_path, capsys):
    path = _write(tmp_path / "cal.yaml", small_calibrate(tmp_path / "c"))
    assert main(["calibrate", path, "--iterations", "3", "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["iterations"] == 3
    assert "hydroscale calibrate: done" in out and "tau" in out
    assert f"{s['loss']['first']:.4g} -> {s['loss']['last']:.4g}" in out
    # the memory plan beside the measured peak (one device: one figure each)
    assert s["memory_strategy"] == "keep+no-remat"
    assert len(s["planned_peak_gb"]) == len(s["measured_peak_gb"]) == 1
    assert f"memory       keep+no-remat: planned {s['planned_peak_gb'][0]:.2f} GB" in out
    assert main(["calibrate", path, "--param", "tau=1"]) == EXIT_USAGE
    assert "calibrate fits the parameters" in capsys.readouterr().err
    assert main(["calibrate", path, "--set", "observations.truth=null"]) == EXIT_USAGE
    assert "observations.truth: required" in capsys.readouterr().err
    assert main(["calibrate", "--show-schema"]) == EXIT_OK
    assert "model.init" in capsys.readouterr().out


def _plan_rows(out: str) -> list[list[str]]:
    """The per-worker rows of a printed plan (the lines after its column header)."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("worker  groups"))
    rows = []
    for line in lines[head + 1:]:
        if not line.split() or not line.split()[0].isdigit():
            break
        rows.append(line.split())
    return rows


def test_calibrate_plan_on_one_device(tmp_path, capsys):
    """--plan prints the memory plan (per-worker GB against the limit) and stops before the
    first iteration; a limit it cannot fit is an error naming estimate, limit and setting."""
    wf = small_calibrate(tmp_path / "c")
    wf["routing"]["engine"] = "torch"
    path = _write(tmp_path / "cal.yaml", wf)
    assert main(["calibrate", path, "--plan", "--memory-limit", "2GB",
                 "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("plan: calibration (torch), kernel_graph keep, rematerialise no")
    (row,) = _plan_rows(out)
    assert row[:3] == ["0", "1", "80"] and row[-1] == "2.00"  # worker, groups, reaches, GB
    assert 0 <= float(row[-2]) < 2.0 and "keep+no-remat" in out
    assert not (tmp_path / "c" / "history.json").exists()  # no iteration ran
    assert main(["calibrate", path, "--plan", "--memory-limit", "1kB",
                 "--no-progress"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "does not fit" in err and "needs" in err and "1e-06 GB" in err
    assert "(memory_limit)" in err and "raise memory_limit" in err


def test_calibrate_plan_on_a_local_cluster(tmp_path, capsys):
    """On a cluster the wave runtime's plan: one row per worker, the strategy chosen."""
    wf = small_calibrate(tmp_path / "c")
    wf["routing"].update(engine="auto", max_reaches=16)
    path = _write(tmp_path / "cal.yaml", wf)
    assert main(["calibrate", path, "--plan", "--cluster", "local-cpu", "--memory-limit",
                 "3GB", "--no-progress"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "plan: calibration (waves), kernel_graph keep, rematerialise no (the fastest " \
           "that fits)" in out
    rows = _plan_rows(out)
    assert [r[0] for r in rows] == ["0", "1"] and all(r[-1] == "3.00" for r in rows)
    assert sum(int(r[2]) for r in rows) == 80  # every reach on one worker
    assert not (tmp_path / "c" / "history.json").exists()


"""Workflow loading and validation: shipped files, unknown keys, types, overrides, cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workflow_cases import small_calibrate, small_route

from hydroscale.workflows import (
    SCHEMAS,
    WorkflowError,
    apply_overrides,
    load_workflow,
    workflow_from_mapping,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, kind", [("route.yaml", "route"), ("demo.yaml", "route"),
                                        ("benchmark.yaml", "benchmark"),
                                        ("ingest.yaml", "ingest"),
                                        ("calibrate.yaml", "calibrate")])
def test_shipped_workflows_are_valid(name, kind):
    cfg = load_workflow(ROOT / "workflows" / name)
    assert cfg["kind"] == kind
    raw = yaml.safe_load((ROOT / "workflows" / name).read_text())
    # values given in the file come through unchanged, the rest are the schema defaults
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if not isinstance(value, dict) or key == "params":
                    assert cfg[section][key] == value, (section, key)


def test_defaults_filled_in(tmp_path):
    cfg = workflow_from_mapping({"kind": "route", "forcing": {"steps": 3}})
    assert cfg["routing"]["substeps"] == 1
    assert cfg["routing"]["window"] == "auto"
    assert cfg["output"]["hydrographs"]["max_panels"] == 6
    assert cfg["network"] == {"source": "synthetic", "path": None, "riv_bas_id": None,
                              "reaches": 100_000, "seed": 0, "lakes": None}
    assert cfg["routing"]["lakes"] == "none"
    assert cfg["cluster"] is None


def test_unknown_key_names_key_and_allowed(tmp_path):
    wf = small_route(tmp_path)
    wf["routing"]["substep"] = 4
    wf["extra"] = 1
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(wf)
    msg = str(err.value)
    assert "routing.substep: unknown key" in msg and "substeps" in msg
    assert "extra: unknown key" in msg
    assert len(err.value.problems) == 2  # all problems at once


@pytest.mark.parametrize("section, key, value, expected", [
    ("routing", "substeps", "abc", "routing.substeps: expected an integer >= 1, got str 'abc'"),
    ("routing", "substeps", 0, "routing.substeps: expected an integer >= 1, got int 0"),
    ("routing", "substeps", True, "expected an integer >= 1, got bool True"),
    ("routing", "engine", "cuda", "routing.engine: expected one of 'auto', 'torch', 'triton', "
                                  "'oracle', got str 'cuda'"),
    ("routing", "window", "big", "routing.window: expected an integer >= 1 or 'auto'"),
    ("output", "overwrite", "yes", "output.overwrite: expected true or false, got str 'yes'"),
    ("network", "reaches", 2.5, "network.reaches: expected an integer >= 2, got float 2.5"),
    ("forcing", "steps", -1, "forcing.steps: expected an integer >= 1 or null, got int -1"),
])
def test_wrong_types_name_key_expected_and_value(tmp_path, section, key, value, expected):
    wf = small_route(tmp_path)
    wf[section][key] = value
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(wf)
    assert expected in str(err.value)


def test_section_must_be_mapping(tmp_path):
    wf = small_route(tmp_path)
    wf["routing"] = [1, 2]
    with pytest.raises(WorkflowError, match=r"routing: expected a mapping of keys, got list"):
        workflow_from_mapping(wf)


def test_kind_required_and_checked():
    with pytest.raises(WorkflowError, match="kind: required"):
        workflow_from_mapping({"forcing": {"steps": 3}})
    with pytest.raises(WorkflowError, match="kind: expected one of 'route', 'ingest', "
                                            "'benchmark', 'calibrate', got 'rout'"):
        workflow_from_mapping({"kind": "rout"})
    with pytest.raises(WorkflowError, match="this command runs 'route' workflows"):
        workflow_from_mapping({"kind": "ingest"}, kind="route")


@pytest.mark.parametrize("params, expected", [
    ({"tau": {"uniform": [2, 1]}}, "uniform: expected [low, high] with low <= high"),
    ({"tau": "fast"}, "parameter 'tau': expected a number"),
    ({"tau": {"uniform": [1, 2], "attribute": "length"}}, "exactly one of uniform/attribute"),
    ({"tau": {"attribute": "length", "units": "weeks"}}, "units: expected one of"),
    ({"k": 1.0}, "IRF 'linear_storage' takes ['tau']; missing ['tau'], unknown ['k']"),
])
def test_params_checked(tmp_path, params, expected):
    wf = small_route(tmp_path)
    wf["routing"]["params"] = params
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(wf)
    assert expected in str(err.value)


def test_cross_checks(tmp_path):
    wf = small_route(tmp_path)
    wf["forcing"] = {"source": "zarr"}
    wf["network"] = {"source": "routelink"}
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(wf)
    msg = str(err.value)
    assert "network.path: required with network.source 'routelink'" in msg
    assert "forcing.path: required with forcing.source 'zarr'" in msg
    wf = small_route(tmp_path)
    del wf["forcing"]["steps"]
    with pytest.raises(WorkflowError, match="forcing.steps: required"):
        workflow_from_mapping(wf)


def test_bad_cluster_config_is_a_workflow_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: local-cpu\nn_wrkers: 2\n")
    wf = small_route(tmp_path)
    wf["cluster"] = str(cfg)
    with pytest.raises(WorkflowError, match="cluster: .*unknown keys \\['n_wrkers'\\]"):
        workflow_from_mapping(wf)


def test_overrides_parse_yaml_values_and_win(tmp_path):
    wf = small_route(tmp_path)
    cfg = workflow_from_mapping(wf, ["routing.substeps=24", "routing.substeps=6",
                                     "output.hydrographs.reaches=[3, 4]",
                                     "routing.params={tau: 2.5}", "partition.max_travel_time=",
                                     "forcing.start=2001-02-03T00:00:00"])
    assert cfg["forcing"]["start"] == "2001-02-03T00:00:00"  # YAML timestamps become strings
    assert cfg["routing"]["substeps"] == 6
    assert cfg["output"]["hydrographs"]["reaches"] == [3, 4]
    assert cfg["routing"]["params"] == {"tau": 2.5}
    assert cfg["partition"]["max_travel_time"] is None
    assert cfg["routing"]["time_chunk"] == 5  # untouched
    with pytest.raises(WorkflowError, match=r"routing.substeps: expected an integer >= 1, got "
                                            r"str 'many'"):
        workflow_from_mapping(wf, ["routing.substeps=many"])


def test_override_of_one_parameter_keeps_the_others(tmp_path):
    """``--set routing.params.x=0.3`` changes x only, whether k comes from the file or from
    the defaults; a mapping value replaces that one parameter's source."""
    wf = small_route(tmp_path, routing={"irf": "muskingum", "params": {"k": 2.0, "x": 0.2}})
    cfg = workflow_from_mapping(wf, ["routing.params.x=0.3"])
    assert cfg["routing"]["params"] == {"k": 2.0, "x": 0.3}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(wf))
    cfg = load_workflow(path, ["routing.params.k={uniform: [1, 2]}", "routing.params.x=0.1"])
    assert cfg["routing"]["params"] == {"k": {"uniform": [1, 2]}, "x": 0.1}
    cfg = load_workflow(None, ["kind=route", "forcing.steps=3", "routing.params.x=0.3"])
    assert cfg["routing"]["params"] == {"k": 1.0, "x": 0.3}  # k: the schema's default
    cal = workflow_from_mapping(small_calibrate(tmp_path), ["model.bounds.tau=[0.5, 3]",
                                                            "observations.truth.tau=1.5"])
    assert cal["model"]["bounds"] == {"tau": [0.5, 3]}
    assert cal["observations"]["truth"] == {"tau": 1.5}
    with pytest.raises(WorkflowError, match=r"routing.params: IRF 'muskingum' takes \['k', "
                                            r"'x'\]; missing \[\], unknown \['y'\]"):
        workflow_from_mapping(wf, ["routing.params.y=0.3"])
    with pytest.raises(WorkflowError, match="--set routing.substeps.x: unknown key"):
        workflow_from_mapping(wf, ["routing.substeps.x=1"])


def test_bad_overrides():
    with pytest.raises(WorkflowError) as err:
        apply_overrides({}, ["routing.substepz=2", "novalue", "a.b=[1"], SCHEMAS["route"])
    msg = str(err.value)
    assert "--set routing.substepz: unknown key" in msg
    assert "--set 'novalue': expected KEY=VALUE" in msg
    assert "--set a.b: unknown key" in msg


def test_yaml_errors_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: route\nrouting: {substeps: [\n")
    with pytest.raises(WorkflowError, match="not valid YAML"):
        load_workflow(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_workflow(tmp_path / "nope.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(WorkflowError, match="expected a mapping of keys at the top, got list"):
        load_workflow(top)


def test_route_command_accepts_benchmark_and_bench_accepts_route(tmp_path):
    wf = small_route(tmp_path)
    cfg = workflow_from_mapping(wf, kind="benchmark")
    assert cfg["kind"] == "benchmark" and cfg["benchmark"]["repeat"] == 1
    wf["kind"] = "benchmark"
    assert workflow_from_mapping(wf, kind="route")["kind"] == "benchmark"


def test_cluster_runs_refuse_single_device_options(tmp_path):
    wf = small_route(tmp_path, routing={"initial": "steady", "device": "cpu",
                                        "engine": "oracle"})
    wf["cluster"] = "auto"
    with pytest.raises(WorkflowError) as err:
        workflow_from_mapping(wf)
    msg = str(err.value)
    assert "routing.initial 'steady' on a cluster works with the bundled forcing only" in msg
    assert "routing.device: a cluster run uses its workers' devices" in msg
    assert "routing.engine 'oracle' is single-device" in msg
    wf = small_route(tmp_path)
    wf["cluster"] = "auto"
    assert workflow_from_mapping(wf)["cluster"] == "auto"
    wf["cluster"] = 3
    with pytest.raises(WorkflowError, match="cluster: expected a cluster config path or mapping"):
        workflow_from_mapping(wf)

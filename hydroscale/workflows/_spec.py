"""The workflow kinds (``route``, ``benchmark``, ``ingest``), their schemas and loading.

A workflow file is YAML with a top-level ``kind``; every other key is checked against the
kind's schema (:data:`SCHEMAS`), unknown keys included.  Relative paths are relative to the
directory the command runs in.  ``hydroscale <command> --show-schema`` prints every key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._schema import Field, WorkflowError, apply_overrides, set_values, validate
from ._yaml import read_yaml_file

__all__ = ["COMMANDS", "KINDS", "SCHEMAS", "TIME_UNITS", "default_output_dir", "load_workflow",
           "workflow_from_mapping"]

#: Seconds per unit for parameters given with ``units`` (divided by the step length).
TIME_UNITS: dict[str, float | None] = {
    "steps": None, "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0,
}


def _check_param(value: Any) -> str | None:
    """A parameter is a number, ``{uniform: [lo, hi]}``, ``{attribute: name}`` or
    ``{file: path}`` (the last two optionally with ``units`` and ``factor``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    if not isinstance(value, Mapping):
        return (f"expected a number, {{uniform: [low, high]}}, {{attribute: NAME}} or "
                f"{{file: PATH}}, got {type(value).__name__} {value!r}")
    sources = [k for k in ("uniform", "attribute", "file") if k in value]
    extra = sorted(set(value) - {"uniform", "attribute", "file", "units", "factor", "seed"})
    if len(sources) != 1 or extra:
        return (f"expected exactly one of uniform/attribute/file (plus optional units, factor, "
                f"seed), got keys {sorted(value)}")
    if "uniform" in value:
        u = value["uniform"]
        if (not isinstance(u, list) or len(u) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in u)
                or u[0] > u[1]):
            return f"uniform: expected [low, high] with low <= high, got {u!r}"
    for key in ("attribute", "file"):
        if key in value and not (isinstance(value[key], str) and value[key]):
            return f"{key}: expected a string, got {value[key]!r}"
    if "units" in value and value["units"] not in TIME_UNITS:
        return f"units: expected one of {sorted(TIME_UNITS)}, got {value['units']!r}"
    f = value.get("factor", 1.0)
    if not isinstance(f, (int, float)) or isinstance(f, bool):
        return f"factor: expected a number, got {f!r}"
    return None


def _check_params(value: Any) -> str | None:
    for name, v in value.items():
        why = _check_param(v)
        if why:
            return f"parameter {name!r}: {why}"
    return None


def _check_bounds(value: Any) -> str | None:
    for name, b in value.items():
        if (not isinstance(b, list) or len(b) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
                or not b[0] < b[1]):
            return f"bounds of {name!r}: expected [low, high] with low < high, got {b!r}"
    return None


def _check_cluster(value: Any) -> str | None:
    if isinstance(value, (str, Mapping)):
        return None
    return f"expected a cluster config path or mapping, got {type(value).__name__} {value!r}"


def _check_chunks(value: Any) -> str | None:
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return None
    return f"expected [reach_chunk, time_chunk] (two positive integers), got {value!r}"


def _check_memory(value: Any) -> str | None:
    if value is None:
        return None
    try:
        from ..routing import parse_bytes

        if parse_bytes(value) > 0:
            return None
    except (ValueError, TypeError):
        pass
    return f"expected a size such as 80GB, 512MiB or a number of bytes, got {value!r}"


#: ``network.source`` values built in; any registered network reader's engine name works too
NETWORK_SOURCES = ("synthetic", "routelink", "rapid", "lower_colorado")


def _source_check(builtin: tuple[str, ...], kind: str, skip: tuple[str, ...] = ()) -> Any:
    """A check of a ``source`` value: one of ``builtin`` or the engine of a registered
    ``kind`` reader (``skip`` excepted)."""

    def check(value: Any) -> str | None:
        if value in builtin:
            return None
        from ..io import list_readers

        engines = [e for e in list_readers(kind) if e not in skip]
        if value in engines:
            return None
        return (f"expected one of {', '.join(repr(v) for v in builtin)} or a {kind} "
                f"reader's engine ({', '.join(engines)}), got {value!r}")

    return check


_check_network_source = _source_check(NETWORK_SOURCES, "network")


NETWORK = {
    "source": Field("str", "synthetic", "where the river network comes from: "
                    f"{', '.join(NETWORK_SOURCES)} (rapid: a rapid_connect CSV), or the engine "
                    "name of a network reader (hydroscale.io.list_readers('network'))",
                    check=_check_network_source),
    "path": Field("str", None, "RouteLink.nc (routelink) or rapid_connect.csv (rapid)",
                  nullable=True),
    "riv_bas_id": Field("str", None, "RAPID riv_bas_id.csv: route only these reaches",
                        nullable=True),
    "reaches": Field("int", 100_000, "synthetic: number of reaches (DESIGN §5 forest)",
                     minimum=2),
    "seed": Field("int", 0, "synthetic: random seed of the forest", minimum=0),
    "lakes": Field("str", None, "level-pool lakes (with routing.lakes level_pool): an NWM "
                   "LAKEPARM.nc (members from the network's RouteLink NHDWaterbodyComID) or a "
                   "lake table CSV (hydroscale.io.read_lake_table); null = the bundled basin's "
                   "lakes for network.source lower_colorado", nullable=True),
}

#: ``forcing.source`` values built in; any registered series reader's engine name works too
FORCING_SOURCES = ("synthetic", "zarr", "lower_colorado")


_check_forcing_source = _source_check(FORCING_SOURCES, "series", skip=("dataarray",))


FORCING = {
    "source": Field("str", "synthetic", "lateral inflow: synthetic uniform runoff, a Zarr "
                    "store from `hydroscale ingest`, the bundled basin's NWM q_lateral, or the "
                    "engine name of a series reader (hydroscale.io.list_readers('series'): "
                    "chrtout, rapid_inflow, mizuroute_runoff, ...) reading forcing.path into "
                    "memory", check=_check_forcing_source),
    "path": Field("str", None, "zarr: the forcing store; a series reader: its source",
                  nullable=True),
    "options": Field("mapping", {}, "a series reader: its options (e.g. mizuroute_runoff: "
                     "{names: {qsim: RUNOFF}}; chrtout: {variable: qSfcLatRunoff+qBucket})"),
    "steps": Field("int", None, "number of routing steps (synthetic: required; zarr/bundled: "
                   "the first N, null = all)", minimum=1, nullable=True),
    "start": Field("time", "2000-01-01T00:00:00", "synthetic: time of the first step (UTC)"),
    "interval_s": Field("float", 86400.0, "synthetic: step length in seconds", minimum=1),
    "scale": Field("float", 1.0, "synthetic: runoff ~ U(0, scale) m³/s", minimum=0),
    "seed": Field("int", 0, "synthetic: random seed of the runoff", minimum=0),
}

ROUTING = {
    "irf": Field("str", "muskingum", "impulse response (hydroscale.irf registry name)"),
    "params": Field("mapping", {"k": 1.0, "x": 0.2},
                    "per-reach IRF parameters: NAME: number | {uniform: [lo, hi]} | "
                    "{attribute: ATTR} | {file: PATH}; optional units (steps, seconds, minutes, "
                    "hours, days) and factor", check=_check_params),
    "substeps": Field("int", 1, "sub-steps per routing step (f, e.g. 24 for daily runoff "
                      "routed hourly)", minimum=1),
    "time_chunk": Field("int", 365, "routing steps per time chunk (state carried between "
                        "chunks; also the output's time chunk)", minimum=1),
    "window": Field("int", "auto", "kernel window in routing steps", minimum=1,
                    also=("auto",)),
    "engine": Field("str", "auto", "single-device engine: the block-sparse router (auto "
                    "picks triton on CUDA, torch on CPU) or the float64 oracle (small runs)",
                    choices=("auto", "torch", "triton", "oracle")),
    "device": Field("str", "auto", "single-device run: cpu, cuda or auto",
                    choices=("auto", "cpu", "cuda")),
    "dtype": Field("str", "float32", "compute dtype", choices=("float32", "float64")),
    "allow_unstable": Field("bool", False, "accept parameters whose Muskingum coefficients "
                            "are negative (e.g. k x > dt/2)"),
    "initial": Field("str", "dry", "initial state: dry rivers, the steady state of the "
                     "first step's inflow, or the steady state that yields "
                     "routing.initial_discharge", choices=("dry", "steady", "discharge")),
    "initial_discharge": Field("str", None, "initial: discharge: lower_colorado (the bundled "
                               "basin's NWM streamflow at its first CHRTOUT time; lake "
                               "reaches pass their inflow through) or a text file of one "
                               "discharge per line (m³/s, network order)", nullable=True),
    "initial_negative": Field("str", "refuse", "initial: discharge falling downstream needs "
                              "negative steady inflow r* = Q0 - upstream(Q0) there: refuse, "
                              "allow (start exactly at the discharge) or clip (r* = 0: the "
                              "start exceeds it below those reaches)",
                              choices=("refuse", "allow", "clip")),
    "memory_limit": Field("any", None, "memory each device (cluster: each worker) may use, "
                          "e.g. 80GB; null = what it has (the run plan keeps path kernels "
                          "resident or builds them per batch, and lowers time_chunk, to fit)",
                          check=_check_memory),
    "lakes": Field("str", "none", "lakes and reservoirs: none (their reaches route as river "
                   "reaches) or level_pool (NWM's level-pool reservoirs of network.lakes, "
                   "stepped at the sub-step; one device or a cluster)",
                   choices=("none", "level_pool")),
    "initial_state": Field("str", None, "restart: continue the run whose output.final_state "
                           "wrote this file (.npz; same network, parameters, IRF, substeps, "
                           "window, partition and step length, forcing from the step after "
                           "its last); one device, block-sparse engine", nullable=True),
}

PARTITION = {
    "max_reaches": Field("int", 1024, "most reaches per cluster", minimum=1),
    "max_travel_time": Field("float", None, "bound on the longest in-cluster travel time "
                             "(routing steps); null = no bound", minimum=0, nullable=True),
    "workers": Field("int", None, "workers to place clusters on (default: the cluster's "
                     "workers, or 1)", minimum=1, nullable=True),
}

HYDROGRAPHS = {
    "reaches": Field("ids", [], "reach ids to plot"),
    "gauges": Field("bool", True, "plot gauged reaches (RouteLink `gages`, bundled basin)"),
    "outlets": Field("int", 2, "plot the outlets of the N largest basins", minimum=0),
    "max_panels": Field("int", 6, "at most this many panels", minimum=1),
}

OUTPUT = {
    "dir": Field("str", None, "folder for the summary, PNGs and (by default) Zarr; null = "
                 "out/<command> (out/route, out/bench, out/partition), out/<command>-cluster "
                 "on a cluster", nullable=True),
    "store": Field("str", "discharge.zarr", "discharge Zarr store (relative to dir); null = "
                   "do not write discharge", nullable=True),
    "overwrite": Field("bool", False, "replace an existing store"),
    "resume": Field("bool", True, "continue an interrupted run of the same definition in an "
                    "incomplete store (finished time chunks are reused); a complete store "
                    "still needs overwrite"),
    "reach_chunk": Field("int", 65536, "reach chunk of the output store", minimum=1),
    "format": Field("str", "zarr", "discharge file: zarr (the store, CF-1.8), netcdf (also "
                    "<store name>.nc: CF-1.8 NetCDF-4, converted from the finished store) or "
                    "rapid (also <store name>.nc as a RAPID Qout file)",
                    choices=("zarr", "netcdf", "rapid")),
    "final_state": Field("str", None, "restart: write the state after the last step to this "
                         "file (.npz), to continue the run with routing.initial_state; one "
                         "device, block-sparse engine", nullable=True),
    "hydrographs": HYDROGRAPHS,
}

BENCHMARK = {
    "repeat": Field("int", 1, "timed repetitions of the forward pass (after one warm-up)",
                    minimum=1),
    "oracle_reaches": Field("int", 20_000, "reaches (whole basins) checked against the float64 "
                            "oracle", minimum=0),
    "oracle_steps": Field("int", 60, "steps checked against the oracle", minimum=1),
}

INGEST = {
    "source": Field("str", None, "CHRTOUT files/folder/glob, RAPID inflow, (reach, time) NetCDF "
                    "or wide CSV"),
    "store": Field("str", None, "output Zarr store"),
    "variable": Field("str", None, "variable to read (CHRTOUT default q_lateral, else "
                      "qSfcLatRunoff+qBucket); NAME+NAME sums CHRTOUT variables",
                      nullable=True),
    "name": Field("str", "runoff", "array name in the store"),
    "routelink": Field("str", None, "RouteLink.nc: rows follow its reaches", nullable=True),
    "rapid_connect": Field("str", None, "rapid_connect.csv: rows follow its reaches",
                           nullable=True),
    "reach_order": Field("str", None, "text file of reach ids (one per line): the row order",
                         nullable=True),
    "chunks": Field("any", [4096, 512], "[reach_chunk, time_chunk]", check=_check_chunks),
    "time_is_end": Field("bool", False, "source times mark interval ends (NWM CHRTOUT)"),
    "overwrite": Field("bool", False, "replace an existing store"),
}

CAL_ROUTING = {
    "irf": ROUTING["irf"],
    "substeps": ROUTING["substeps"],
    "engine": Field("str", "auto", "engine: auto (best for the device), levels (level by "
                    "level, quick on CPU for small networks), torch, triton, oracle",
                    choices=("auto", "levels", "torch", "triton", "oracle")),
    "device": ROUTING["device"],
    "dtype": ROUTING["dtype"],
    "allow_unstable": ROUTING["allow_unstable"],
    "window": Field("int", "auto", "kernel window in routing steps; auto: fitted so that "
                    "no parameter within the model's bounds loses more than 1e-6 of a path's "
                    "response (a given window is checked there)", minimum=1, also=("auto",)),
    "max_reaches": Field("int", 512, "most reaches per cluster (torch/triton engines and "
                         "cluster runs)", minimum=1),
    "memory_limit": Field("any", None, "memory each device (cluster: each worker) may use, "
                          "e.g. 80GB; null = what it has (the calibration plan keeps the "
                          "autograd graphs that fit, or refuses the run before it starts)",
                          check=_check_memory),
}

OBSERVATIONS = {
    "source": Field("str", "twin", "twin: discharge routed with known `truth` parameters at "
                    "the most-drained reaches (a synthetic twin); file: a gauge CSV/NetCDF/Zarr "
                    "on the forcing's time axis; lower_colorado: the bundled USGS gauges, "
                    "averaged per step", choices=("twin", "file", "lower_colorado")),
    "path": Field("str", None, "file: wide CSV (time,<id>,...), NetCDF or Zarr of (reach, "
                  "time) discharge", nullable=True),
    "truth": Field("mapping", None, "twin: the true parameters (same forms as routing "
                   "params)", nullable=True, check=_check_params),
    "gauges": Field("int", 12, "twin: number of gauges (most-drained reaches, round-robin "
                    "over the largest basins)", minimum=1),
    "noise": Field("float", 0.0, "twin: multiplicative Gaussian noise (relative sd)",
                   minimum=0),
    "seed": Field("int", 0, "twin: noise seed", minimum=0),
}

MODEL = {
    "kind": Field("str", "free", "parameter model: free (one value per reach) or mlp (from "
                  "reach attributes)", choices=("free", "mlp")),
    "bounds": Field("mapping", {}, "NAME: [low, high] in routing steps (default: the IRF's "
                    "bounds)", check=lambda v: _check_bounds(v)),
    "init": Field("mapping", None, "free: first guess per parameter (same forms as routing "
                  "params); null = the middle of the bounds", nullable=True,
                  check=_check_params),
    "attributes": Field("any", [], "mlp: reach attributes used as inputs",
                        check=lambda v: None if isinstance(v, list) and all(
                            isinstance(a, str) for a in v) else "expected a list of names"),
    "log": Field("any", [], "mlp: attributes taken log1p first",
                 check=lambda v: None if isinstance(v, list) else "expected a list of names"),
    "hidden": Field("ids", [32, 32], "mlp: hidden layer widths"),
    "seed": Field("int", 0, "mlp: weight initialisation seed", minimum=0),
}

CALIBRATION = {
    "iterations": Field("int", 50, "optimiser iterations", minimum=1),
    "loss": Field("str", "nse", "loss at the gauges", choices=("nse", "kge", "vnmse")),
    "optimizer": Field("str", "adam", "optimiser", choices=("adam", "sgd")),
    "lr": Field("float", 0.05, "learning rate", minimum=0),
    "warmup": Field("int", 0, "steps left out of the loss at the start", minimum=0),
    "validation_fraction": Field("float", 0.0, "last fraction of the steps kept for "
                                 "validation", minimum=0, maximum=0.9),
    "gauge_fraction": Field("float", 1.0, "fraction of gauges drawn for each iteration's loss",
                            minimum=0.01, maximum=1),
    "checkpoint_every": Field("int", 0, "write a checkpoint every N iterations (0 = at the "
                              "end only)", minimum=0),
    "resume": Field("bool", False, "resume from the latest checkpoint in "
                    "<output.dir>/checkpoints"),
    "target_nse": Field("float", None, "stop when every gauge's training NSE reaches it",
                        nullable=True, maximum=1),
    "seed": Field("int", 0, "gauge sampling seed", minimum=0),
}

_KIND = Field("str", None, "what the workflow does",
              choices=("route", "benchmark", "ingest", "calibrate"))
_NAME = Field("str", None, "a label for the run", nullable=True)

SCHEMAS: dict[str, dict[str, Any]] = {
    "route": {"kind": _KIND, "name": _NAME, "network": NETWORK, "forcing": FORCING,
              "routing": ROUTING, "partition": PARTITION, "output": OUTPUT,
              "cluster": Field("any", None, "Dask cluster: a cluster_configs/*.yaml path or "
                               "name, an inline mapping, or 'auto' (local-cuda if GPUs are "
                               "visible, else local-cpu); null = single device", nullable=True,
                               check=_check_cluster)},
    "ingest": {"kind": _KIND, "name": _NAME, "ingest": INGEST},
}
SCHEMAS["benchmark"] = {**SCHEMAS["route"], "benchmark": BENCHMARK}
SCHEMAS["calibrate"] = {
    "kind": _KIND, "name": _NAME, "network": NETWORK, "forcing": FORCING,
    "routing": CAL_ROUTING, "observations": OBSERVATIONS, "model": MODEL,
    "calibration": CALIBRATION,
    "cluster": Field("any", None, "Dask cluster to calibrate on (distributed gradient, "
                     "dashboard page): a cluster_configs/*.yaml path or name, an inline "
                     "mapping, or 'auto'; null = single device", nullable=True,
                     check=_check_cluster),
    "output": {"dir": Field("str", None, "folder for history.json, parameters, "
                            "checkpoints, hydrographs and summary.json; null = out/calibrate "
                            "(out/calibrate-cluster on a cluster)", nullable=True),
               "hydrographs": Field("int", 4, "gauges plotted (observed, first guess, "
                                    "calibrated)", minimum=0)},
}
KINDS = tuple(SCHEMAS)

#: the command that runs each kind by default (names its default output folder)
COMMANDS = {"route": "route", "benchmark": "bench", "calibrate": "calibrate"}


def default_output_dir(command: str, cluster: Any = None) -> str:
    """The output folder of a run whose workflow sets no ``output.dir``: ``out/<command>``,
    or ``out/<command>-cluster`` for a run on a Dask cluster, so that no two commands (nor a
    one-device run and a cluster run of the same workflow) write the same folder."""
    return f"out/{command}" + ("-cluster" if cluster is not None else "")



def _cluster_problems(cfg: dict[str, Any], rt: dict[str, Any]) -> list[str]:
    """What is wrong with a workflow's ``cluster`` key (and what a cluster run ignores)."""
    problems = []
    if rt["device"] != "auto":
        problems.append("routing.device: a cluster run uses its workers' devices; leave it "
                        "'auto'")
    from ..distributed import ClusterConfigError, load_config

    try:
        if cfg["cluster"] != "auto":
            load_config(cfg["cluster"])
    except (ClusterConfigError, FileNotFoundError) as err:
        problems.append(f"cluster: {err}")
    return problems

def _cross_checks(cfg: dict[str, Any]) -> list[str]:
    """Checks that involve several keys (the schema checks each key alone)."""
    problems = []
    kind = cfg["kind"]
    if kind == "ingest":
        ing = cfg["ingest"]
        for key in ("source", "store"):
            if ing[key] is None:
                problems.append(f"ingest.{key}: required (a path)")
        if ing["routelink"] and ing["rapid_connect"]:
            problems.append("ingest.routelink and ingest.rapid_connect: give at most one")
        return problems
    if kind == "calibrate":
        return problems + _calibrate_checks(cfg)
    frc, rt = cfg["forcing"], cfg["routing"]
    problems += _input_checks(cfg)
    if cfg.get("cluster") is not None:
        if rt["initial"] != "dry" and frc["source"] != "lower_colorado":
            problems.append(f"routing.initial {rt['initial']!r} on a cluster works with the "
                            "bundled "
                            "forcing only (the workers read forcing as it is): use one device "
                            "or routing.initial=dry")
        problems += _cluster_problems(cfg, rt)
    problems += _irf_params_check(rt["irf"], rt["params"], "routing.params")
    problems += _restart_checks(cfg)
    problems += _lake_checks(cfg)
    if rt["engine"] == "oracle" and cfg.get("cluster"):
        problems.append("routing.engine 'oracle' is single-device: drop the cluster or the "
                        "engine")
    return problems


def _lake_checks(cfg: dict[str, Any]) -> list[str]:
    rt, net = cfg["routing"], cfg["network"]
    if rt.get("lakes", "none") == "none":
        return []
    problems = []
    if not net.get("lakes") and net["source"] != "lower_colorado":
        problems.append("routing.lakes 'level_pool': give network.lakes (an NWM LAKEPARM.nc or "
                        "a lake table CSV)")
    keys = [k for k, v in (("routing.initial_state", rt.get("initial_state")),
                           ("output.final_state", cfg["output"].get("final_state"))) if v]
    if keys:
        problems.append(f"{' and '.join(keys)}: restart states do not hold lake levels yet; "
                        "drop them or set routing.lakes none")
    return problems


def _restart_checks(cfg: dict[str, Any]) -> list[str]:
    rt, out = cfg["routing"], cfg["output"]
    keys = [k for k, v in (("routing.initial_state", rt.get("initial_state")),
                           ("output.final_state", out.get("final_state"))) if v]
    problems = []
    if keys and cfg.get("cluster") is not None:
        problems.append(f"{' and '.join(keys)}: restart states are read and written by "
                        "single-device runs; drop the cluster (or the state files)")
    if keys and rt["engine"] == "oracle":
        problems.append(f"{' and '.join(keys)}: the oracle engine carries no state; use "
                        "routing.engine auto, torch or triton")
    if rt.get("initial_state") and rt["initial"] != "dry":
        problems.append(f"routing.initial_state and routing.initial {rt['initial']!r}: the "
                        "state file holds the start of the run it continues; drop "
                        "routing.initial")
    if rt["initial"] == "discharge" and not rt.get("initial_discharge"):
        problems.append("routing.initial 'discharge': give routing.initial_discharge "
                        "(lower_colorado, or a file of one discharge per reach)")
    if (rt["initial"] == "discharge" and rt.get("initial_discharge") == "lower_colorado"
            and cfg["network"]["source"] != "lower_colorado"):
        problems.append("routing.initial_discharge 'lower_colorado' (the bundled NWM "
                        "streamflow) needs network.source 'lower_colorado'")
    if rt.get("initial_discharge") and rt["initial"] != "discharge":
        problems.append(f"routing.initial_discharge is used with routing.initial "
                        f"'discharge' only (routing.initial is {rt['initial']!r})")
    if out.get("format") != "zarr" and out["store"] is None:
        problems.append(f"output.format {out['format']!r} converts the output store: give "
                        "output.store (or output.format zarr)")
    return problems


def _input_checks(cfg: dict[str, Any]) -> list[str]:
    problems = []
    net, frc = cfg["network"], cfg["forcing"]
    if net["source"] in ("routelink", "rapid") and not net["path"]:
        problems.append(f"network.path: required with network.source {net['source']!r}")
    if frc["source"] == "zarr" and not frc["path"]:
        problems.append("forcing.path: required with forcing.source 'zarr' (a forcing store)")
    if frc["source"] not in FORCING_SOURCES and not frc["path"]:
        problems.append(f"forcing.path: required with forcing.source {frc['source']!r} (what "
                        "the reader reads)")
    if frc["source"] == "synthetic" and frc["steps"] is None:
        problems.append("forcing.steps: required with forcing.source 'synthetic'")
    if frc["source"] == "lower_colorado" and net["source"] != "lower_colorado":
        problems.append("forcing.source 'lower_colorado' needs network.source 'lower_colorado'")
    return problems


def _irf_params_check(irf: str, params: Any, key: str) -> list[str]:
    from ..irf import get_irf

    try:
        spec = get_irf(irf)
    except (KeyError, ValueError) as err:
        return [f"routing.irf: {err}"]
    if params is None:
        return []
    have, want = set(params), list(spec.params)
    missing, unknown = [p for p in want if p not in have], sorted(have - set(want))
    if missing or unknown:
        return [f"{key}: IRF {spec.name!r} takes {want}; missing {missing}, unknown {unknown}"]
    return []


def _calibrate_checks(cfg: dict[str, Any]) -> list[str]:
    problems = _input_checks(cfg)
    obs, model, rt = cfg["observations"], cfg["model"], cfg["routing"]
    if obs["source"] == "twin" and obs["truth"] is None:
        problems.append("observations.truth: required with observations.source 'twin' (the "
                        "parameters that make the observations)")
    if obs["source"] == "file" and not obs["path"]:
        problems.append("observations.path: required with observations.source 'file'")
    if obs["source"] == "lower_colorado" and cfg["network"]["source"] != "lower_colorado":
        problems.append("observations.source 'lower_colorado' needs network.source "
                        "'lower_colorado'")
    problems += _irf_params_check(rt["irf"], obs["truth"], "observations.truth")
    problems += _irf_params_check(rt["irf"], model["init"], "model.init")
    names = _irf_names(rt["irf"])
    unknown = sorted(set(model["bounds"]) - set(names))
    if names and unknown:
        problems.append(f"model.bounds: IRF {rt['irf']!r} takes {names}; unknown {unknown}")
    if model["kind"] == "mlp" and not model["attributes"]:
        problems.append("model.attributes: required with model.kind 'mlp' (e.g. [length])")
    if cfg.get("cluster") is not None:
        if rt["engine"] in ("levels", "oracle"):
            problems.append(f"routing.engine {rt['engine']!r} is single-device: use auto, torch "
                            "or triton with a cluster (or drop the cluster)")
        problems += _cluster_problems(cfg, rt)
    return problems


def _irf_names(irf: str) -> list[str]:
    from ..irf import get_irf

    try:
        return list(get_irf(irf).params)
    except (KeyError, ValueError):
        return []


def workflow_from_mapping(
    data: Any,
    overrides: Iterable[str] = (),
    *,
    kind: str | None = None,
    where: str = "<dict>",
    values: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Validate a workflow given as a mapping (e.g. loaded YAML); see :func:`load_workflow`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise WorkflowError(where, [f"expected a mapping of keys at the top, got "
                                    f"{type(data).__name__}"])
    overrides = list(overrides)
    k = data.get("kind", kind)
    if values and "kind" in values:
        k = values["kind"]
    for item in overrides:
        if item.partition("=")[0].strip() == "kind":
            k = yaml.safe_load(item.partition("=")[2])
    if k is None:
        raise WorkflowError(where, [f"kind: required, one of {', '.join(KINDS)}"])
    if k not in SCHEMAS:
        raise WorkflowError(where, [f"kind: expected one of {', '.join(map(repr, KINDS))}, "
                                    f"got {k!r}"])
    if kind == "benchmark" and k == "route":
        k = "benchmark"  # a route workflow benchmarks with the default benchmark settings
    if kind is not None and k != kind and not (kind == "route" and k == "benchmark"):
        raise WorkflowError(where, [f"kind: this command runs {kind!r} workflows, the file is "
                                    f"{k!r}"])
    schema = SCHEMAS[k]
    merged = set_values({**data, "kind": k}, dict(values or {}), schema)
    merged = apply_overrides(merged, overrides, schema)
    cfg = validate(merged, schema, where)
    if "output" in cfg and cfg["output"]["dir"] is None:
        cfg["output"]["dir"] = default_output_dir(command or COMMANDS[k], cfg.get("cluster"))
    problems = _cross_checks(cfg)
    if problems:
        raise WorkflowError(where, problems)
    return cfg


def load_workflow(
    path: str | os.PathLike | None,
    overrides: Iterable[str] = (),
    *,
    kind: str | None = None,
    values: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Load, override and validate a workflow file.

    Parameters
    ----------
    path : the YAML file, or None to start from the defaults of ``kind``.
    overrides : ``"section.key=value"`` strings (values parsed as YAML), applied before
        validation.
    kind : the kind the caller runs (``"route"`` also accepts ``"benchmark"`` files); required
        when ``path`` is None.
    values : typed values by dotted key (e.g. from command-line flags), applied before
        ``overrides``.
    command : the command that runs it (``route``, ``bench``, ``partition``, ``calibrate``):
        an ``output.dir`` left null becomes :func:`default_output_dir` of it (default: the
        command of the workflow's kind).

    Returns
    -------
    The validated workflow: a nested dict with every default filled in.

    Raises
    ------
    WorkflowError
        A file that is empty, not UTF-8 or not valid YAML, a key given twice in one mapping
        (naming it and its lines), unknown keys, wrong types or values, inconsistent keys.
    FileNotFoundError
        ``path`` does not exist.
    """
    if path is None:
        return workflow_from_mapping({}, overrides, kind=kind, where="(defaults)",
                                     values=values, command=command)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"workflow file {str(p)!r} does not exist")
    data = read_yaml_file(p)  # UTF-8, no key twice, not empty
    return workflow_from_mapping(data, overrides, kind=kind, where=str(p), values=values,
                                 command=command)

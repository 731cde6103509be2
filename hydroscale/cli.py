"""The ``hydroscale`` command line.

Exit codes: 0 success; 1 the run failed (bad data, a library error, an interrupted cluster);
2 usage error: bad flags, an invalid workflow file or cluster config (the message names the key
and what it expects); 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130

logger = logging.getLogger("hydroscale.cli")

DESCRIPTION = """\
Exact, differentiable river routing for continental networks, on one device or a Dask cluster.

A run is described by a workflow file (YAML, see workflows/) and/or flags; any workflow value
can be changed from the command line with --set SECTION.KEY=VALUE.

start here:
  hydroscale demo                                   route the bundled Lower Colorado basin
  hydroscale route workflows/demo.yaml              the same workflow on the default local
                                                    Dask cluster (Zarr + PNG out)
  hydroscale route --reaches 10000 --steps 90       synthetic network and runoff, one device
  hydroscale route workflows/route.yaml --cluster local-cpu
                                                    a synthetic forest on a local Dask cluster
  hydroscale calibrate workflows/calibrate.yaml     fit parameters to a synthetic twin
  hydroscale route --show-schema                    every workflow key and its default
"""

EPILOG = """\
exit codes: 0 ok, 1 the run failed, 2 bad flags or an invalid workflow/cluster config,
130 interrupted.  Add -v for progress logs, -vv for debug logs and tracebacks.
"""


class _Usage(Exception):
    """A usage problem found after parsing (exit code 2)."""


# ------------------------------------------------------------------------------ helpers
def _progress_factory(enabled: bool) -> Any:
    from tqdm.auto import tqdm

    def make(desc: str, total: int | None, unit: str) -> Any:
        return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True,
                    dynamic_ncols=True, leave=False)

    return make


def _network_values(spec: str | None) -> dict[str, Any]:
    """``--network``: ``synthetic``, ``lower_colorado``, a file one network reader of
    :mod:`hydroscale.io` recognises, or ``ENGINE:PATH`` to name the reader."""
    if spec is None:
        return {}
    if spec in ("synthetic", "lower_colorado"):
        return {"network.source": spec}
    from .io import ReaderGuessError, guess_engine, list_readers

    readers = list_readers("network")
    engine, sep, path = spec.partition(":")
    if sep and (engine in readers or engine == "rapid"):  # rapid: namelist or rapid_connect
        return {"network.source": engine, "network.path": path}
    try:
        engine = guess_engine(spec, "network")
    except (ReaderGuessError, FileNotFoundError) as err:
        kinds = [r.description for r in readers.values()]
        choices = ", ".join(kinds[:-1]) + (" or " if len(kinds) > 1 else "") + kinds[-1]
        raise _Usage(f"--network {spec!r}: expected 'synthetic', 'lower_colorado', {choices}, "
                     f"or ENGINE:PATH to name the reader (ENGINE: {', '.join(readers)});\n"
                     f"{err}") from None
    return {"network.source": engine, "network.path": spec}


def _forcing_values(spec: str | None) -> dict[str, Any]:
    """``--forcing``: ``synthetic``, ``lower_colorado``, a Zarr store, or ``ENGINE:PATH`` to
    read PATH with a series reader of :mod:`hydroscale.io` (in memory)."""
    if spec is None:
        return {}
    if spec in ("synthetic", "lower_colorado"):
        return {"forcing.source": spec}
    engine, sep, path = spec.partition(":")
    if sep and engine.isidentifier() and len(engine) > 1:  # not a Windows drive letter
        from .io import list_readers

        if engine in list_readers("series"):
            return {"forcing.source": engine, "forcing.path": path}
    return {"forcing.source": "zarr", "forcing.path": spec}


def _param_values(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise _Usage(f"--param {item!r}: expected NAME=VALUE, e.g. --param k=0.5 or "
                         "--param 'k={uniform: [1, 3], units: hours}'")
        out[name.strip()] = yaml.safe_load(text)
    return out


def _route_values(args: argparse.Namespace) -> dict[str, Any]:
    """Typed workflow values from the flags of ``route``/``partition``/``bench``."""
    v: dict[str, Any] = {}
    v.update(_network_values(args.network))
    v.update(_forcing_values(getattr(args, "forcing", None)))
    flat = {
        "reaches": "network.reaches", "seed": "network.seed", "steps": "forcing.steps",
        "irf": "routing.irf", "substeps": "routing.substeps", "time_chunk": "routing.time_chunk",
        "engine": "routing.engine", "device": "routing.device", "out": "output.dir",
        "max_reaches": "partition.max_reaches", "max_travel_time": "partition.max_travel_time",
        "workers": "partition.workers", "cluster": "cluster",
        "memory_limit": "routing.memory_limit",
        "initial_state": "routing.initial_state", "final_state": "output.final_state",
        "output_format": "output.format",
    }
    for attr, key in flat.items():
        value = getattr(args, attr, None)
        if value is not None:
            v[key] = value
    if getattr(args, "params", None):
        v["routing.params"] = _param_values(args.params)
    if getattr(args, "allow_unstable", False):
        v["routing.allow_unstable"] = True
    if getattr(args, "overwrite", False):
        v["output.overwrite"] = True
    if getattr(args, "reach", None):
        v["output.hydrographs.reaches"] = list(args.reach)
    return v


def _load(args: argparse.Namespace, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """The validated workflow; an ``output.dir`` it leaves null is the command's own folder
    (``out/<command>``, see :func:`hydroscale.workflows.default_output_dir`)."""
    from .workflows import load_workflow

    if args.workflow is not None and not Path(args.workflow).is_file():
        raise _Usage(f"workflow file {args.workflow!r} does not exist")
    return load_workflow(args.workflow, args.overrides, kind=kind, values=values,
                         command=args.command)


def _show_schema(kind: str) -> int:
    from .workflows import SCHEMAS, describe

    print(f"keys of a {kind!r} workflow (dotted names work with --set):")
    for line in describe(SCHEMAS[kind]):
        print("  " + line)
    return EXIT_OK


def _show_config(cfg: dict[str, Any]) -> int:
    import yaml

    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    return EXIT_OK


def _fmt_rate(x: Any) -> str:
    return "n/a" if not x else f"{x:.3g}"


def _truncation_lines(s: dict[str, Any]) -> list[str]:
    """The summary's truncation line, stating what ``summary.json`` holds
    (``max_truncated_mass``, ``window_is_run_length``)."""
    mass = s.get("max_truncated_mass")
    if mass is None:
        return []
    if s.get("window_is_run_length"):
        return [f"  truncation   max_truncated_mass {mass:.3g}: the window spans the whole run "
                "(taps beyond it never act)"]
    return [f"  truncation   max_truncated_mass {mass:.3g}: the largest fraction of an "
            "in-cluster path response beyond the window"]


def _lake_lines(s: dict[str, Any]) -> list[str]:
    """The summary's lakes line (``summary.json``'s ``lakes``): how many, in how many stages,
    their storage change over the run and the largest one."""
    lakes = s.get("lakes")
    if not lakes:
        return []
    total = sum(lk["storage_change_m3"] for lk in lakes)
    big = max(lakes, key=lambda lk: abs(lk["storage_change_m3"]))
    name = big["name"] or f"lake {big['id']}"
    stages = max(lk["stage"] for lk in lakes)
    return [f"  lakes        {len(lakes)} level-pool lakes in {stages} stages, storage change "
            f"{total:+.3g} m³ over the run (largest: {name}, {big['storage_change_m3']:+.3g} "
            "m³; all in summary.json)"]


def _print_route_summary(s: dict[str, Any]) -> None:
    out = s["outputs"]
    eng = f"{s['engine']} on {s['device']}"
    if s.get("window"):
        eng += f", window {s['window']} steps"
    if s.get("clusters"):
        eng += f", {s['clusters']} clusters in {s['waves']} waves"
    if s.get("workers"):
        eng += f", {s['workers']} workers"
    lines = [
        "hydroscale route: done",
        f"  reaches      {s['reaches']:,}",
        f"  steps        {s['steps']:,} of {s['interval_s']:g} s, {s['substeps']} sub-steps "
        f"each, IRF {s['irf']}",
        f"  engine       {eng}",
        f"  wall time    {s['wall_s']:.1f} s (inputs {s['inputs_s']:.1f}, partition "
        f"{s['partition_s']:.1f}, set-up {s['setup_s']:.1f}, routing {s['route_s']:.1f})",
        f"  throughput   {_fmt_rate(s['reach_steps_per_s_routing'])} reach-steps/s routing, "
        f"{_fmt_rate(s['reach_steps_per_s_wall'])} overall",
    ]
    lines.extend(_truncation_lines(s))
    lines.extend(_lake_lines(s))
    lines.append(f"  discharge    {out['store'] or '(not written: output.store is null)'}")
    if out["hydrographs"]:
        ids = ", ".join(str(i) for i in out["hydrograph_reaches"])
        lines.append(f"  hydrographs  {out['hydrographs']} (reaches {ids})")
    lines.append(f"  summary      {out['summary']}")
    print("\n".join(lines))


def _start_cluster(config: Any, verbose: int) -> Any:
    import distributed  # noqa: F401  (configures its loggers, which we then quieten)

    from .distributed import start_cluster, worker_addresses

    if verbose < 1:
        import warnings

        logging.getLogger("distributed").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="Port .* is already in use")
    print(f"hydroscale: starting the Dask cluster ({config}) ...", flush=True)
    t0 = time.perf_counter()
    client = start_cluster(None if config == "auto" else config)
    n = len(worker_addresses(client))
    print(f"hydroscale: Dask cluster with {n} workers started in "
          f"{time.perf_counter() - t0:.1f} s; dashboard: {client.dashboard_link}", flush=True)
    return client


def _close_cluster(client: Any, verbose: int) -> None:
    if verbose < 1:  # the nannies' warnings while shutting down are noise to a user
        logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


# ------------------------------------------------------------------------------ commands
def _route(args: argparse.Namespace) -> int:
    if args.show_schema:
        return _show_schema("route")
    if args.workflow is not None and Path(args.workflow).is_file():
        from .io.rapid2 import is_rapid2_namelist

        if is_rapid2_namelist(args.workflow):
            return _route_rapid_namelist(args)
    cfg = _load(args, "route", _route_values(args))
    if args.check:
        return _show_config(cfg)
    from .workflows import plan_route, run_route

    progress = _progress_factory(not args.no_progress)
    client = None
    if cfg["cluster"] is not None:
        client = _start_cluster(cfg["cluster"], args.verbose)
    try:
        if args.plan:
            print(plan_route(cfg, progress=progress, client=client).table())
            return EXIT_OK
        result = run_route(cfg, progress=progress, client=client)
    finally:
        if client is not None:
            _close_cluster(client, args.verbose)
    _print_route_summary(result.summary)
    return EXIT_OK


def _route_rapid_namelist(args: argparse.Namespace) -> int:
    """``hydroscale route NAMELIST.yml``: a RAPID2 case in RAPID mode, outputs where the
    namelist says (:func:`hydroscale.workflows.run_rapid_namelist`)."""
    used = {k: v for k, v in _route_values(args).items() if k != "output.overwrite"}
    if used or args.overrides or args.check:
        flags = sorted(used) + [f"--set {o}" for o in args.overrides] + \
            (["--check"] if args.check else [])
        raise _Usage(f"{args.workflow} is a RAPID2 namelist: it runs as it is (RAPID mode, "
                     f"outputs Qou_ncf and Qfi_ncf); these options do not apply: {flags}")
    from .workflows import run_rapid_namelist

    s = run_rapid_namelist(args.workflow, overwrite=args.overwrite)
    print(f"hydroscale route: RAPID mode done\n"
          f"  reaches      {s['reaches']:,}\n"
          f"  steps        {s['steps']:,} of {s['interval_s']:g} s, {s['substeps']} sub-steps "
          f"each (RAPID2 namelist {s['namelist']})\n"
          f"  wall time    {s['wall_s']:.1f} s\n"
          f"  Qout         {s['outputs']['Qou_ncf']}\n"
          f"  Qfinal       {s['outputs']['Qfi_ncf']}")
    return EXIT_OK


def _partition(args: argparse.Namespace) -> int:
    if args.show_schema:
        return _show_schema("route")
    values = _route_values(args)
    if args.workflow is None and args.forcing is None:
        values.setdefault("forcing.steps", 1)  # partitioning never reads the forcing
    cfg = _load(args, "route", values)
    if args.check:
        return _show_config(cfg)
    from .workflows import run_partition

    out = args.out or cfg["output"]["dir"]
    s = run_partition(cfg, out, progress=_progress_factory(not args.no_progress))
    print(Path(s["outputs"]["report"]).read_text(), end="")
    print(f"hydroscale partition: {s['reaches']:,} reaches -> {s.get('clusters')} clusters, "
          f"{s.get('waves')} waves in {s['partition_s']:.2f} s")
    for key in ("report", "figure", "partition", "summary"):
        print(f"  {key:<10} {s['outputs'][key]}")
    return EXIT_OK


def _ingest(args: argparse.Namespace) -> int:
    if args.show_schema:
        return _show_schema("ingest")
    pos = list(args.paths)
    workflow = None
    values: dict[str, Any] = {}
    if len(pos) == 1 and pos[0].lower().endswith((".yaml", ".yml")):
        workflow = pos[0]
    elif len(pos) == 2:
        values = {"ingest.source": pos[0], "ingest.store": pos[1]}
    elif pos:
        raise _Usage("ingest takes a workflow file (WORKFLOW.yaml) or SOURCE STORE, got "
                     f"{len(pos)} paths: {pos}")
    flags = {"variable": "ingest.variable", "name": "ingest.name",
             "routelink": "ingest.routelink", "rapid_connect": "ingest.rapid_connect",
             "reach_order": "ingest.reach_order"}
    for attr, key in flags.items():
        if getattr(args, attr) is not None:
            values[key] = getattr(args, attr)
    if args.chunks is not None:
        try:
            values["ingest.chunks"] = [int(v) for v in args.chunks.split(",")]
        except ValueError:
            raise _Usage(f"--chunks {args.chunks!r}: expected REACH,TIME, e.g. 4096,512") \
                from None
    if args.time_is_end:
        values["ingest.time_is_end"] = True
    if args.overwrite:
        values["ingest.overwrite"] = True
    args.workflow = workflow
    cfg = _load(args, "ingest", values)
    if args.check:
        return _show_config(cfg)
    from .workflows import run_ingest

    progress = _progress_factory(not args.no_progress)
    bar = progress("ingest", None, "store")
    s = run_ingest(cfg, command="hydroscale ingest " + " ".join(args.argv))
    bar.update(1)
    bar.close()
    print(f"hydroscale ingest: {s['reaches']:,} reaches x {s['steps']:,} steps "
          f"(interval {s['interval_s']} s) -> {s['store']} [{s['variable']}, chunks "
          f"{s['chunks']}] in {s['wall_s']:.1f} s")
    return EXIT_OK


def _bench_dir() -> Path | None:
    for cand in (Path.cwd() / "bench", Path(__file__).resolve().parents[1] / "bench"):
        if cand.is_dir():
            return cand
    return None


def _bench(args: argparse.Namespace) -> int:
    if args.show_schema:
        return _show_schema("benchmark")
    if args.list or args.script:
        folder = _bench_dir()
        if folder is None:
            raise _Usage("the bench/ scripts live in the source checkout (not in an installed "
                         "package): run from the repository root")
        scripts = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
        if args.list:
            print(f"bench scripts in {folder} (run: hydroscale bench --script NAME -- ARGS):")
            for name in scripts:
                doc = (folder / f"{name}.py").read_text().split('"""')
                first = doc[1].strip().splitlines()[0] if len(doc) > 2 else ""
                print(f"  {name:<12} {first}")
            return EXIT_OK
        if args.script not in scripts:
            raise _Usage(f"--script {args.script!r}: no such bench script; choose from "
                         f"{scripts}")
        extra = list(args.script_args)
        old = sys.argv
        sys.argv = [str(folder / f"{args.script}.py"), *extra]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        finally:
            sys.argv = old
        return EXIT_OK
    if args.script_args:
        raise _Usage(f"unexpected arguments {args.script_args}: extra arguments go to a bench "
                     "script (--script NAME -- ARGS)")
    cfg = _load(args, "benchmark", _route_values(args))
    if args.check:
        return _show_config(cfg)
    if cfg["cluster"] is not None:
        raise _Usage("bench times one device; for a cluster run use `hydroscale route ... "
                     "--cluster CONFIG` (its summary gives wall time and reach-steps/s), or "
                     "--set cluster=null")
    from .workflows import run_benchmark

    r = run_benchmark(cfg, progress=_progress_factory(not args.no_progress))
    print(f"hydroscale bench: {r['reaches']:,} reaches x {r['steps']:,} steps "
          f"(f = {r['substeps']}), {r['engine']} on {r['device']}, {r['dtype']}")
    print(f"  partition {r['partition_s']:.2f} s, set-up {r['setup_s']:.2f} s, forward "
          f"{r['forward_s']:.3f} s (median of {len(r['forward_runs_s'])}), "
          f"{_fmt_rate(r['reach_steps_per_s'])} reach-steps/s")
    if "oracle" in r:
        o = r["oracle"]
        print(f"  vs float64 oracle on {o['reaches']:,} reaches x {o['steps']} steps: "
              f"rel. L2 {o['rel_l2']:.2e}, NSE at outlet {o['largest_outlet_id']} "
              f"{o['nse_largest_outlet']:.6f}")
    print(f"  results   {r['outputs']['summary']}")
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    if args.show_schema:
        return _show_schema("calibrate")
    values = _route_values(args)
    if "routing.params" in values:
        raise _Usage("calibrate fits the parameters: give a first guess with --set "
                     "'model.init={...}' and the truth of a twin with --set "
                     "'observations.truth={...}' instead of --param")
    if args.iterations is not None:
        values["calibration.iterations"] = args.iterations
    if args.resume:
        values["calibration.resume"] = True
    cfg = _load(args, "calibrate", values)
    if args.check:
        return _show_config(cfg)
    from .workflows import plan_calibrate, run_calibrate

    client = None
    if args.plan:
        progress = _progress_factory(not args.no_progress)
        if cfg["cluster"] is not None:
            client = _start_cluster(cfg["cluster"], args.verbose)
        try:
            print(plan_calibrate(cfg, progress=progress, client=client).table())
        finally:
            if client is not None:
                _close_cluster(client, args.verbose)
        return EXIT_OK
    if cfg["cluster"] is not None:
        from .calibration.dashboard import page_url, tunnel_hint

        client = _start_cluster(cfg["cluster"], args.verbose)
        url = page_url(client)
        print(f"hydroscale: calibration page: {url}", flush=True)
        hint = tunnel_hint(url)
        if hint is not None:
            print(f"hydroscale: the scheduler runs on another host; from your machine run\n"
                  f"  {hint[0]}\n(prefix the host with user@ if your login there differs) "
                  f"and open {hint[1]}", flush=True)
    try:
        s = run_calibrate(cfg, progress=_progress_factory(not args.no_progress), client=client)
    finally:
        if client is not None:
            _close_cluster(client, args.verbose)
    lines = [
        "hydroscale calibrate: done",
        f"  reaches      {s['reaches']:,}, {s['steps']:,} steps, {s['gauges']} gauges",
        f"  engine       {s['engine']} on {s['device']}",
        f"  iterations   {s['iterations']} in {s['train_s']:.1f} s (wall {s['wall_s']:.1f} s)",
        f"  loss ({s['loss']['name']})   {s['loss']['first']:.4g} -> {s['loss']['last']:.4g}",
        f"  median NSE   {s['nse_median']['first']:.4f} -> {s['nse_median']['last']:.4f} "
        f"(training period)",
    ]
    if s.get("planned_peak_gb"):
        lines.append(f"  memory       {s['memory_strategy']}: planned "
                     f"{', '.join(f'{x:.2f}' for x in s['planned_peak_gb'])} GB, measured "
                     f"{', '.join(f'{x:.2f}' for x in s['measured_peak_gb'])} GB per worker")
    if s.get("param_rel_error_median"):
        for name, e in s["param_rel_error_median"].items():
            lines.append(f"  {name:<12} median relative error vs truth {e['first_guess']:.3f} "
                         f"-> {e['calibrated']:.3f}")
    if s.get("dashboard"):
        lines.append(f"  dashboard    {s['dashboard']} (while the cluster ran)")
    for key in ("parameters", "history", "hydrographs", "summary"):
        if s["outputs"][key]:
            lines.append(f"  {key:<12} {s['outputs'][key]}")
    print("\n".join(lines))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from .workflows import WorkflowError, load_workflow

    bad = 0
    for path in args.files:
        try:
            cfg = load_workflow(path)
        except (WorkflowError, FileNotFoundError) as err:
            bad += 1
            print(f"{path}: INVALID\n{err}", file=sys.stderr)
        else:
            print(f"{path}: ok ({cfg['kind']} workflow)")
    return EXIT_USAGE if bad else EXIT_OK


DEMO_WORKFLOW = Path(__file__).resolve().parent / "workflows" / "demo.yaml"


def _demo(args: argparse.Namespace) -> int:
    """The packaged demo workflow (``workflows/demo.yaml``) through ``route``."""
    argv = ["route", str(DEMO_WORKFLOW), "--out", args.out]
    if args.cluster is not None:
        argv += ["--cluster", args.cluster]
    for item in args.set or ():
        argv += ["--set", item]
    route_args = build_parser().parse_args(argv)
    route_args.verbose = args.verbose
    return _route(route_args)


# ------------------------------------------------------------------------------ parser
def _desc(*paragraphs: str, examples: tuple[str, ...] = ()) -> str:
    """A subcommand description: wrapped paragraphs, then examples kept as written."""
    import textwrap

    text = "\n\n".join(textwrap.fill(p, 88) for p in paragraphs)
    if examples:
        text += "\n\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
    return text


def _workflow_args(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("workflow", nargs="?", default=None,
                   help=f"workflow YAML file (kind: {kind}); without it the built-in defaults "
                   "plus the flags below")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="override any workflow value, e.g. --set routing.substeps=24 "
                   "(repeatable; values are YAML)")
    p.add_argument("--show-schema", action="store_true",
                   help="list every workflow key with its type and default, then exit")
    p.add_argument("--check", action="store_true",
                   help="validate and print the resolved workflow, run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _network_flags(p: argparse.ArgumentParser, partition: bool = True) -> None:
    g = p.add_argument_group("network and routing (shortcuts for --set)")
    g.add_argument("--network", metavar="SOURCE",
                   help="'synthetic', 'lower_colorado' (bundled), a RouteLink .nc, a RAPID "
                   "rapid_connect .csv, a RAPID2 namelist .yml or a mizuRoute NTOPO .nc or "
                   "control file (the reader is guessed), or ENGINE:PATH to name the reader "
                   "(routelink, rapid (rapid_connect or RAPID2 namelist), mizuroute or a "
                   "registered one)")
    g.add_argument("--reaches", type=_positive_int, metavar="N",
                   help="synthetic network size (network.reaches)")
    g.add_argument("--seed", type=int, help="synthetic network seed (network.seed)")
    g.add_argument("--irf", help="impulse response: muskingum, linear_storage, nash_cascade, "
                   "pure_lag, hayami (routing.irf)")
    g.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="IRF parameter for every reach: a number or e.g. "
                   "'{uniform: [1, 3], units: hours}' (repeatable; routing.params)")
    g.add_argument("--substeps", type=_positive_int, help="sub-steps per step (routing.substeps)")
    g.add_argument("--allow-unstable", action="store_true",
                   help="accept negative Muskingum coefficients (routing.allow_unstable)")
    if not partition:
        return
    g.add_argument("--max-reaches", type=_positive_int,
                   help="most reaches per cluster (partition.max_reaches)")
    g.add_argument("--max-travel-time", type=float, metavar="STEPS",
                   help="bound on in-cluster travel time (partition.max_travel_time)")
    g.add_argument("--workers", type=_positive_int,
                   help="workers to place clusters on (partition.workers)")


def _run_flags(p: argparse.ArgumentParser, calibrate: bool = False) -> None:
    g = p.add_argument_group("forcing, execution and output (shortcuts for --set)")
    g.add_argument("--forcing", metavar="SOURCE",
                   help="'synthetic', 'lower_colorado', a Zarr forcing store (from "
                   "`hydroscale ingest`), or ENGINE:PATH read by a series reader "
                   "(chrtout, rapid_inflow, mizuroute_runoff, netcdf, wide_csv)")
    g.add_argument("--steps", type=_positive_int, help="routing steps (forcing.steps)")
    engines = ("auto", "levels", "torch", "triton", "oracle") if calibrate else \
        ("auto", "torch", "triton", "oracle")
    g.add_argument("--engine", choices=engines, help="single-device engine (routing.engine)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="single-device run: where to route (routing.device)")
    g.add_argument("--out", metavar="DIR", help="output folder (output.dir)")
    if calibrate:
        g.add_argument("--cluster", metavar="CONFIG",
                       help="calibrate on a Dask cluster (distributed gradient; the "
                       "dashboard's calibration page shows and steers it): a "
                       "cluster_configs/*.yaml path or name, or 'auto'")
        return
    g.add_argument("--time-chunk", type=_positive_int, metavar="STEPS",
                   help="steps per time chunk (routing.time_chunk)")
    g.add_argument("--cluster", metavar="CONFIG",
                   help="run on a Dask cluster: a cluster_configs/*.yaml path or name "
                   "(local-cpu, local-cuda, scheduler, slurm), or 'auto' (local-cuda if GPUs "
                   "are visible, else local-cpu)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing output store (output.overwrite)")
    g.add_argument("--format", dest="output_format", choices=("zarr", "netcdf", "rapid"),
                   help="discharge file: the Zarr store, plus <store>.nc as CF NetCDF or as "
                   "a RAPID Qout file (output.format)")
    g.add_argument("--initial-state", metavar="FILE",
                   help="continue the run that wrote this restart state (.npz) "
                   "(routing.initial_state)")
    g.add_argument("--final-state", metavar="FILE",
                   help="write the state after the last step to FILE (.npz), to continue "
                   "later with --initial-state (output.final_state)")
    g.add_argument("--reach", type=int, action="append", metavar="ID",
                   help="also plot this reach's hydrograph (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="hydroscale", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"hydroscale {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0,
                    help="more log output (-v info, -vv debug and tracebacks)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    route = sub.add_parser(
        "route", formatter_class=fmt,
        help="route runoff through a river network (one device, or a Dask cluster)",
        description=_desc(
            "Route lateral inflow through a river network and write discharge (Zarr, m³/s), "
            "hydrograph PNGs and summary.json.",
            "Inputs come from a workflow file and/or flags: a synthetic continental forest, an "
            "NWM RouteLink or a RAPID network; synthetic runoff, a Zarr forcing store or the "
            "bundled basin's NWM inflow.  Without --cluster the run stays on one device (CUDA "
            "if visible); with --cluster (or a `cluster:` key) it runs on Dask workers and "
            "prints the dashboard URL.  On a CPU-only machine, --engine oracle (float64, "
            "exact) is the quickest single-device engine for short runs.",
            examples=(
                "hydroscale route workflows/route.yaml",
                "hydroscale route workflows/route.yaml --cluster cluster_configs/local-cpu.yaml",
                "hydroscale route --reaches 1000000 --steps 30 --engine oracle --out out/1M",
                "hydroscale route workflows/route.yaml --set routing.substeps=6 "
                "--set forcing.steps=730",
                "hydroscale route nml_case.yml          # a RAPID2 namelist, in RAPID mode",
                "hydroscale route --network mizuroute:case.control --forcing "
                "mizuroute_runoff:case.control --engine oracle",
            )),
    )
    _workflow_args(route, "route")
    _network_flags(route)
    _run_flags(route)
    route.add_argument("--plan", action="store_true",
                       help="print the run plan (kernel residency, time chunk, each worker's "
                       "estimated peak memory in GB against its limit) and stop")
    route.add_argument("--memory-limit", metavar="SIZE", dest="memory_limit",
                       help="memory each device or worker may use, e.g. 80GB "
                       "(routing.memory_limit)")
    route.set_defaults(func=_route)

    part = sub.add_parser(
        "partition", formatter_class=fmt,
        help="cut a network into clusters and waves; write a report and a PNG",
        description=_desc(
            "Partition the workflow's network into clusters bounded in reaches and travel "
            "time, order them in waves and place them on workers; writes partition_report.txt, "
            "partition.png, partition/ (reload with Partition.load) and "
            "partition_summary.json.",
            examples=("hydroscale partition workflows/route.yaml --workers 4 --out out/part",
                      "hydroscale partition --reaches 1000000 --max-reaches 1024 --workers 8")),
    )
    _workflow_args(part, "route")
    _network_flags(part)
    part.add_argument("--out", metavar="DIR",
                      help="output folder (default: the workflow's output.dir, or "
                      "out/partition when it sets none)")
    part.set_defaults(func=_partition, forcing=None)

    ing = sub.add_parser(
        "ingest", formatter_class=fmt,
        help="turn CHRTOUT/RAPID/NetCDF/CSV forcing into a (reach, time) Zarr store",
        description=_desc(
            "Write lateral inflow as a (reach, time) float32 Zarr store that `route` reads "
            "chunk by chunk.  Give SOURCE STORE, or a workflow file (kind: ingest).",
            examples=("hydroscale ingest 'data/*.CHRTOUT_DOMAIN1' forcing.zarr --routelink "
                      "RouteLink.nc --time-is-end",
                      "hydroscale ingest workflows/ingest.yaml")),
    )
    ing.add_argument("paths", nargs="*", metavar="PATH",
                     help="WORKFLOW.yaml, or SOURCE (file, folder or glob) and STORE")
    ing.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a workflow value (ingest.KEY=VALUE)")
    ing.add_argument("--show-schema", action="store_true", help="list the workflow keys")
    ing.add_argument("--check", action="store_true", help="validate and print, run nothing")
    ing.add_argument("--no-progress", action="store_true", help="no progress bars")
    ing.add_argument("--variable", help="variable to read (CHRTOUT default q_lateral, else "
                     "qSfcLatRunoff+qBucket); A+B sums CHRTOUT variables")
    ing.add_argument("--name", help="array name in the store (default runoff)")
    ing.add_argument("--routelink", help="RouteLink.nc: rows follow its reaches")
    ing.add_argument("--rapid-connect", help="rapid_connect.csv: rows follow its reaches")
    ing.add_argument("--reach-order", help="text file of reach ids: the row order")
    ing.add_argument("--chunks", metavar="REACH,TIME", help="chunk sizes (default 4096,512)")
    ing.add_argument("--time-is-end", action="store_true",
                     help="source times mark interval ends (NWM CHRTOUT)")
    ing.add_argument("--overwrite", action="store_true", help="replace an existing store")
    ing.set_defaults(func=_ingest)

    bench = sub.add_parser(
        "bench", formatter_class=fmt,
        help="time routing and check it against the float64 oracle; or run a bench script",
        description=_desc(
            "Run a benchmark workflow (kind: benchmark, or a route workflow with default "
            "benchmark settings) on one device: partition, set-up and forward times, "
            "reach-steps/s, and the error against the float64 oracle on whole basins.  Writes "
            "benchmark.json.  With --script, run one of the repository's bench/*.py scripts "
            "instead.",
            examples=("hydroscale bench workflows/benchmark.yaml",
                      "hydroscale bench workflows/route.yaml --set network.reaches=20000",
                      "hydroscale bench --list",
                      "hydroscale bench --script partition -- --reaches 1000000")),
    )
    _workflow_args(bench, "benchmark")
    _network_flags(bench)
    _run_flags(bench)
    bench.add_argument("--list", action="store_true", help="list the bench/ scripts")
    bench.add_argument("--script", metavar="NAME", help="run bench/NAME.py with the arguments "
                       "after --")
    bench.set_defaults(func=_bench)

    cal = sub.add_parser(
        "calibrate", formatter_class=fmt,
        help="fit routing parameters to gauge observations by gradient descent (one device, "
        "or a Dask cluster)",
        description=_desc(
            "Calibrate a parameter model (free per-reach values, or an MLP from reach "
            "attributes) so that routed discharge matches gauge observations: a synthetic "
            "twin (observations routed with known `truth` parameters), a gauge file, or the "
            "bundled basin's USGS gauges.  Gradients flow through the exact router.  With "
            "--cluster (or a `cluster:` key) the gradient is computed in forward and backward "
            "waves on the Dask workers, and the calibration page of the Dask dashboard (URL "
            "printed) shows it and can pause, resume or stop it.  Writes parameters.npz, "
            "history.json, checkpoints/, hydrographs.png and summary.json.",
            examples=("hydroscale calibrate workflows/calibrate.yaml",
                      "hydroscale calibrate workflows/calibrate.yaml --iterations 200 "
                      "--set calibration.lr=0.1",
                      "hydroscale calibrate workflows/calibrate.yaml --resume",
                      "hydroscale calibrate workflows/calibrate.yaml --cluster local-cpu",
                      "hydroscale calibrate workflows/calibrate.yaml --plan --memory-limit 80GB")),
    )
    _workflow_args(cal, "calibrate")
    _network_flags(cal, partition=False)
    _run_flags(cal, calibrate=True)
    cal.add_argument("--iterations", type=_positive_int,
                     help="optimiser iterations (calibration.iterations)")
    cal.add_argument("--resume", action="store_true",
                     help="continue from the latest checkpoint (calibration.resume)")
    cal.add_argument("--plan", action="store_true",
                     help="print the memory plan (how autograd graphs are kept, each "
                     "worker's estimated peak in GB against its limit) and stop before the "
                     "first iteration")
    cal.add_argument("--memory-limit", metavar="SIZE", dest="memory_limit",
                     help="memory each device or worker may use, e.g. 80GB "
                     "(routing.memory_limit)")
    cal.set_defaults(func=_calibrate)

    val = sub.add_parser("validate", help="check workflow files (exit 2 if any is invalid)",
                         description="Validate workflow files without running them.")
    val.add_argument("files", nargs="+", metavar="WORKFLOW")
    val.set_defaults(func=_validate)

    demo = sub.add_parser(
        "demo",
        help="route the bundled Lower Colorado basin on the default local Dask cluster",
        description=_desc(
            "Run the packaged demo workflow (workflows/demo.yaml): the bundled Lower Colorado "
            "(TX) basin, 11,248 NWM reaches, 28 hours of NWM lateral inflow, Muskingum with "
            "NWM's MusK/MusX, steady start, on the default local Dask cluster (CUDA if GPUs are "
            "visible, else CPU). Writes discharge.zarr, a hydrograph PNG and summary.json.",
            examples=("hydroscale demo", "hydroscale demo --set cluster=null   # one device"),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--cluster", default=None,
                      help="cluster config (local-cpu, local-cuda or a YAML path; "
                      "default: the workflow's 'auto')")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="override a workflow value, e.g. routing.substeps=4")
    demo.set_defaults(func=_demo)
    return ap


def _usage_errors() -> tuple[type[BaseException], ...]:
    from .distributed import ClusterConfigError
    from .workflows import WorkflowError

    return (_Usage, WorkflowError, ClusterConfigError)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed run, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script_args: list[str] = []
    if "--" in argv:  # `hydroscale bench --script NAME -- ARGS`: ARGS go to the script
        cut = argv.index("--")
        argv, script_args = argv[:cut], argv[cut + 1 :]
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    args.argv = argv
    args.script_args = script_args
    if script_args and args.command != "bench":
        print(f"hydroscale: error: arguments after '--' ({script_args}) are only for "
              "`hydroscale bench --script NAME -- ARGS`", file=sys.stderr)
        return EXIT_USAGE
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        ap.print_help()
        return EXIT_USAGE
    usage = _usage_errors()
    try:
        return args.func(args)
    except usage as exc:
        print(f"hydroscale {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"hydroscale {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes exit code 1 with a message
        logger.debug("hydroscale %s failed", args.command, exc_info=True)
        print(f"hydroscale {args.command}: error: {exc}", file=sys.stderr)
        if args.verbose < 2:
            print("(run with -vv for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

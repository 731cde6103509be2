"""Issue 5 figures: distributed routing on 1, 2 and 4 GPUs (Dask-CUDA), Zarr -> Zarr against
the I/O floor, and a 10M-reach forest on 4 GPUs.

    python bench/distributed.py --out results/            # GPU machine, all rows
    python bench/distributed.py --cluster local-cpu --reaches 20000 --days 60 \\
        --big-reaches 40000 --e2e-days 30 --check-reaches 3000 --time-chunk 20   # CPU dry run

Workload (DESIGN §5): ``continental_forest(N, seed)``, Muskingum with k ~ U(1, 3) h and
x ~ U(0.1, 0.3), daily steps routed hourly (f = 24), float32, batch 1, uniform random
runoff.  The parameters are computed on each worker from the seed (nothing large passes
through the client).

Rows
----
- ``check``: on 2 workers, a small forest routed by ``route_distributed`` (Zarr forcing ->
  Zarr output) against the single-device ``StagedRouter`` on the same partition: relative
  L2 and max error (float32; and float64 with the torch backend).
- ``scale``: forward routing of ``--reaches`` x ``--days`` on 1, 2, 4 GPUs (one
  LocalCUDACluster per GPU count; the same partition settings, placed on that many
  workers).  Runoff is generated ON THE WORKERS by a counter hash of (seed, reach, day): the
  same data whatever the GPU count (the checksum of all discharge must agree across rows).
  Discharge is reduced on the workers (no output store: 44 GB per run).  A one-chunk warm-up
  pass (Triton compilation) precedes three timed passes; ``forward_s`` is their median.
- ``io_floor`` / ``e2e``: on the largest GPU count, a forcing store of ``--reaches`` x
  ``--e2e-days`` is written by the workers, then read back and written to an output store
  of the same size without routing (the floor), then routed Zarr -> Zarr (end to end).
- ``big``: ``--big-reaches`` on the largest GPU count with time chunks of
  ``--big-time-chunk`` days: bounded per-worker GPU memory (peak per worker reported).
- ``geoglows``: GEOGLOWS' size (``--geoglows-reaches`` 6.84M x ``--geoglows-days`` 29,220
  days, f = 24, DESIGN §5 parameters, discharge reduced on the workers) on the smallest GPU
  count; DiffRoute's paper reports 237.6 s on one GPU.

Every routing row reports the run plan (kernel residency, planned time chunk, planned peak
per worker) beside the measured peak; ``--memory-limit 80GB`` plans as on an 80 GB device.
``--scale-runs 2`` repeats the ``scale`` row on a fresh cluster: the second run's set-up and
warm-up find the compiled kernels in Triton's cache.

``--placement basins`` (default) keeps every basin on one worker (no transfer buffer crosses
workers); ``--placement partition`` uses the partition's per-wave placement (measured 2x
slower on 4 GPUs than on 1: half of the transfer edges then cross workers through TCP).

Every row is printed (and appended to ``rows.jsonl`` in ``--out``) as soon as it is done;
``results.json`` and ``table.md`` are written at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the ``distributed`` package: drop its folder from the import path
# (run as a script, Python puts it first) so that ``import distributed`` finds Dask's.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hydroscale.distributed import (  # noqa: E402
    DistributedRouter,
    io_floor,
    plan_waves,
    route_distributed,
    start_cluster,
    synthesize_forcing_store,
)
from hydroscale.io import SyntheticForcing, ingest, open_output  # noqa: E402
from hydroscale.network import continental_forest  # noqa: E402
from hydroscale.partition import partition_network, travel_time_bound  # noqa: E402
from hydroscale.routing import RivTreeCluster, StagedRouter  # noqa: E402

log = logging.getLogger("bench.distributed")


class MuskingumParams:
    """DESIGN §5 parameters ``[N, 2]`` (k in days, x) from a seed, evaluated on the workers."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, net) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1)
        k = rng.uniform(1 / 24, 3 / 24, net.n_reaches)
        x = rng.uniform(0.1, 0.3, net.n_reaches)
        return np.stack([k, x], axis=1)


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.rows: list[dict] = []
        self.out = Path(args.out) if args.out else None
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(args.scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def emit(self, row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.rows.append(row)
        line = json.dumps(row, default=str)
        print(line, flush=True)
        if self.out:
            with open(self.out / "rows.jsonl", "a") as fh:
                fh.write(line + "\n")

    def cluster(self, n: int):
        a = self.args
        if a.cluster == "local-cuda":
            return start_cluster("local-cuda", n_workers=n, dashboard_address=None,
                                 CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(n)))
        return start_cluster(a.cluster, n_workers=n, dashboard_address=None)

    def partition(self, net, n: int, max_reaches: int | None = None):
        a = self.args
        tic = time.perf_counter()
        p = MuskingumParams(a.seed)(net)
        tt = travel_time_bound("muskingum", p, substeps=a.substeps)
        part = partition_network(net, max_reaches=max_reaches or a.max_reaches, travel_time=tt,
                                 max_travel_time=a.max_travel_time, n_workers=n)
        return part, time.perf_counter() - tic


def _plan_fields(s) -> dict:
    """The run plan of a pass beside what it measured."""
    p = s.run_plan
    return {
        "residency": p.get("residency"), "planned_time_chunk": p.get("time_chunk"),
        "planned_peak_gb": [round(w["peak"] / 1e9, 2) for w in p.get("workers", [])],
        "kernels_gb": [round(w["kernels"] / 1e9, 2) for w in p.get("workers", [])],
        "routers_gb": [round(w.get("routers", 0) / 1e9, 2) for w in p.get("workers", [])],
        "limit_gb": [None if w["limit"] is None else round(w["limit"] / 1e9, 1)
                     for w in p.get("workers", [])],
        "kernel_builds": [w.get("kernel_builds") for w in s.per_worker],
        "pass_peak_gb": [round(w.get("peak_bytes", 0) / 1e9, 2) for w in s.per_worker],
        "planned_task_gb": [round(w["task"] / 1e9, 2) for w in p.get("workers", [])],
        "planned_aggregation_gb": [round(w["aggregation"] / 1e9, 2)
                                   for w in p.get("workers", [])],
        "planned_state_gb": [round(w["state"] / 1e9, 2) for w in p.get("workers", [])],
    }


def _close(client) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def check(b: Bench) -> None:
    """2 workers: distributed (Zarr -> Zarr) == single-device StagedRouter."""
    a = b.args
    net = continental_forest(a.check_reaches, seed=a.seed + 7)
    part, _ = b.partition(net, 2, max_reaches=256)  # small clusters: cross-worker transfers
    plan = plan_waves(net, part)
    params = MuskingumParams(a.seed)(net)
    steps = a.check_days
    forcing = SyntheticForcing(steps, seed=a.seed + 3, scale=10.0)
    r = forcing.read(np.arange(net.n_reaches), (0, net.n_reaches), 0, steps,
                     torch.device("cpu")).numpy()
    import xarray as xr

    fz = b.scratch / "check_forcing.zarr"
    ingest(xr.DataArray(r, {"reach": net.ids, "time": forcing.time}, ("reach", "time")), fz,
           network=net, reach_order=plan.reach_ids, chunks=(4096, a.check_chunk),
           overwrite=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cs = RivTreeCluster(net, part.cluster_of)
    client = b.cluster(2)
    try:
        for dtype, backend in ((torch.float32, "auto"), (torch.float64, "torch")):
            oz = b.scratch / f"check_out_{str(dtype)[6:]}.zarr"
            s = route_distributed(client, net, part, str(fz), str(oz), params,
                                  time_chunk=a.check_chunk, irf="muskingum", substeps=a.substeps,
                                  dtype=dtype, backend=backend, allow_unstable=True,
                                  overwrite=True, plan=plan)
            got = open_output(str(oz), net).values.astype(np.float64)
            sr = StagedRouter(cs, irf="muskingum", substeps=a.substeps, window=s.window,
                              dtype=dtype, backend=backend, allow_unstable=True, device=dev)
            with torch.no_grad():
                ref = sr(torch.tensor(r[None], device=dev, dtype=dtype),
                         torch.tensor(params, device=dev))[0].double().cpu().numpy()
            b.emit({
                "row": "check", "workers": 2, "reaches": net.n_reaches, "days": steps,
                "dtype": str(dtype), "backend": backend, "chunks": s.chunks,
                "groups": s.groups, "cross_worker_exits": s.plan["cross_worker_exits"],
                "window": s.window,
                "rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
                "max_rel": float(np.abs(got - ref).max() / np.abs(ref).max()),
                "nan": int(np.isnan(got).sum()),
            })
    finally:
        _close(client)


def scale(b: Bench, net, n: int, keep: bool = False):
    a = b.args
    part, part_s = b.partition(net, n)
    client = b.cluster(n)
    try:
        forcing = SyntheticForcing(a.days, seed=a.seed + 2)
        dr = DistributedRouter(client, net, part, MuskingumParams(a.seed), irf="muskingum",
                               substeps=a.substeps, allow_unstable=True,
                               batch_reaches=a.batch_reaches, placement=a.placement,
                               max_steps=a.days, time_chunk=a.time_chunk,
                               memory_limit=a.memory_limit)
        warm = dr.route(forcing, None, a.time_chunk, n_steps=min(a.time_chunk, a.days))
        # the median of three passes: one pass is ~0.4 s at 3M, within the machine's noise
        runs = [dr.route(forcing, None, a.time_chunk) for _ in range(3)]
        s = sorted(runs, key=lambda r: r.wall_s)[1]
        # the same pass with one task per (group, chunk): what fusing the units saves
        single = dr.route(forcing, None, a.time_chunk, fuse=False)
    except BaseException:
        _close(client)
        raise
    row = {
        "row": "scale", "gpus": n, "reaches": net.n_reaches, "days": a.days,
        "placement": a.placement,
        "time_chunk": a.time_chunk, "partition_s": round(part_s, 2),
        "setup_s": round(dr.setup_s, 2), "warmup_s": round(warm.wall_s, 2),
        "forward_s": round(s.wall_s, 3), "reach_steps_per_s": s.reach_steps_per_s,
        "forward_s_all": [round(r.wall_s, 3) for r in runs],
        "forward_unfused_s": round(single.wall_s, 3),
        "dask_tasks": len(dr.plan.units()) * s.chunks, "dask_tasks_unfused": single.tasks,
        "groups": s.groups, "waves": s.waves, "tasks": s.tasks, "window": s.window,
        "aggregate_s_per_worker": [round(w["aggregate_s"], 1) for w in dr.worker_setup],
        "setup_task_s_per_worker": [round(w["setup_s"], 1) for w in dr.worker_setup],
        "setup_phases_s_per_worker": [{k: round(v, 2) for k, v in w["phases_s"].items()}
                                      for w in dr.worker_setup],
        "aggregate_phases_s_per_worker": [
            {k: round(v, 2) for k, v in w["aggregate_phases_s"].items()}
            for w in dr.worker_setup],
        "aggregate_peak_gb": [round(w["peak_bytes"] / 1e9, 2) for w in dr.worker_setup],
        "max_truncated_mass": s.max_truncated_mass,
        "cross_worker_exits": s.plan["cross_worker_exits"],
        "peak_gpu_gb": [round(x / 1e9, 2) for x in s.peak_gpu_bytes],
        "route_s_per_worker": [round(p["route_s"], 2) for p in s.per_worker],
        "read_s_per_worker": [round(p["read_s"], 2) for p in s.per_worker],
        "checksum": s.checksum, **_plan_fields(s),
    }
    base = next((r for r in b.rows if r["row"] == "scale" and r["gpus"] == 1
                 and r["reaches"] == net.n_reaches), None)
    if base:
        row["speedup_vs_1"] = round(base["forward_s"] / s.wall_s, 2)
        row["checksum_rel_diff_vs_1"] = abs(s.checksum - base["checksum"]) / abs(base["checksum"])
    b.emit(row)
    if keep:
        return client, part, dr
    dr.close()
    _close(client)
    return None


def e2e(b: Bench, client, net, part, dr) -> None:
    a = b.args
    plan = dr.plan
    fz, fl, oz = (b.scratch / x for x in ("e2e_forcing.zarr", "e2e_floor.zarr", "e2e_out.zarr"))
    tic = time.perf_counter()
    zf = synthesize_forcing_store(client, net, part, fz, SyntheticForcing(
        a.e2e_days, seed=a.seed + 2), a.e2e_chunk, reach_chunk=a.reach_chunk, overwrite=True,
        plan=plan)
    write_s = time.perf_counter() - tic
    gb = net.n_reaches * a.e2e_days * 4 / 1e9
    kw = dict(reach_chunk=a.reach_chunk, overwrite=True)
    floor = io_floor(client, net, part, zf, fl, a.e2e_chunk, plan=plan, **kw)
    s = dr.route(zf, oz, a.e2e_chunk, **kw)
    single = dr.route(zf, oz, a.e2e_chunk, fuse=False, **kw)  # one task per (group, chunk)
    floor2 = io_floor(client, net, part, zf, fl, a.e2e_chunk, plan=plan, **kw)
    best_floor = min(floor.wall_s, floor2.wall_s)
    b.emit({
        "row": "e2e", "gpus": len(dr.addrs), "reaches": net.n_reaches, "days": a.e2e_days,
        "time_chunk": a.e2e_chunk, "reach_chunk": a.reach_chunk, "store_gb_raw": round(gb, 2),
        "forcing_write_s": round(write_s, 2), "io_floor_s": [round(floor.wall_s, 2),
                                                           round(floor2.wall_s, 2)],
        "e2e_s": round(s.wall_s, 2), "e2e_over_floor": round(s.wall_s / best_floor, 3),
        "e2e_unfused_s": round(single.wall_s, 2),
        "floor_write_s_per_worker": [round(p["write_s"], 2) for p in floor.per_worker],
        "e2e_reach_steps_per_s": s.reach_steps_per_s,
        "read_s_per_worker": [round(p["read_s"], 2) for p in s.per_worker],
        "route_s_per_worker": [round(p["route_s"], 2) for p in s.per_worker],
        "write_s_per_worker": [round(p["write_s"], 2) for p in s.per_worker],
        "floor_checksum_equals_forcing": abs(floor.checksum - floor2.checksum) < 1e-6 * abs(
            floor.checksum),
    })
    for p in (fz, fl, oz):
        shutil.rmtree(p, ignore_errors=True)


def one_pass(b: Bench, row: str, n: int, reaches: int, days: int, time_chunk: int,
             **extra) -> None:
    """A ``reaches`` x ``days`` forest routed in one pass on ``n`` fresh GPU workers (time
    chunks of ``time_chunk`` days, discharge reduced on the workers): the ``big`` and
    ``geoglows`` rows."""
    a = b.args
    tic = time.perf_counter()
    net = continental_forest(reaches, seed=a.seed)
    gen_s = time.perf_counter() - tic
    part, part_s = b.partition(net, n)
    client = b.cluster(n)
    try:
        forcing = SyntheticForcing(days, seed=a.seed + 2)
        tic = time.perf_counter()
        with DistributedRouter(client, net, part, MuskingumParams(a.seed), irf="muskingum",
                               substeps=a.substeps, allow_unstable=True,
                               batch_reaches=a.batch_reaches, placement=a.placement,
                               max_steps=days, time_chunk=time_chunk,
                               memory_limit=a.memory_limit) as dr:
            # two chunks first: the kernels of a chunk that carries state compile apart
            # from the first chunk's (~11 s on an H200), and that is not routing
            warm = dr.route(forcing, None, time_chunk, n_steps=min(2 * time_chunk, days))
            s = dr.route(forcing, None, time_chunk)
        total = time.perf_counter() - tic
        b.emit({
            "row": row, "gpus": n, "reaches": net.n_reaches, "days": days,
            "substeps": a.substeps, "placement": a.placement, "time_chunk": time_chunk,
            "memory_limit": a.memory_limit, "network_s": round(gen_s, 1),
            "partition_s": round(part_s, 1), "setup_s": round(dr.setup_s, 1),
            "warmup_s": round(warm.wall_s, 2), "forward_s": round(s.wall_s, 2),
            "setup_plus_forward_s": round(total, 1),
            "reach_steps_per_s": s.reach_steps_per_s,
            "groups": s.groups, "waves": s.waves, "window": s.window,
            "max_truncated_mass": s.max_truncated_mass,
            "peak_gpu_gb": [round(x / 1e9, 2) for x in s.peak_gpu_bytes],
            "aggregate_peak_gb": [round(w["peak_bytes"] / 1e9, 2) for w in dr.worker_setup],
            "state_gb": [round(p["state_bytes"] / 1e9, 2) for p in s.per_worker],
            "route_s_per_worker": [round(p["route_s"], 2) for p in s.per_worker],
            "read_s_per_worker": [round(p["read_s"], 2) for p in s.per_worker],
            "note": "after a two-chunk warm-up pass on fresh workers (Triton compilation)",
            **{k: v(s) if callable(v) else v for k, v in extra.items()},
            **_plan_fields(s),
        })
    finally:
        _close(client)


def big(b: Bench, n: int) -> None:
    a = b.args
    one_pass(b, "big", n, a.big_reaches, a.big_days, a.big_time_chunk)


def geoglows(b: Bench, n: int) -> None:
    """GEOGLOWS' size on ``n`` GPUs (DiffRoute's paper: 237.6 s on one GPU)."""
    a = b.args
    one_pass(b, "geoglows", n, a.geoglows_reaches, a.geoglows_days, a.geoglows_time_chunk,
             diffroute_s=237.6, speedup_vs_diffroute=lambda s: round(237.6 / s.wall_s, 2))


def table(rows: list[dict]) -> str:
    lines = ["| row | gpus | reaches | days | seconds | reach-steps/s | speedup | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["row"] == "check":
            lines.append(f"| check | 2 | {r['reaches']} | {r['days']} | | | | {r['dtype']} "
                         f"rel L2 {r['rel_l2']:.2e}, max {r['max_rel']:.2e} |")
        elif r["row"] in ("scale", "big", "geoglows"):
            lines.append(f"| {r['row']} | {r['gpus']} | {r['reaches']} | {r['days']} | "
                         f"{r['forward_s']} | {r['reach_steps_per_s']:.3g} | "
                         f"{r.get('speedup_vs_1', '')} | peak GB {r['peak_gpu_gb']} |")
        elif r["row"] == "e2e":
            lines.append(f"| e2e | {r['gpus']} | {r['reaches']} | {r['days']} | {r['e2e_s']} "
                         f"| {r['e2e_reach_steps_per_s']:.3g} | | floor {r['io_floor_s']} s, "
                         f"ratio {r['e2e_over_floor']} |")
        elif r["row"] == "skipped":
            lines.append(f"| skipped | | | | | | | {r['what']}: {r['why']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cluster", default=None, help="local-cuda (default with GPUs) or local-cpu")
    ap.add_argument("--gpus", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--reaches", type=int, default=3_000_000)
    ap.add_argument("--days", type=int, default=3650)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-chunk", type=int, default=730)
    # the engine bench's partition (bench/engine.py): window 5 at 3M instead of 7 with 3.0
    # days and 16,384 reaches (measured on one H200: 0.43 s against 0.50 s per 3M pass)
    ap.add_argument("--max-reaches", type=int, default=1024)
    ap.add_argument("--max-travel-time", type=float, default=1.5, help="days within a cluster")
    ap.add_argument("--batch-reaches", type=int, default=262144,
                    help="reaches per group and per kernel-aggregation batch")
    ap.add_argument("--placement", default="basins", choices=["basins", "partition"],
                    help="clusters on workers: whole basins per worker, or the partition's")
    ap.add_argument("--check-reaches", type=int, default=20_000)
    ap.add_argument("--check-days", type=int, default=90)
    ap.add_argument("--check-chunk", type=int, default=30)
    ap.add_argument("--e2e-days", type=int, default=365)
    ap.add_argument("--e2e-chunk", type=int, default=73)
    ap.add_argument("--reach-chunk", type=int, default=65536,
                    help="rows per chunk of the e2e stores (groups that share a chunk write "
                         "it in turn, read-modify-write under a lock)")
    ap.add_argument("--big-reaches", type=int, default=10_000_000)
    ap.add_argument("--big-days", type=int, default=3650)
    ap.add_argument("--big-time-chunk", type=int, default=365)
    ap.add_argument("--geoglows-reaches", type=int, default=6_840_000)
    ap.add_argument("--geoglows-days", type=int, default=29_220)
    ap.add_argument("--geoglows-time-chunk", type=int, default=730)
    ap.add_argument("--memory-limit", default=None,
                    help="bytes each worker may use (e.g. 80GB: plan as on an H100)")
    ap.add_argument("--scale-runs", type=int, default=1,
                    help="run the scale row this many times (fresh clusters; later runs "
                         "find compiled kernels cached)")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="rows to skip: check scale e2e big geoglows")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip rows past this time")
    ap.add_argument("--scratch", default=os.environ.get("TMPDIR", "/tmp") + "/hs_bench_dist")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("hydroscale.routing").setLevel(logging.WARNING)
    if args.cluster is None:
        args.cluster = "local-cuda" if torch.cuda.is_available() else "local-cpu"
    b = Bench(args)
    b.emit({"row": "config", **vars(args), "torch": torch.__version__,
            "gpus_visible": torch.cuda.device_count()})

    def guarded(what: str, fn, *fa):
        if what in args.skip:
            return None
        if b.left() <= 0:
            b.emit({"row": "skipped", "what": what, "why": "time budget spent"})
            return None
        try:
            return fn(*fa)
        except Exception as err:  # noqa: BLE001 - a failed row is reported, the bench goes on
            log.exception("%s failed", what)
            b.emit({"row": "skipped", "what": what, "why": repr(err)[:500]})
            return None

    guarded("check", check, b)
    net = continental_forest(args.reaches, seed=args.seed)
    # smallest and largest GPU counts first (the speedup), the end-to-end rows on the
    # largest cluster while it is up, then the counts in between, then the 10M forest
    counts = sorted(set(args.gpus))
    order = [counts[0]] + ([counts[-1]] if len(counts) > 1 else []) + counts[1:-1]
    for n in order:
        for _ in range(args.scale_runs - 1):
            guarded("scale", scale, b, net, n, False)
        kept = guarded("scale", scale, b, net, n, n == counts[-1])
        if kept is not None:
            client, part, dr = kept
            guarded("e2e", e2e, b, client, net, part, dr)
            dr.close()
            _close(client)
    del net
    guarded("big", big, b, counts[-1])
    guarded("geoglows", geoglows, b, counts[0])
    if b.out:
        (b.out / "results.json").write_text(json.dumps(b.rows, indent=1, default=str))
        (b.out / "table.md").write_text(table(b.rows) + "\n")
    print(table(b.rows), flush=True)


if __name__ == "__main__":
    main()

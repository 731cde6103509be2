"""Issue 6 figures: a calibration iteration (forward + backward + optimiser step) against the
forward alone, with peak device memory, on one device or distributed over the GPUs of one
machine.

    python bench/calibration.py --reaches 1000000 --days 3650 --gauges 200 --out results/
    python bench/calibration.py --workers 2 4 --out results/          # distributed, 2 and 4 GPUs
    python bench/calibration.py --reaches 3000 --steps 60 --workers 2  # CPU dry run

Workload (DESIGN §5): ``continental_forest(N, seed)``, T daily steps, Muskingum with
k ~ U(1, 3) h and x ~ U(0.1, 0.3), f = 24 hourly sub-steps, batch 1, float32, uniform random
runoff.  Observations at ``--gauges`` reaches (random among those draining at least
``--min-upstream`` reaches) are routed with the true parameters; the calibration starts from
parameters perturbed by U(0.7, 1.3) and runs ``--iterations`` iterations of Adam on free
per-reach parameters (NSE loss).

Figures (JSON on stdout, and ``calibration.json`` in ``--out``): partition and set-up seconds,
forward seconds (parameters -> path kernels -> discharge, no gradient: what one iteration must
redo), iteration seconds (median over iterations after the first), their ratio, peak device
memory of each, and the NSE at the gauges before and after.

Distributed mode (``--workers W ...``): for each W, a ``local-cuda`` cluster of W workers (one
per GPU; ``local-cpu`` without GPUs), the network partitioned for W workers
(``--dist-max-reaches``, ``--placement``), runoff generated ON the workers
(:class:`~hydroscale.io.SyntheticForcing`, the same uniform runoff whatever W), the
observations routed on the workers with the true parameters, then
:class:`~hydroscale.calibration.DistributedGradient` from the perturbed start: one forward
pass (the same runtime, loss only: ``iterate(training=False)``) and iterations (forward waves,
backward waves, tree reduction, Adam on every worker), both timed after a warm-up; peak device
memory per worker of each, per-worker phase times, and the ratio.  Rows go to
``calibration_distributed.json`` in ``--out``.  By default the memory plan
(:func:`~hydroscale.routing.plan_calibration`, against each worker's memory or
``--memory-limit``) picks how graphs are kept, and each row reports its strategy and
planned peak per worker beside the measured ones.  ``--kernel-graph recompute`` aggregates
the path kernels again in the backward instead of keeping their autograd graph through the
iteration (less device memory, one more aggregation per iteration); ``--rematerialise no``
(``--no-remat``) keeps every group's forward graph for its backward instead of routing it
again (one routing pass less per iteration, more device memory).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a script named like the ``distributed`` package: drop this folder from the
# import path (run as a script, Python puts it first) so that ``import distributed`` finds
# Dask's.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hydroscale.calibration import Calibrator, GaugeObservations  # noqa: E402
from hydroscale.models import FreeParameters  # noqa: E402
from hydroscale.network import continental_forest  # noqa: E402
from hydroscale.partition import partition_network, travel_time_bound  # noqa: E402
from hydroscale.routing import RivTreeCluster, select_engine  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gb(reset: bool = False) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return 0.0
    return torch.cuda.max_memory_allocated() / 1e9


def _upstream_counts(net) -> np.ndarray:
    """Number of reaches draining through each reach (itself included), level by level."""
    up = np.ones(net.n_reaches)
    order, ptr, down = net.topo_order, net.level_ptr, net.downstream
    for lv in range(net.n_levels):
        idx = order[ptr[lv] : ptr[lv + 1]]
        idx = idx[down[idx] >= 0]
        np.add.at(up, down[idx], up[idx])
    return up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reaches", type=int, default=1_000_000)
    ap.add_argument("--days", "--steps", dest="days", type=int, default=3650)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--gauges", type=int, default=200)
    ap.add_argument("--min-upstream", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="auto", help="'auto', a registered engine or 'levels'")
    ap.add_argument("--window", default="auto", help="kernel window in days, or 'auto'")
    ap.add_argument("--max-reaches", type=int, default=1024)
    ap.add_argument("--max-travel-time", type=float, default=3.0, help="days within a cluster")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default=None)
    ap.add_argument("--workers", type=int, nargs="*", default=None,
                    help="distributed mode: worker (GPU) counts, e.g. 2 4")
    ap.add_argument("--cluster", default=None, help="distributed mode: cluster config "
                    "(default local-cuda with GPUs, else local-cpu)")
    ap.add_argument("--dist-max-reaches", type=int, default=16384,
                    help="distributed mode: most reaches per cluster")
    ap.add_argument("--placement", default="basins", choices=["basins", "partition"])
    ap.add_argument("--batch-reaches", type=int, default=262144,
                    help="distributed mode: most reaches per group (task)")
    ap.add_argument("--kernel-graph", default="auto", choices=["auto", "keep", "recompute"],
                    help="distributed mode: keep the kernels' autograd graph through the "
                    "iteration, aggregate them again in the backward, or auto (the memory "
                    "plan's choice: the fastest that fits)")
    ap.add_argument("--rematerialise", default="auto", choices=["auto", "yes", "no"],
                    help="distributed mode: route each group again in the backward (yes), "
                    "keep its forward graph (no), or auto (the memory plan's choice)")
    ap.add_argument("--memory-limit", default=None, metavar="SIZE",
                    help="distributed mode: memory each worker may use in the plan, e.g. "
                    "80GB (default what each worker has)")
    ap.add_argument("--aggregate-dtype", default="float64", choices=["float64", "float32"],
                    help="distributed mode: arithmetic of the path-kernel aggregation")
    ap.add_argument("--no-remat", action="store_true",
                    help="distributed mode: --rematerialise no (keep each group's forward "
                    "graph for its backward instead of routing it again: one routing pass "
                    "less, more memory)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.workers:
        _distributed(args)
        return
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                 **{k: v for k, v in vars(args).items() if k != "out"}}

    net = continental_forest(args.reaches, seed=args.seed)
    rng = np.random.default_rng(args.seed + 1)
    n = net.n_reaches
    true = np.stack([rng.uniform(1 / 24, 3 / 24, n), rng.uniform(0.1, 0.3, n)], axis=1)
    runoff = torch.rand(1, n, args.days, generator=torch.Generator().manual_seed(args.seed + 2))

    t0 = time.perf_counter()
    tt = travel_time_bound("muskingum", true, substeps=args.substeps)
    part = partition_network(net, max_reaches=args.max_reaches, travel_time=tt,
                             max_travel_time=args.max_travel_time)
    res["partition_s"] = time.perf_counter() - t0
    # store reaches in engine order, so every wave is a contiguous slice
    order = RivTreeCluster(net, part.cluster_of).order
    net = net.reorder(order)
    true, runoff = true[order], runoff[:, torch.as_tensor(order)]
    cluster_of = part.cluster_of[order]

    up = _upstream_counts(net)
    cand = np.flatnonzero(up >= args.min_upstream)
    gauges = rng.choice(cand, min(args.gauges, cand.size), replace=False)
    res["gauges"] = int(gauges.size)

    bounds = {"k": (1 / 48, 4 / 24), "x": (0.0, 0.45)}
    start = np.clip(true * rng.uniform(0.7, 1.3, true.shape), [1 / 40, 0.01], [0.16, 0.44])
    engine = select_engine(dev, None if args.engine == "auto" else args.engine).name
    opts = {"cluster_of": cluster_of} if engine in ("torch", "triton") else {}
    if args.window != "auto":
        opts["window"] = int(args.window)

    t0 = time.perf_counter()
    truth_model = FreeParameters("muskingum", net, bounds=bounds, init=true).to(dev)
    dummy = GaugeObservations(net.ids[gauges], np.ones((gauges.size, args.days)))
    twin = Calibrator(net, runoff, dummy, truth_model, substeps=args.substeps,
                      engine=engine, engine_options=dict(opts), device=dev,
                      allow_unstable=True)
    with torch.no_grad():
        obs_q = twin.simulate()[0].double().cpu().numpy()
    _sync()
    res["setup_and_truth_s"] = time.perf_counter() - t0
    del twin
    obs = GaugeObservations(net.ids[gauges], obs_q)

    model = FreeParameters("muskingum", net, bounds=bounds, init=start).to(dev)
    cal = Calibrator(net, runoff, obs, model, substeps=args.substeps, engine=engine,
                     engine_options=dict(opts), device=dev, lr=args.lr,
                     warmup=min(30, args.days // 4), allow_unstable=True)
    res["engine"] = cal.engine_name

    fwd = []
    _peak_gb(reset=True)
    for _ in range(2):
        _sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            cal.simulate()
        _sync()
        fwd.append(time.perf_counter() - t0)
    res["forward_s"] = fwd[-1]
    res["window_days"] = getattr(cal.router, "window", None)
    res["forward_peak_gb"] = _peak_gb()

    its = []
    _peak_gb(reset=True)
    for _ in range(args.iterations):
        _sync()
        t0 = time.perf_counter()
        cal.step()
        _sync()
        its.append(time.perf_counter() - t0)
    res["iteration_s_all"] = its
    res["iteration_s"] = float(np.median(its[1:] if len(its) > 1 else its))
    res["iteration_peak_gb"] = _peak_gb()
    res["iteration_over_forward"] = res["iteration_s"] / res["forward_s"]
    res["nse_median_first"] = cal.history["nse_median"][0]
    res["nse_median_last"] = cal.history["nse_median"][-1]
    res["loss"] = cal.history["loss"]
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "calibration.json").write_text(text)


def _say(line: str) -> None:
    """A progress line on stderr as a phase ends (a run cut off still shows how far it got)."""
    print(line, file=sys.stderr, flush=True)


def _start(args: argparse.Namespace, n_workers: int):
    from hydroscale.distributed import gpus_visible, start_cluster

    name = args.cluster or ("local-cuda" if gpus_visible() else "local-cpu")
    if name == "local-cuda":
        return start_cluster(name, n_workers=n_workers,
                             CUDA_VISIBLE_DEVICES=",".join(map(str, range(n_workers))))
    if name == "local-cpu":
        return start_cluster(name, n_workers=n_workers, threads_per_worker=1,
                             dashboard_address=None)
    return start_cluster(name)


def _distributed_row(args: argparse.Namespace, n_workers: int) -> dict:
    from hydroscale.calibration import DistributedGradient
    from hydroscale.io import SyntheticForcing

    row: dict = {"workers": n_workers}
    t0 = time.perf_counter()
    client = _start(args, n_workers)
    row["cluster_s"] = time.perf_counter() - t0
    try:
        net = continental_forest(args.reaches, seed=args.seed)
        n = net.n_reaches
        rng = np.random.default_rng(args.seed + 1)
        true = np.stack([rng.uniform(1 / 24, 3 / 24, n), rng.uniform(0.1, 0.3, n)], axis=1)
        t0 = time.perf_counter()
        tt = travel_time_bound("muskingum", true, substeps=args.substeps)
        part = partition_network(net, max_reaches=args.dist_max_reaches, travel_time=tt,
                                 max_travel_time=args.max_travel_time, n_workers=n_workers)
        row["partition_s"] = time.perf_counter() - t0
        up = _upstream_counts(net)
        cand = np.flatnonzero(up >= args.min_upstream)
        gauges = np.sort(rng.choice(cand, min(args.gauges, cand.size), replace=False))
        row["gauges"] = int(gauges.size)
        bounds = {"k": (1 / 48, 4 / 24), "x": (0.0, 0.45)}
        start = np.clip(true * rng.uniform(0.7, 1.3, true.shape), [1 / 40, 0.01],
                        [0.16, 0.44])
        source = SyntheticForcing(args.days, seed=args.seed + 2)
        window = "auto" if args.window == "auto" else int(args.window)
        opts = dict(substeps=args.substeps, window=window, lr=args.lr,
                    warmup=min(30, args.days // 4), allow_unstable=True,
                    placement=args.placement, batch_reaches=args.batch_reaches,
                    kernel_graph=args.kernel_graph,
                    rematerialise=False if args.no_remat else
                    {"auto": "auto", "yes": True, "no": False}[args.rematerialise],
                    memory_limit=args.memory_limit,
                    aggregate_dtype=getattr(torch, args.aggregate_dtype))
        # observations: routed on the workers with the true parameters
        t0 = time.perf_counter()
        dummy = GaugeObservations(net.ids[gauges], np.ones((gauges.size, args.days)))
        truth = FreeParameters("muskingum", net, bounds=bounds, init=true)
        with DistributedGradient(client, net, part, truth, dummy, source, loss="vnmse",
                                 **opts) as dg:
            obs_q = dg.iterate(training=False, step=False, keep_sims=True)["sims"][0]
            window = dg.window
        row["truth_s"] = time.perf_counter() - t0
        _say(f"observations routed with the true parameters: {row['truth_s']:.1f} s")
        obs = GaugeObservations(net.ids[gauges], obs_q)
        model = FreeParameters("muskingum", net, bounds=bounds, init=start)
        t0 = time.perf_counter()
        with DistributedGradient(client, net, part, model, obs, source, loss="nse",
                                 **{**opts, "window": window}) as dg:
            row["setup_s"] = time.perf_counter() - t0
            row["window_days"] = dg.window
            row["plan"] = dg.plan.summary()
            row["memory_plan"] = dg.memory_plan.as_dict()
            row["strategy"] = dg.memory_plan.strategy
            row["planned_peak_gb"] = [b / 1e9 for b in dg.memory_plan.peaks()]
            row["planned_peak_gb_per_strategy"] = {
                k: [w.peaks[k] / 1e9 for w in dg.memory_plan.workers]
                for k in dg.memory_plan.workers[0].peaks}
            _say(f"set-up {row['setup_s']:.1f} s, window {dg.window}, memory plan "
                 f"{row['strategy']} ({dg.memory_plan.chosen}), planned peak "
                 f"{max(row['planned_peak_gb']):.1f} GB")
            _say(dg.memory_plan.table())
            fwd = []
            for i in range(3):  # the first is a warm-up
                fwd.append(dg.iterate(training=False, step=False))
                _say(f"forward {i}: {fwd[-1]['seconds']:.2f} s")
            row["forward_s_all"] = [r["seconds"] for r in fwd]
            row["forward_s"] = float(np.median(row["forward_s_all"][1:]))
            row["forward_peak_gb"] = [b / 1e9 for b in fwd[-1]["peak_bytes"]]
            its = []
            for i in range(max(2, args.iterations)):
                its.append(dg.iterate())
                _say(f"iteration {i}: {its[-1]['seconds']:.2f} s, peak "
                     f"{max(its[-1]['peak_bytes'], default=0) / 1e9:.1f} GB")
            row["iteration_s_all"] = [r["seconds"] for r in its]
            row["iteration_s"] = float(np.median(row["iteration_s_all"][1:]))
            row["iteration_peak_gb"] = [b / 1e9 for b in its[-1]["peak_bytes"]]
            row["iteration_over_forward"] = row["iteration_s"] / row["forward_s"]
            row["worker_timers_s"] = its[-1]["timers"]
            row["loss"] = [r["loss"] for r in its]
            row["nse_median_first"] = float(np.nanmedian(its[0]["nse"]))
            row["nse_median_last"] = float(np.nanmedian(its[-1]["nse"]))
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
    return row


def _distributed(args: argparse.Namespace) -> None:
    from hydroscale.distributed import gpus_visible

    res: dict = {"device": (torch.cuda.get_device_name() if torch.cuda.is_available()
                            else "cpu"), "gpus_visible": gpus_visible(),
                 **{k: v for k, v in vars(args).items() if k != "out"}, "rows": []}
    for w in args.workers:
        row = _distributed_row(args, w)
        res["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("plan", "memory_plan")},
                         default=float),
              flush=True)
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "calibration_distributed.json").write_text(text)


if __name__ == "__main__":
    main()

"""Issue 6 figures on one device: a calibration iteration (forward + backward + optimiser step)
against the forward alone, with peak device memory.

    python bench/calibration.py --reaches 1000000 --days 3650 --gauges 200 --out results/

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
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from hydroscale.calibration import Calibrator, GaugeObservations
from hydroscale.models import FreeParameters
from hydroscale.network import continental_forest
from hydroscale.partition import partition_network, travel_time_bound
from hydroscale.routing import RivTreeCluster, select_engine


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
    ap.add_argument("--days", type=int, default=3650)
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
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


if __name__ == "__main__":
    main()

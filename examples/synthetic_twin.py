"""Synthetic twin: an LSTM runoff model and learned routing trained jointly against gauges.

The truth has no LSTM in it: seeded precipitation and PET on a grid of 10 km cells drive a
one-store bucket model per cell (:class:`hydroscale.models.runoff.BucketModel`, capacities and
recession rates varying across the domain); the runoff depth is interpolated to the reaches'
catchments (:class:`hydroscale.models.interpolation.CatchmentInterpolator`) and routed by the
float64 oracle with linear-storage time constants that follow reach attributes (length,
slope).  The hybrid model sees only the forcings, the cells' static attributes, the reach
attributes and discharge at a few gauges:

    forcings -> LSTMRunoff -> CatchmentInterpolator -> routing (AttributeMLP -> tau) -> gauges

It is trained on sliding windows of the first two years (with warm-up) and validated on the
third year, at the same gauges.  Prints validation NSE/KGE per gauge and the runtime; with
``--out`` writes them to JSON.

Two choices make every gauge reach NSE >= 0.9 (before them, 11 of 16 did, the others at the
outlets of basins of 1-5 reaches, where no averaging over many cells hides runoff errors;
with the true runoff the learned routing alone gave NSE >= 0.93 at all 16, so the runoff was
the limit, and an LSTM fitted to the cells' true runoff directly reached cell NSE 0.99, so its
inputs and capacity were not):

- the loss divides each gauge's squared error by its observed variance over the training
  period (``normalise="gauge"``), not by that of each 60-day window, whose weights varied by
  up to 500x between the dry and the wet windows of one small gauge;
- the LSTM has a quick-flow head (``precip_col=0``): a learned fraction of the day's rain runs
  off at once, so storm peaks scale with the storm; the plain head, bounded by the LSTM's
  tanh state, under-estimated the largest peaks (86-96% of the squared error at the failing
  gauges lay in their 8 largest days, simulated peaks at 50-70% of the observed).

Run:  python examples/synthetic_twin.py [--reaches 200] [--iterations 600] [--device cpu]
                                        [--out out/synthetic_twin/seed0.json]

Measured (2026-11-21, defaults, 2 CPU cores shared with other jobs, load ~3,
OMP_NUM_THREADS=2): validation NSE median 0.995, min 0.980 (16 of 16 gauges >= 0.9), median
KGE 0.982, routing tau within 5% (median) of the truth, 187 s wall in all.  Other twins
(``--seed 1/2/3``, one thread each): NSE min 0.979 / 0.983 / 0.941, medians 0.997 / 0.994 /
0.992, all 16 gauges >= 0.9, 134-246 s.  Ablations on ``--seed 2`` (same settings, windows
drawn in another order): per-window normalisation with the quick-flow head, min 0.866; gauge
normalisation without it, min 0.878.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hydroscale.calibration import RoutingStage, Windows, runoff_routing, synthetic_twin
from hydroscale.models import AttributeMLP
from hydroscale.models.runoff import LSTMRunoff
from hydroscale.partition import partition_network


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reaches", type=int, default=200)
    ap.add_argument("--years", type=int, default=3, help="2/3 training, 1/3 validation")
    ap.add_argument("--grid", type=int, default=8, help="cells per side (10 km cells)")
    ap.add_argument("--gauges", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam; divided by 5 after 2/3")
    ap.add_argument("--warmup", type=int, default=150, help="warm-up days per window")
    ap.add_argument("--length", type=int, default=60, help="loss days per window")
    ap.add_argument("--window", type=int, default=32, help="routing kernel window (days)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures to this JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("hydroscale.calibration.pipelines").setLevel(logging.INFO)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    n_steps = 365 * args.years
    split = n_steps * 2 // 3
    twin = synthetic_twin(args.reaches, n_steps, grid=(args.grid, args.grid),
                          n_gauges=args.gauges, basin_cap=max(args.reaches // 4, 10),
                          seed=args.seed)
    net = twin.network
    print(f"twin: {net.n_reaches} reaches in {len(net.outlets)} basins, "
          f"{twin.interpolator.n_cells} cells, {len(twin.observations)} gauges, "
          f"{n_steps} days (train {split}, validate {n_steps - split})")

    cluster_of = partition_network(net, max_reaches=16).cluster_of
    stage = RoutingStage(net, irf=twin.irf, window=args.window, cluster_of=cluster_of,
                         interpolator=twin.interpolator, device=args.device)
    routing_params = AttributeMLP(twin.irf, net, ("length", "slope"), hidden=(16, 16),
                                  bounds={"tau": (0.1, 5.0)}, seed=args.seed)
    train_depth = twin.depth[:, :split]
    lstm = LSTMRunoff(2, 2, hidden=args.hidden, output_scale=float(train_depth.mean()),
                      precip_col=0)
    lstm.fit_normalisation(twin.forcings[:, :split], twin.static)
    pipe = runoff_routing(
        stage, routing_params, lstm, twin.forcings, twin.observations, static=twin.static,
        windows=Windows(args.length, warmup=args.warmup, stride=5), scale_period=(0, split),
    ).to(args.device)

    validation = (split, n_steps)
    before = pipe.evaluate(validation)
    # Adam at lr for the first 2/3 of the iterations, then lr / 5 (same optimiser state)
    opt = torch.optim.Adam(pipe.parameters(), lr=args.lr)
    first = args.iterations * 2 // 3
    every = max(args.iterations // 10, 1)
    seconds, done = 0.0, 0
    for n_iter, lr in ((first, args.lr), (args.iterations - first, args.lr / 5)):
        for group in opt.param_groups:
            group["lr"] = lr
        hist = pipe.fit(n_iter, train_period=(0, split), batch=args.batch, optimizer=opt,
                        validate=(validation, None), every=every, seed=args.seed + done)
        for it in range(n_iter):
            if not np.isnan(hist.validation[it]):
                print(f"  iteration {done + it + 1:4d}: training loss {hist.loss[it]:.4f}, "
                      f"validation loss {hist.validation[it]:.4f}")
        seconds += hist.seconds
        done += n_iter
    after = pipe.evaluate(validation)
    runtime = time.perf_counter() - t_start

    tau = routing_params().detach().cpu().numpy()[:, 0]
    tau_err = float(np.median(np.abs(tau - twin.params[:, 0]) / twin.params[:, 0]))
    print(f"validation NSE at gauges (before training): median {np.median(before['nse']):.3f}")
    print("validation NSE per gauge:", " ".join(f"{v:.3f}" for v in after["nse"]))
    print("validation KGE per gauge:", " ".join(f"{v:.3f}" for v in after["kge"]))
    n_good = int((after["nse"] >= 0.9).sum())
    print(f"validation NSE: median {np.median(after['nse']):.3f}, min {after['nse'].min():.3f} "
          f"({n_good} of {after['nse'].size} gauges >= 0.9); median KGE "
          f"{np.median(after['kge']):.3f}")
    print(f"routing tau: median relative error {tau_err:.2f} vs the truth")
    print(f"training {seconds:.1f} s ({seconds / max(args.iterations, 1):.2f} s per "
          f"iteration of {args.batch} windows), total runtime {runtime:.1f} s on {args.device} "
          f"({torch.get_num_threads()} torch threads)")
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                       else sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "gauge_ids": [int(i) for i in twin.observations.ids],
        "nse": [float(v) for v in after["nse"]],
        "kge": [float(v) for v in after["kge"]],
        "nse_median": float(np.median(after["nse"])),
        "nse_min": float(after["nse"].min()),
        "gauges_nse_ge_0.9": n_good,
        "kge_median": float(np.median(after["kge"])),
        "nse_median_before": float(np.median(before["nse"])),
        "tau_median_relative_error": tau_err,
        "training_seconds": seconds,
        "runtime_seconds": runtime,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.out}")
    return result


if __name__ == "__main__":
    main()

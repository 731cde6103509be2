"""Partition figures (issue 4): continental forests of 1M and 10M reaches, DESIGN §5 workload.

Muskingum k ~ U(1, 3) h on daily steps gives per-reach travel times k / 24 steps; the kernel
window is 32 days and clusters keep their longest path under half of it (16 steps).  Each size
runs in a fresh process so that its peak RSS is its own.

    python bench/partition.py --reaches 1000000 10000000 --workers 4 --out /tmp/partition
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hydroscale.network import continental_forest
from hydroscale.partition import partition_network, travel_time_bound

WINDOW_STEPS = 32.0  # kernel window, days = routing steps
FRACTION = 0.5  # of the window allowed for the longest in-cluster path


def one(n: int, seed: int, workers: int, max_reaches: int, out: Path | None) -> dict:
    t0 = time.perf_counter()
    net = continental_forest(n, seed=seed)
    gen_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    params = np.stack([rng.uniform(1.0, 3.0, n) / 24.0, rng.uniform(0.1, 0.3, n)], axis=1)
    tt = travel_time_bound("muskingum", params)
    del params
    t1 = time.perf_counter()
    part = partition_network(
        net,
        max_reaches=max_reaches,
        travel_time=tt,
        max_travel_time=FRACTION * WINDOW_STEPS,
        n_workers=workers,
    )
    part_s = time.perf_counter() - t1
    row = {
        "generate_s": round(gen_s, 2),
        "partition_s": round(part_s, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "basins": int(net.outlets.size),
        "levels": net.n_levels,
        **part.summary(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"report_{n}.txt").write_text(part.report() + "\n")
        part.plot(out / f"partition_{n}.png")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reaches", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--max-reaches", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=None, help="write reports and PNGs here")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        row = one(args.reaches[0], args.seed, args.workers, args.max_reaches, args.out)
        print(json.dumps(row))
        return
    print(
        f"{'reaches':>10} {'gen s':>6} {'part s':>7} {'RSS GB':>7} {'clusters':>9} {'waves':>6} "
        f"{'edges':>7} {'x-worker':>9} {'crit.path':>10} {'imb(bal)':>9} {'imb(all)':>9}"
    )
    for n in args.reaches:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--reaches",
            str(n),
            "--seed",
            str(args.seed),
            "--workers",
            str(args.workers),
            "--max-reaches",
            str(args.max_reaches),
        ]
        if args.out is not None:
            cmd += ["--out", str(args.out)]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"{r['reaches']:>10} {r['generate_s']:>6.2f} {r['partition_s']:>7.2f} "
            f"{r['peak_rss_gb']:>7.2f} {r['clusters']:>9} {r['waves']:>6} "
            f"{r['transfer_edges']:>7} {r['cross_worker_edges']:>9} "
            f"{r['critical_path_work']:>10.0f} {r['max_imbalance_balanceable']:>9.2%} "
            f"{r['max_imbalance']:>9.2%}",
            flush=True,
        )
        print(
            f"{'':>10} phases (s): {r['timings_s']}; balanceable waves "
            f"(>= 4 full clusters per worker): {r['balanceable_waves']}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Time-chunked routing on one device: the cost of a chunk carrying state, against the same
steps in one chunk (issue 26: GEOGLOWS' 40 chunks of 730 days ran 6x slower per reach-step
than one 3650-day chunk).

    python bench/chunking.py --reaches 1000000 --days 2920 --chunks 1 4 8

Prints, per chunk count, the median wall time of routing all ``--days`` (kernels built),
the reach-steps/s and the time of the first and of later chunks (median of ``--repeat``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hydroscale.kernels import hash_uniform
from hydroscale.network import continental_forest
from hydroscale.partition import partition_network, travel_time_bound
from hydroscale.routing import RivTreeCluster, StagedRouter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reaches", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=2920)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--chunks", type=int, nargs="*", default=[1, 4, 8])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-reaches", type=int, default=16384)
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = continental_forest(a.reaches, seed=0)
    rng = np.random.default_rng(1)
    p = np.stack([rng.uniform(1 / 24, 3 / 24, net.n_reaches),
                  rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    tt = travel_time_bound("muskingum", p, substeps=a.substeps)
    part = partition_network(net, max_reaches=a.max_reaches, travel_time=tt,
                             max_travel_time=3.0)
    router = StagedRouter(RivTreeCluster(net, part.cluster_of), irf="muskingum",
                          substeps=a.substeps, allow_unstable=True, device=dev)
    params = torch.as_tensor(p, device=dev)
    router.window = router.auto_window(params, max_steps=a.days)
    with torch.no_grad():
        kernels = router.aggregate(params)
    x = hash_uniform(torch.arange(net.n_reaches, device=dev), 0, a.days, 3)[None]

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for n in a.chunks:
        bounds = np.linspace(0, a.days, n + 1).astype(int)
        walls, firsts, laters = [], [], []
        for _ in range(a.repeat + 1):  # the first round warms up
            state, times = None, []
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                for c0, c1 in zip(bounds[:-1], bounds[1:]):
                    tc = time.perf_counter()
                    q, state = router(x[:, :, c0:c1], kernels=kernels, state=state,
                                      return_state=True)
                    sync()
                    times.append(time.perf_counter() - tc)
            walls.append(time.perf_counter() - t0)
            firsts.append(times[0])
            laters.append(float(np.median(times[1:])) if len(times) > 1 else float("nan"))
        w = float(np.median(walls[1:]))
        print(json.dumps({
            "reaches": net.n_reaches, "days": a.days, "chunks": n, "window": router.window,
            "wall_s": round(w, 4), "reach_steps_per_s": net.n_reaches * a.days / w,
            "first_chunk_s": round(float(np.median(firsts[1:])), 4),
            "later_chunk_s": round(float(np.median(laters[1:])), 4),
        }), flush=True)


if __name__ == "__main__":
    main()

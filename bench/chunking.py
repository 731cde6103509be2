"""Time-chunked routing on one device: the cost of a chunk carrying state, against the same
steps in one chunk (issue 26: GEOGLOWS' 40 chunks of 730 days ran 6x slower per reach-step
than one 3650-day chunk).

    python bench/chunking.py --reaches 1000000 --days 2920 --chunks 1 4 8
    python bench/chunking.py --chunks 1 4 --launch "" "block_split_history=1"   # side by side

Prints, per chunk count, the median wall time of routing all ``--days`` (kernels built),
the reach-steps/s and the time of the first and of later chunks (median of ``--repeat``);
with ``--launch``, per launch configuration (``LaunchConfig`` fields, as in
``$HYDROSCALE_KERNEL_LAUNCH``), the variants interleaved round by round.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from hydroscale.kernels import get_launch_config, hash_uniform, parse_launch_spec, set_launch_config
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
    ap.add_argument("--max-travel-time", type=float, default=3.0)
    ap.add_argument("--launch", nargs="*", default=[""],
                    help="launch configurations to compare ('' = the default)")
    a = ap.parse_args()
    base = get_launch_config()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = continental_forest(a.reaches, seed=0)
    rng = np.random.default_rng(1)
    p = np.stack([rng.uniform(1 / 24, 3 / 24, net.n_reaches),
                  rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)
    tt = travel_time_bound("muskingum", p, substeps=a.substeps)
    part = partition_network(net, max_reaches=a.max_reaches, travel_time=tt,
                             max_travel_time=a.max_travel_time)
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

    def one_round(bounds: np.ndarray) -> tuple[float, list[float]]:
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
        return time.perf_counter() - t0, times

    for n in a.chunks:
        bounds = np.linspace(0, a.days, n + 1).astype(int)
        runs: dict[str, list] = {v: [] for v in a.launch}
        for _ in range(a.repeat + 1):  # the first round warms up (compiles every variant)
            for v in a.launch:
                set_launch_config(base, **(parse_launch_spec(v) if v else {}))
                runs[v].append(one_round(bounds))
        set_launch_config(base)
        for v, rounds in runs.items():
            walls = [r[0] for r in rounds[1:]]
            firsts = [r[1][0] for r in rounds[1:]]
            laters = [float(np.median(r[1][1:])) if len(r[1]) > 1 else float("nan")
                      for r in rounds[1:]]
            w = float(np.median(walls))
            print(json.dumps({
                "reaches": net.n_reaches, "days": a.days, "chunks": n, "launch": v,
                "window": router.window, "wall_s": round(w, 4),
                "reach_steps_per_s": net.n_reaches * a.days / w,
                "first_chunk_s": round(float(np.median(firsts)), 4),
                "later_chunk_s": round(float(np.median(laters)), 4),
            }), flush=True)


if __name__ == "__main__":
    main()

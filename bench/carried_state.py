"""What a carried state costs the engine's forward: one chunk routed from a zero state against
the same chunk with a carried (zero) state, per launch configuration of the block kernel.

    python bench/carried_state.py --reaches 1000000 --days 3650

Workload (DESIGN §5): ``continental_forest(N)``, Muskingum k ~ U(1, 3) h, x ~ U(0.1, 0.3),
f = 24, the engine's partition (1.5 days, 1,024 reaches), window 5, float32 runoff U(0, 1),
kernels built beforehand.  For each ``block_split_history`` (the history applied by a second
launch, or read by the block kernel itself) and register cap, prints the median of
``--repeat`` forwards without and with a state, and their ratio.  Measured on an H200
(1M x 3650): split off, 72 registers, 0.1211 s without and 0.2918 s with a state (2.41x);
split on 0.1192 and 0.1346 s (1.13x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from hydroscale.kernels import set_launch_config
from hydroscale.network import continental_forest
from hydroscale.partition import partition_network, travel_time_bound
from hydroscale.routing import RivTreeCluster, StagedRouter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reaches", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3650)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--registers", type=int, nargs="*", default=[72, 0])
    a = ap.parse_args()
    dev = torch.device("cuda")
    n, t = a.reaches, a.days
    net = continental_forest(n, seed=0)
    rng = np.random.default_rng(1)
    p = np.stack([rng.uniform(1 / 24, 3 / 24, n), rng.uniform(0.1, 0.3, n)], 1)
    tt = travel_time_bound("muskingum", p, substeps=24)
    part = partition_network(net, max_reaches=1024, travel_time=tt, max_travel_time=1.5)
    router = StagedRouter(RivTreeCluster(net, part.cluster_of), irf="muskingum", substeps=24,
                          allow_unstable=True, window=5, device=dev)
    r = torch.rand(1, n, t, device=dev)
    kern = router.aggregate(torch.tensor(p, device=dev))
    state = router.init_state(1)

    def median_s(fn) -> float:
        fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(a.repeat):
            tic = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - tic)
        return statistics.median(out)

    for split in (False, True):
        for regs in a.registers:
            previous = set_launch_config(block_max_registers=regs, block_split_history=split)
            try:
                with torch.no_grad():
                    bare = median_s(lambda: router(r, kernels=kern))
                    carried = median_s(lambda: router(r, kernels=kern, state=state))
            finally:
                set_launch_config(previous)
            print(f"block_split_history={int(split)} block_max_registers={regs}: "
                  f"zero state {bare:.4f} s, carried state {carried:.4f} s, "
                  f"ratio {carried / bare:.2f}", flush=True)


if __name__ == "__main__":
    main()

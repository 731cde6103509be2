"""Foundation figures: generate the DESIGN §5 forest, build RiverNetwork + levels, time both.

    python bench/network.py --reaches 10000000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from hydroscale.network import RiverNetwork, continental_forest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reaches", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{'reaches':>10} {'generate s':>11} {'build+levels s':>15} {'basins':>7} "
          f"{'levels':>7} {'peak RSS GB':>12}")
    for n in args.reaches:
        t0 = time.perf_counter()
        net = continental_forest(n, seed=args.seed)
        t1 = time.perf_counter()
        # Rebuild from id/downstream-id arrays: validation + id resolution + levels.
        ids, down_ids = net.ids.copy(), net.downstream_ids.copy()
        t2 = time.perf_counter()
        net2 = RiverNetwork.from_arrays(ids, down_ids)
        levels = net2.levels
        t3 = time.perf_counter()
        assert np.array_equal(levels, net.levels)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{n:>10} {t1 - t0:>11.2f} {t3 - t2:>15.2f} {net.outlets.size:>7} "
              f"{net2.n_levels:>7} {rss:>12.2f}", flush=True)


if __name__ == "__main__":
    main()

"""Where the time of a one-GPU pass goes: the ``scale`` row (``bench/distributed.py``) run on
an in-process Dask worker so that its set-up and its tasks can be profiled (cProfile of the
worker thread; torch.profiler for the device's busy time).

    python bench/profile_runtime.py --reaches 3000000 --days 3650 --out results/

Prints, per phase (set-up, a pass with the compiled kernels warm), the wall time, the top
functions by cumulative time and, for the pass, the GPU kernel time by kernel: a pass whose
kernel time is far below its wall time is bound by launches and Python, not by the device.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from hydroscale.distributed import (  # noqa: E402
    DistributedRouter,
    _runtime,
    _worker,
    plan_waves,
)
from hydroscale.io import SyntheticForcing  # noqa: E402
from hydroscale.network import continental_forest  # noqa: E402
from hydroscale.partition import partition_network, travel_time_bound  # noqa: E402

PROFILE = cProfile.Profile()
ACTIVE = [True]


def profiled(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        if not ACTIVE[0]:
            return fn(*a, **k)
        PROFILE.enable()
        try:
            return fn(*a, **k)
        finally:
            PROFILE.disable()
    return wrapper


def report(title: str, lines: int) -> str:
    s = io.StringIO()
    pstats.Stats(PROFILE, stream=s).sort_stats("cumulative").print_stats(lines)
    return f"==== {title}\n" + s.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reaches", type=int, default=3_000_000)
    ap.add_argument("--days", type=int, default=3650)
    ap.add_argument("--time-chunk", type=int, default=3650)
    ap.add_argument("--lines", type=int, default=45)
    ap.add_argument("--passes", type=int, default=3, help="unprofiled passes timed")
    ap.add_argument("--no-cprofile", action="store_true", help="skip the cProfile'd pass")
    ap.add_argument("--max-reaches", type=int, default=16384)
    ap.add_argument("--max-travel-time", type=float, default=3.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = []
    net = continental_forest(a.reaches, seed=0)
    rng = np.random.default_rng(1)
    params = np.stack([rng.uniform(1 / 24, 3 / 24, a.reaches), rng.uniform(0.1, 0.3, a.reaches)], 1)
    tic = time.perf_counter()
    tt = travel_time_bound("muskingum", params, substeps=24)
    part = partition_network(net, max_reaches=a.max_reaches, travel_time=tt,
                             max_travel_time=a.max_travel_time,
                             n_workers=1)
    plan = plan_waves(net, part, max_group_reaches=262144, placement="basins")
    out.append(f"partition+plan {time.perf_counter() - tic:.2f} s, {plan.n_groups} groups")
    for name in ("setup_task", "aggregate_task", "route_unit_task", "finish_task"):
        wrapped = profiled(getattr(_worker, name))
        setattr(_worker, name, wrapped)  # pickled by reference: the module must hold it
        setattr(_runtime, name, wrapped)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address=None)
    client = Client(cluster)
    forcing = SyntheticForcing(a.days, seed=2)
    tic = time.perf_counter()
    dr = DistributedRouter(client, net, part, params, irf="muskingum", substeps=24,
                           allow_unstable=True, plan=plan, max_steps=a.days,
                           time_chunk=a.time_chunk)
    out.append(f"set-up {time.perf_counter() - tic:.2f} s (router {dr.setup_s:.2f}), window "
               f"{dr.window}")
    for w in dr.worker_setup:
        out.append(f"  worker set-up task {w['setup_s']:.2f} s: phases "
                   f"{ {k: round(v, 2) for k, v in w.get('phases_s', {}).items()} }, "
                   f"aggregate {w['aggregate_s']:.2f} s, routers {w.get('routers')}, "
                   f"groups {w['groups']}, resident {w.get('resident', 0) / 1e9:.2f} GB")
    out.append(report("set-up", a.lines))
    ACTIVE[0] = False
    warm = dr.route(forcing, None, a.time_chunk, n_steps=min(a.time_chunk, a.days))
    out.append(f"warm-up pass {warm.wall_s:.2f} s")
    walls = [dr.route(forcing, None, a.time_chunk).wall_s for _ in range(a.passes)]
    out.append(f"passes (unprofiled) {[round(w, 3) for w in walls]}")
    if not a.no_cprofile:
        globals()["PROFILE"] = cProfile.Profile()
        ACTIVE[0] = True
        s = dr.route(forcing, None, a.time_chunk)
        out.append(f"pass under cProfile {s.wall_s:.3f} s; per worker {s.per_worker}")
        out.append(report("pass", a.lines))
    ACTIVE[0] = False
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        s = dr.route(forcing, None, a.time_chunk)
    ka = prof.key_averages()
    cuda_total = sum(e.self_device_time_total for e in ka) / 1e6
    out.append(f"pass under torch.profiler {s.wall_s:.3f} s; GPU kernel time {cuda_total:.3f} s")
    out.append(ka.table(sort_by="self_cuda_time_total", row_limit=25,
                        max_name_column_width=110))
    out.append(ka.table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=110))
    if torch.cuda.is_available():  # where the pass waits for the device
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dr.route(forcing, None, a.time_chunk)
        torch.cuda.set_sync_debug_mode(0)
        where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                        if "synchroniz" in str(w.message))
        out.append(f"synchronising calls in a pass: {sum(where.values())}: "
                   f"{where.most_common(20)}")
    text = "\n".join(out)
    print(text, flush=True)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "profile_runtime.txt").write_text(text)
    dr.close()
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()

"""Issue 11 figures: what a lost worker and an interrupted run cost a distributed routing run.

    python bench/reliability.py --out results/                        # GPU machine (2 GPUs)
    python bench/reliability.py --cluster local-cpu --reaches 2000 --days 60 \\
        --time-chunk 10 --substeps 4                                    # CPU dry run

Workload (DESIGN §5): ``continental_forest(N, seed)``, Muskingum k ~ U(1, 3) h, x ~ U(0.1,
0.3), daily steps routed hourly (``--substeps 24``), float32, uniform runoff generated on the
workers; 2 workers, every basin on one worker, discharge written to a Zarr store.

Rows (each compared with the undisturbed store, chunk by chunk, bit for bit):

- ``undisturbed``: the run;
- ``worker_killed``: worker 1's process is killed (SIGKILL) once a third of the (group,
  chunk) tasks are recorded; its nanny restarts it; wall time and equality;
- ``resumed``: a run whose forcing fails from the middle of the period on, then the same
  call again: wall time of the resumed run, tasks reused and routed.

Each row is printed as JSON (and appended to ``rows.jsonl`` in ``--out``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/distributed.py is named like Dask's package: drop this folder from the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import zarr  # noqa: E402

from hydroscale.distributed import (  # noqa: E402
    route_distributed,
    start_cluster,
    wait_for_workers,
    worker_addresses,
)
from hydroscale.io import RunProgress, SyntheticForcing  # noqa: E402
from hydroscale.network import continental_forest  # noqa: E402
from hydroscale.partition import partition_network, travel_time_bound  # noqa: E402

log = logging.getLogger("bench.reliability")


class MuskingumParams:
    """DESIGN §5 parameters ``[N, 2]`` (k in days, x) from a seed, evaluated on the workers."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, net) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1)
        return np.stack([rng.uniform(1 / 24, 3 / 24, net.n_reaches),
                         rng.uniform(0.1, 0.3, net.n_reaches)], axis=1)


def same_store(a: Path, b: Path) -> bool:
    """Bit-for-bit equality of two output stores, one row chunk at a time."""
    x = zarr.open_group(str(a), mode="r")["discharge"]
    y = zarr.open_group(str(b), mode="r")["discharge"]
    if x.shape != y.shape:
        return False
    step = x.chunks[0]
    return all(np.array_equal(x[i:i + step], y[i:i + step], equal_nan=True)
               for i in range(0, x.shape[0], step))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", default=None, help="local-cuda (default with GPUs), local-cpu")
    ap.add_argument("--reaches", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3650)
    ap.add_argument("--substeps", type=int, default=24)
    ap.add_argument("--time-chunk", type=int, default=365)
    ap.add_argument("--max-reaches", type=int, default=16384)
    ap.add_argument("--max-travel-time", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scratch", default=os.environ.get("TMPDIR", "/tmp") + "/hs_bench_rel")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(a.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def emit(row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        line = json.dumps(row, default=str)
        print(line, flush=True)
        if out:
            with open(out / "rows.jsonl", "a") as fh:
                fh.write(line + "\n")

    if a.cluster in (None, "local-cuda"):
        client = start_cluster(a.cluster, n_workers=2, dashboard_address=None,
                               **({"CUDA_VISIBLE_DEVICES": "0,1"} if a.cluster else {}))
    else:
        client = start_cluster(a.cluster, n_workers=2, dashboard_address=None)
    try:
        net = continental_forest(a.reaches, seed=a.seed)
        params = MuskingumParams(a.seed)
        tt = travel_time_bound("muskingum", params(net), substeps=a.substeps)
        part = partition_network(net, max_reaches=a.max_reaches, travel_time=tt,
                                 max_travel_time=a.max_travel_time, n_workers=2)
        kw = dict(irf="muskingum", params=params, substeps=a.substeps,
                  time_chunk=a.time_chunk, allow_unstable=True)
        forcing = SyntheticForcing(a.days, seed=a.seed)
        emit({"row": "config", **{k: v for k, v in vars(a).items()}, "reaches": net.n_reaches})

        ref = scratch / "ref.zarr"
        s = route_distributed(client, net, part, forcing, str(ref), **kw)
        emit({"row": "undisturbed", "wall_s": round(s.wall_s, 2), "setup_s": round(s.setup_s, 2),
              "tasks": s.tasks, "groups": s.groups, "chunks": s.chunks})

        killed = scratch / "killed.zarr"
        pids = client.run(os.getpid)
        victim = worker_addresses(client)["1"]
        total = s.tasks
        at: dict[str, float] = {}

        def killer() -> None:
            while "stop" not in at:
                done_dir = killed / "_hydroscale" / "done"
                if done_dir.is_dir() and len(RunProgress(str(killed)).done()) >= total // 3:
                    at["kill_s"] = time.perf_counter()
                    os.kill(pids[victim], signal.SIGKILL)
                    return
                time.sleep(0.05)

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        tic = time.perf_counter()
        k = route_distributed(client, net, part, forcing, str(killed), **kw)
        at["stop"] = 1.0
        th.join(timeout=5)
        emit({"row": "worker_killed", "wall_s": round(k.wall_s, 2),
              "killed_after_s": round(at.get("kill_s", np.nan) - tic, 2),
              "extra_s": round(k.wall_s - s.wall_s, 2), "equal": same_store(ref, killed),
              "checksum_rel_diff": abs(k.checksum - s.checksum) / abs(s.checksum)})
        wait_for_workers(client, 2, timeout=300)

        resumed = scratch / "resumed.zarr"
        fail_at = (a.days // 2 // a.time_chunk) * a.time_chunk + 1
        tic = time.perf_counter()
        try:
            route_distributed(client, net, part, SyntheticForcing(a.days, seed=a.seed,
                                                                  fail_at=fail_at),
                              str(resumed), **kw)
        except RuntimeError:
            pass
        failed_s = time.perf_counter() - tic
        r = route_distributed(client, net, part, forcing, str(resumed), **kw)
        emit({"row": "resumed", "failed_run_s": round(failed_s, 2), "wall_s": round(r.wall_s, 2),
              "reused_tasks": r.reused_tasks, "recomputed_tasks": r.recomputed_tasks,
              "routed_tasks": r.tasks, "equal": same_store(ref, resumed)})
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None:
            cluster.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 28 figures: what one iteration costs the calibration page with many gauges.

    python bench/dashboard.py                       # 5,000 gauges, 100 iterations of history
    python bench/dashboard.py --gauges 20000 --history 1000 --no-browser

A synthetic calibration state (``--gauges`` gauges with coordinates, 2 parameters, 30
histogram bins, ``--history`` iterations already on the curves, one watched hydrograph of
``--steps`` steps) is fed to the page's scheduler plugin on a local Dask cluster (one
in-process worker), exactly as :class:`~hydroscale.calibration.dashboard.DashboardLink` does,
then ``--iterations`` more iterations are timed:

- client: building the iteration event (per-gauge NSE/KGE/bias for training and validation,
  histogram counts, the watched hydrograph) and making it JSON-safe;
- send: the round trip that hands it to the scheduler (the scheduler records it);
- scheduler: recording the event (``Board.event``), building and serialising the page's
  update (``Board.update``: curves, one table page sorted by NSE, the decimated map,
  histograms, hydrographs) once per iteration, its size, a cached re-read, the light status;
- browser (headless Chromium through CDP, unless ``--no-browser`` or none is found): from
  the page's fetch of the update to two animation frames after it applied it to the Bokeh
  sources (``fetch``, ``apply`` and ``render`` ms, see ``window.hsTiming``).

Prints one JSON object (medians and maxima in ms).  The headless-Chromium driver is the
tests' own (``tests/calibration/_cdp.py``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests" / "calibration"))  # the CDP driver

import numpy as np  # noqa: E402


def _stats(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, np.float64) * 1e3
    return {"median_ms": round(float(np.median(a)), 3), "max_ms": round(float(a.max()), 3)}


def _event(rng: np.random.Generator, it: int, g: int, steps: int, gauge: int,
           bins: int) -> dict:
    from hydroscale.calibration._summary import reduce_series

    m = {k: rng.uniform(-1, 1, g) for k in ("nse", "kge", "bias", "val_nse", "val_kge",
                                            "val_bias")}
    counts = rng.multinomial(100_000, np.full(bins, 1 / bins), size=2)
    t, y = reduce_series(rng.uniform(0, 10, steps))
    return {"kind": "iteration", "iteration": it, "loss": 1.0 / it, "val_loss": 1.5 / it,
            "nse_median": 0.5, "nse_min": -1.0, "kge_median": 0.4, "val_nse_median": 0.3,
            "val_nse_min": -2.0, "val_kge_median": 0.2, "lr": 0.05, "seconds": 1.0,
            **{f"gauge_{k}": v.tolist() for k, v in m.items()},
            "params": {"counts": counts, "at_low": np.array([10, 0]),
                       "at_high": np.array([0, 5])},
            "hydrographs": [{"gauge": gauge, "iteration": it,
                             "current": {"step": t.tolist(), "value": y.tolist()}}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gauges", type=int, default=5000)
    ap.add_argument("--history", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3650)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--screenshot", metavar="PNG", help="save the page as it was at the end")
    args = ap.parse_args()

    import distributed

    from hydroscale.calibration._board import Board
    from hydroscale.calibration.dashboard import (
        CalibrationDashboardPlugin,
        _jsonable,
    )

    rng = np.random.default_rng(0)
    g, bins = args.gauges, 30
    ids = np.arange(1, g + 1) * 7
    edges = np.linspace([0.5, 0.0], [3.0, 0.45], bins + 1, axis=-1)
    start = {"kind": "start", "iteration": 0, "total": args.history + args.iterations,
             "gauge_ids": ids.tolist(), "engine": "distributed", "lr": 0.05,
             "gauge_lat": rng.uniform(25, 49, g).tolist(),
             "gauge_lon": rng.uniform(-124, -67, g).tolist(),
             "params": {"names": ["k", "x"], "edges": edges.tolist(), "n": 100_000,
                        "counts": rng.multinomial(100_000, np.full(bins, 1 / bins),
                                                  size=2).tolist(),
                        "at_low": [0, 0], "at_high": [0, 0]}}
    hydro = {"kind": "hydrograph", "gauge": int(ids[0]), "iteration": 0, "train": [0, 2738],
             "validation": [2738, args.steps], "warmup": 30,
             "observed": {"step": list(range(args.steps)),
                          "value": rng.uniform(0, 10, args.steps).tolist()},
             "first": {"step": list(range(args.steps)),
                       "value": rng.uniform(0, 10, args.steps).tolist()}}
    out: dict = {"gauges": g, "history": args.history, "iterations": args.iterations,
                 "hydrograph_steps": args.steps}

    # ---------------------------------------------------------------- scheduler side alone
    board = Board()
    board.event(start)
    board.event(hydro)
    for it in range(1, args.history + 1):
        board.event(_jsonable(_event(rng, it, g, args.steps, int(ids[0]), bins)))
    build, ingest, cached, status, size = [], [], [], [], 0
    for it in range(args.history + 1, args.history + args.iterations + 1):
        t0 = time.perf_counter()
        ev = _jsonable(_event(rng, it, g, args.steps, int(ids[0]), bins))
        t1 = time.perf_counter()
        board.event(ev)
        t2 = time.perf_counter()
        _, body = board.update("nse", False, 0)
        t3 = time.perf_counter()
        board.update("nse", False, 0)
        t4 = time.perf_counter()
        board.status([{"address": f"w{i}", "worker": i, "gpu": None} for i in range(8)])
        t5 = time.perf_counter()
        ingest.append(t2 - t1)
        build.append(t3 - t2)
        cached.append(t4 - t3)
        status.append(t5 - t4)
        size = len(body)
    out["scheduler"] = {"record_event": _stats(ingest), "build_and_serialise_update":
                        _stats(build), "cached_update": _stats(cached),
                        "status": _stats(status), "update_bytes": size}

    # ---------------------------------------------------------------- through a cluster
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(CalibrationDashboardPlugin())
        send = client.scheduler.hydroscale_calibration

        def call(action: str, **kw) -> dict:
            return client.sync(send, action=action, **kw)

        call("attach", token=secrets.token_urlsafe(32))
        call("event", event=_jsonable(start))
        call("event", event=_jsonable(hydro))
        for it in range(1, args.history + 1):
            call("event", event=_jsonable(_event(rng, it, g, args.steps, int(ids[0]), bins)))
        port = client.scheduler_info()["services"]["dashboard"]
        browser = None
        if not args.no_browser:
            from _cdp import Chromium, find_chromium

            binary = find_chromium()
            if binary is None:
                out["browser"] = "no Chromium binary found: not measured"
            else:
                browser = Chromium(binary, tempfile.mkdtemp(prefix="hs-bench-"))
                browser.send("Emulation.setDeviceMetricsOverride", width=1400, height=1800,
                             deviceScaleFactor=1, mobile=False)
                browser.navigate(f"http://127.0.0.1:{port}/calibration")
                browser.wait_for("document.body && document.body.getAttribute("
                                 "'data-hs-updates') >= 1", 120)
                browser.eval("hsSelect(%d)" % int(ids[0]))
                browser.wait_for("document.body.getAttribute('data-hs-hydro') >= 1", 60)
        make, sent, timings = [], [], []
        try:
            for it in range(args.history + 1, args.history + args.iterations + 1):
                n = None if browser is None else int(browser.eval(
                    "document.body.getAttribute('data-hs-updates')"))
                t0 = time.perf_counter()
                ev = _jsonable(_event(rng, it, g, args.steps, int(ids[0]), bins))
                t1 = time.perf_counter()
                call("event", event=ev)
                t2 = time.perf_counter()
                make.append(t1 - t0)
                sent.append(t2 - t1)
                if browser is not None:
                    browser.wait_for(f"document.body.getAttribute('data-hs-updates') > {n}",
                                     60)
                    timings.append(browser.eval("window.hsTiming"))
            if browser is not None and args.screenshot:
                import base64

                shot = browser.send("Page.captureScreenshot", format="png",
                                    captureBeyondViewport=True)["data"]
                Path(args.screenshot).write_bytes(base64.b64decode(shot))
        finally:
            if browser is not None:
                browser.close()
        out["client"] = {"build_event": _stats(make), "send_to_scheduler": _stats(sent)}
        if timings:
            out["browser"] = {k: _stats([t[k] / 1e3 for t in timings if t[k] is not None])
                              for k in ("fetch", "apply", "render")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

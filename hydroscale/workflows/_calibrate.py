"""Run a ``calibrate`` workflow with :class:`hydroscale.calibration.Calibrator` (one device) or,
given a Dask client, :class:`hydroscale.calibration.DistributedCalibrator` on its workers (the
network partitioned with ``routing.max_reaches`` on as many workers), shown on the
dashboard's calibration page.  The kernel window (``routing.window``, default ``auto``) holds
for every parameter within the model's bounds, on one device and on a cluster alike, or the
run is refused before it starts.

Observations come from a synthetic twin (discharge routed with known ``truth`` parameters by
the float64 oracle), a gauge file, or the bundled basin's USGS gauges.  Writes
``history.json``, ``parameters.npz`` (reach ids, parameter names, calibrated values in
routing-step units), checkpoints, a hydrograph PNG (observed, first guess, calibrated) and
``summary.json`` under ``output.dir``.  ``history.json`` holds the per-iteration figures
(loss, validation loss, median/min NSE and KGE, learning rate, seconds) and ``actions``:
every steering action (learning rate, checkpoint, pause, resume, stop) with the iteration
after which it took effect.  A stop (from the page or the API) ends the loop after the
current iteration; the outputs are written as for a finished run (``summary["ended"]``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..irf import get_irf
from ..routing import select_engine
from ._common import NullProgress, Progress, output_folder_lock, peak_facts
from ._common import device as device_of
from ._inputs import RouteInputs, build_inputs, build_params, routing_options

__all__ = ["plan_calibrate", "run_calibrate", "twin_gauges"]

logger = logging.getLogger(__name__)


def twin_gauges(network: Any, n: int) -> np.ndarray:
    """Reach indices of ``n`` gauges: the outlets of the largest basins, then the other
    reaches with the most upstream reaches."""
    from ..api import accumulate

    up = np.asarray(accumulate(network, np.ones(network.n_reaches)))
    outlets = network.outlets[np.argsort(-up[network.outlets], kind="stable")]
    rest = np.setdiff1d(np.arange(network.n_reaches), outlets)
    rest = rest[np.argsort(-up[rest], kind="stable")]
    return np.concatenate([outlets, rest])[: min(n, network.n_reaches)]


def _per_step_means(obs: Any, starts: np.ndarray, interval_s: float) -> np.ndarray:
    """Mean of each gauge's observations within every step ``[t, t + interval)`` (NaN if none)."""
    t = obs["time"].values.astype("datetime64[ns]")
    vals = np.asarray(obs.values, np.float64)
    edges = np.concatenate([starts, starts[-1:] + np.timedelta64(int(interval_s), "s")])
    which = np.searchsorted(edges, t, side="right") - 1
    inside = (which >= 0) & (which < starts.size)
    out = np.full((vals.shape[0], starts.size), np.nan)
    for k in np.unique(which[inside]):
        with np.errstate(all="ignore"):
            block = vals[:, which == k]
            cnt = np.isfinite(block).sum(1)
            out[cnt > 0, k] = np.nansum(block, 1)[cnt > 0] / cnt[cnt > 0]
    return out


def _observations(cfg: dict[str, Any], inputs: RouteInputs, runoff: np.ndarray
                  ) -> tuple[Any, torch.Tensor | None]:
    from ..calibration import GaugeObservations

    oc, rt = cfg["observations"], cfg["routing"]
    net, f = inputs.network, inputs.forcing
    if oc["source"] == "twin":
        from ..routing import route_oracle

        truth = build_params({"irf": rt["irf"], "params": oc["truth"]}, net, f.interval_s,
                             cfg["network"]["seed"])
        q = np.asarray(route_oracle(net, runoff.astype(np.float64), rt["irf"], truth,
                                    substeps=rt["substeps"],
                                    allow_unstable=rt["allow_unstable"]))
        g = twin_gauges(net, oc["gauges"])
        values = q[g]
        if oc["noise"] > 0:
            rng = np.random.default_rng(oc["seed"])
            values = values * (1.0 + oc["noise"] * rng.standard_normal(values.shape))
        return GaugeObservations(net.ids[g], values, f.time), truth
    if oc["source"] == "lower_colorado":
        usgs = inputs.references["USGS"]
        values = _per_step_means(usgs, f.time, f.interval_s)
        keep = np.isfinite(values).sum(1) >= 2
        if not keep.any():
            raise ValueError("no USGS gauge of the bundled basin has two observed steps in "
                             "the forcing period")
        return GaugeObservations(usgs["reach"].values[keep], values[keep], f.time), None
    path = oc["path"]
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        obs = GaugeObservations.from_csv(path)
    elif suffix == ".zarr" or Path(path).is_dir():
        obs = GaugeObservations.from_zarr(path)
    else:
        obs = GaugeObservations.from_netcdf(path)
    if obs.n_steps != f.n_steps:
        raise ValueError(f"observations.path {path!r} has {obs.n_steps} steps, the forcing "
                         f"{f.n_steps}: put them on one time axis (forcing.steps)")
    return obs, None


def _model(cfg: dict[str, Any], inputs: RouteInputs, dtype: torch.dtype) -> Any:
    from ..models import AttributeMLP, FreeParameters

    mc, rt = cfg["model"], cfg["routing"]
    bounds = {k: tuple(v) for k, v in mc["bounds"].items()} or None
    if mc["kind"] == "mlp":
        return AttributeMLP(rt["irf"], inputs.network, mc["attributes"],
                            hidden=tuple(mc["hidden"]), log=tuple(mc["log"]), bounds=bounds,
                            seed=mc["seed"], dtype=dtype)
    init = None
    if mc["init"] is not None:
        init = build_params({"irf": rt["irf"], "params": mc["init"]}, inputs.network,
                            inputs.forcing.interval_s, cfg["network"]["seed"]).to(dtype)
    return FreeParameters(rt["irf"], inputs.network, bounds, init=init, dtype=dtype)


def calibration_options(cfg: dict[str, Any], n_steps: int) -> Any:
    """The workflow's :class:`~hydroscale.calibration.CalibrationOptions` (built once): the
    training period is the first ``1 - validation_fraction`` of the ``n_steps`` steps."""
    from ..calibration import CalibrationOptions

    cc = cfg["calibration"]
    split = int(round(n_steps * (1.0 - cc["validation_fraction"])))
    return CalibrationOptions(
        loss=cc["loss"], warmup=cc["warmup"], train=slice(0, split),
        validation=slice(split, n_steps) if split < n_steps else None,
        optimizer=cc["optimizer"], lr=cc["lr"], gauge_fraction=cc["gauge_fraction"],
        checkpoint_dir=Path(cfg["output"]["dir"]) / "checkpoints",
        checkpoint_every=cc["checkpoint_every"], seed=cc["seed"])


def _distributed(cfg: dict[str, Any], client: Any, inputs: RouteInputs, runoff: np.ndarray,
                 obs: Any, model: Any) -> Any:
    from ..calibration import DistributedCalibrator
    from ..distributed import worker_addresses
    from ..partition import partition_network

    net = inputs.network
    part = partition_network(net, max_reaches=cfg["routing"]["max_reaches"],
                             n_workers=len(worker_addresses(client)))
    limit = cfg["routing"].get("memory_limit")
    return DistributedCalibrator(
        client, net, runoff, obs, model, partition=part, options=routing_options(cfg),
        calibration=calibration_options(cfg, inputs.forcing.n_steps),
        engine_options={} if limit is None else {"memory_limit": limit})


def run_calibrate(cfg: dict[str, Any], *, progress: Progress = NullProgress,
                  client: Any = None) -> dict[str, Any]:
    """Run a validated ``calibrate`` workflow; returns the summary (also ``summary.json``).

    With ``client`` (a ``distributed.Client``) the calibration runs on its workers and is
    shown on the dashboard's calibration page (its URL is ``summary["dashboard"]``).  One
    run writes ``output.dir`` at a time (another live run there is refused)."""
    with output_folder_lock(Path(cfg["output"]["dir"])):
        return _run_calibrate(cfg, progress, client)


def plan_calibrate(cfg: dict[str, Any], *, client: Any = None,
                   progress: Progress = NullProgress) -> Any:
    """The memory plan of a validated ``calibrate`` workflow
    (:class:`~hydroscale.routing.CalibrationPlan`): the calibrator is set up (on one device,
    or on ``client``'s workers, whose wave runtime plans it) and closed before any
    iteration.  Raises :class:`~hydroscale.routing.RunTooLargeError` when nothing fits."""
    cal, *_ = _setup(cfg, progress, client, dashboard=False)
    try:
        return cal.memory_plan
    finally:
        if client is not None:
            cal.close()


def _setup(cfg: dict[str, Any], progress: Progress, client: Any, dashboard: bool = True
           ) -> tuple[Any, RouteInputs, Any, Any, Any, Any, str | None]:
    """``(calibrator, inputs, observations, truth, model, device, dashboard URL)``."""
    from ..calibration import Calibrator

    rt = cfg["routing"]
    inputs = build_inputs(cfg, progress)
    net, f = inputs.network, inputs.forcing
    runoff = f.read_all(0, f.n_steps)
    obs, truth = _observations(cfg, inputs, runoff)
    dtype = torch.float64 if rt["dtype"] == "float64" else torch.float32
    page = None
    if client is not None:
        model = _model(cfg, inputs, dtype)
        cal = _distributed(cfg, client, inputs, runoff, obs, model)
        if dashboard:
            from ..calibration.dashboard import attach_dashboard

            page = attach_dashboard(cal, client).url
        device = f"{cal.engine.n_workers} workers"
    else:
        device = device_of(rt["device"])
        model = _model(cfg, inputs, dtype).to(device)
        name = rt["engine"] if rt["engine"] != "auto" else select_engine(device).name
        engine_options = {"max_reaches": rt["max_reaches"]} if name in ("torch", "triton") \
            else {}
        cal = Calibrator(
            net, torch.from_numpy(runoff), obs, model, options=routing_options(cfg),
            calibration=calibration_options(cfg, f.n_steps), engine=rt["engine"],
            engine_options=engine_options, device=device,
            memory_limit=rt.get("memory_limit"))
    return cal, inputs, obs, truth, model, device, page


def _run_calibrate(cfg: dict[str, Any], progress: Progress, client: Any) -> dict[str, Any]:
    t_start = time.perf_counter()
    cal, inputs, obs, truth, model, device, page = _setup(cfg, progress, client)
    try:
        return _calibrate(cfg, cal, inputs, obs, truth, model, device, page, t_start,
                          progress)
    finally:
        if client is not None:
            cal.close()


class _PeakWatch:
    """The largest measured peak per worker over the iterations (a listener): the workers'
    ``worker_memory`` on a cluster, ``device_memory`` on one GPU."""

    def __init__(self) -> None:
        self.peaks: list[int] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("kind") != "iteration":
            return
        got = [int(w["peak_bytes"]) for w in event.get("worker_memory", [])]
        if not got and event.get("device_memory") is not None:
            got = [int(event["device_memory"])]
        if len(got) != len(self.peaks):
            self.peaks = [0] * len(got)
        self.peaks = [max(a, b) for a, b in zip(self.peaks, got)]


def calibration_memory_facts(plan: Any, measured: list[int]) -> dict[str, Any]:
    """The summary's memory figures: the plan's strategy, and per worker (one device: one)
    its estimated peak beside the measured one and the limit, in GB."""
    return {"memory_strategy": plan.strategy, "memory_strategy_chosen": plan.chosen,
            **peak_facts([w.as_dict() for w in plan.workers], measured)}


def _calibrate(cfg: dict[str, Any], cal: Any, inputs: RouteInputs, obs: Any, truth: Any,
               model: Any, device: Any, page: str | None, t_start: float,
               progress: Progress) -> dict[str, Any]:
    from ..calibration import latest_checkpoint

    rt, cc = cfg["routing"], cfg["calibration"]
    out = Path(cfg["output"]["dir"])
    net, f = inputs.network, inputs.forcing
    resumed_from = None
    if cc["resume"]:
        last = latest_checkpoint(out / "checkpoints")
        if last is not None:
            cal.load_checkpoint(last)
            resumed_from = str(last)
    with torch.no_grad():  # simulate() gives the gauges [B, G, T], in observation order
        first = cal.simulate()[0].float().cpu().numpy()
    cal.first_guess = first  # the page's hydrographs compare with it
    bar = progress("calibrate", cc["iterations"], "it")
    bar.update(cal.iteration)
    cal.add_listener(lambda e: bar.update(1) if e["kind"] == "iteration" else None)
    peaks = _PeakWatch()
    cal.add_listener(peaks)
    t0 = time.perf_counter()
    history = cal.run(cc["iterations"], target_nse=cc["target_nse"])
    train_s = time.perf_counter() - t0
    bar.close()
    if hasattr(cal, "update_model"):  # the distributed parameters live on the workers
        cal.update_model()
    with torch.no_grad():
        params = model().detach().to(torch.float64).cpu()
        final = cal.simulate()[0].float().cpu().numpy()
    names = list(get_irf(rt["irf"]).params)
    np.savez(out / "parameters.npz", reach=net.ids, names=np.asarray(names), values=params)
    # the run history: per-iteration figures and every steering action (page or API)
    (out / "history.json").write_text(json.dumps({**history, "actions": cal.actions},
                                                 indent=1, default=str) + "\n")
    fig = _figure(out / "hydrographs.png", cfg, f, obs, first, final)
    summary: dict[str, Any] = {
        "workflow": cfg.get("name"), "reaches": net.n_reaches, "steps": f.n_steps,
        "gauges": len(obs), "engine": cal.engine_name, "device": str(device),
        "iterations": cal.iteration, "resumed_from": resumed_from,
        "ended": cal.end_reason, "actions": len(cal.actions),
        "lr": {"first": cc["lr"], "last": cal.lr},
        "loss": {"name": cc["loss"], "first": history["loss"][0] if history["loss"] else None,
                 "last": history["loss"][-1] if history["loss"] else None},
        "nse_median": {"first": history["nse_median"][0] if history["nse_median"] else None,
                       "last": history["nse_median"][-1] if history["nse_median"] else None},
        "val_nse_median_last": history["val_nse_median"][-1] if history["val_nse_median"]
        else None,
        "dashboard": page,
        "train_s": round(train_s, 3), "wall_s": round(time.perf_counter() - t_start, 3),
        "outputs": {"parameters": str(out / "parameters.npz"),
                    "history": str(out / "history.json"),
                    "checkpoints": str(out / "checkpoints"),
                    "hydrographs": None if fig is None else str(fig)},
    }
    plan = getattr(cal, "memory_plan", None)
    if plan is not None:
        measured = peaks.peaks
        if not measured:  # one CPU device: the process's resident peak
            from ..routing import peak_bytes

            measured = [peak_bytes(device if isinstance(device, torch.device) else "cpu")]
        summary.update(calibration_memory_facts(plan, measured))
    if truth is not None:
        rel = (params - truth).abs() / truth.abs().clamp_min(1e-12)
        first_p = _model(cfg, inputs, torch.float64)().detach()
        rel0 = (first_p - truth).abs() / truth.abs().clamp_min(1e-12)
        summary["param_rel_error_median"] = {
            n: {"first_guess": float(rel0[:, i].median()), "calibrated": float(rel[:, i].median())}
            for i, n in enumerate(names)}
    js = out / "summary.json"
    summary["outputs"]["summary"] = str(js)
    js.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _figure(path: Path, cfg: dict[str, Any], f: Any, obs: Any, first: np.ndarray,
            final: np.ndarray) -> Path | None:
    k = min(cfg["output"]["hydrographs"], len(obs))
    if k == 0:
        return None
    from ..plotting import plot_hydrographs

    t_end = f.time + np.timedelta64(int(round(f.interval_s)), "s")
    panels = [(f"gauge at reach {int(obs.ids[i])}",
               {"observed": (t_end, obs.values[i]), "first guess": (t_end, first[i]),
                "calibrated": (t_end, final[i])}) for i in range(k)]
    return plot_hydrographs(path, panels, title=f"hydroscale calibrate: {cfg.get('name') or ''}")

"""Build a run's inputs from a validated workflow: network, forcing reader, parameters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..irf import get_irf
from ..network import RiverNetwork, continental_forest
from ..routing import RoutingOptions
from ._common import NullProgress, Progress, phase
from ._spec import TIME_UNITS

__all__ = ["RouteInputs", "build_forcing", "build_inputs", "build_lakes", "build_network",
           "build_params",
           "routing_options"]

logger = logging.getLogger(__name__)

@dataclass
class RouteInputs:
    """Everything a run needs: network, forcing, parameters ``[N, P]`` (float64, routing-step
    units; None for a calibration), gauged reach ids, reference series for the hydrograph
    figures and the bundled basin (:class:`~hydroscale.io.LowerColorado`) when used."""

    network: RiverNetwork
    forcing: Any  # an opened forcing source of hydroscale.io (time, interval_s, read_all)
    params: torch.Tensor | None
    gauges: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    references: dict[str, Any] = field(default_factory=dict)
    basin: Any = None
    lakes: Any = None  # hydroscale.routing.Lakes with routing.lakes level_pool


def build_network(net: dict[str, Any]) -> tuple[RiverNetwork, Any]:
    """The network a workflow's ``network`` section names, and the bundled basin if used.

    ``synthetic`` and ``lower_colorado`` are built here; any other source names a network
    reader of :func:`hydroscale.io.open_network` (``routelink``; ``rapid`` is its
    ``rapid_connect``; or a reader registered with :func:`hydroscale.io.register_reader`)
    that reads ``network.path``; ``network.riv_bas_id``, when set, is that reader's option.
    """
    src = net["source"]
    if src == "synthetic":
        return continental_forest(net["reaches"], seed=net["seed"]), None
    if src == "lower_colorado":
        from ..io import load_lower_colorado

        basin = load_lower_colorado()
        return basin.network, basin
    from ..io import open_network

    if not net.get("path"):
        raise ValueError(f"network.path: required with network.source {src!r}")
    options = {} if net.get("riv_bas_id") is None else {"riv_bas_id": net["riv_bas_id"]}
    engine = src
    if src == "rapid":  # a RAPID2 namelist, or RAPID's rapid_connect CSV
        yml = str(net["path"]).lower().endswith((".yml", ".yaml"))
        engine = "rapid2" if yml else "rapid_connect"
        if yml and options:
            raise ValueError("network.riv_bas_id: a RAPID2 namelist names its basin (bas_pqt)")
    return open_network(net["path"], engine, **options), None


def build_forcing(frc: dict[str, Any], basin: Any = None, *, network: RiverNetwork | None = None,
                  network_cfg: dict[str, Any] | None = None) -> Any:
    """The forcing source (:mod:`hydroscale.io`, not opened) a workflow's ``forcing``
    section names: the synthetic counter-hash runoff the distributed runtime generates too
    (the same values whatever the time chunks), a forcing store, the bundled basin's NWM
    ``q_lateral`` (CHRTOUT times mark the end of each hour: the starts are an hour
    earlier), or what a series reader reads from ``forcing.path`` (held in memory, rows in
    ``network`` order; ingest large forcing to Zarr instead)."""
    from ..io import ArrayForcing, SyntheticForcing, ZarrForcing

    if frc["source"] not in ("synthetic", "zarr", "lower_colorado"):
        return _reader_forcing(frc, network, network_cfg or {})

    if frc["source"] == "synthetic":
        return SyntheticForcing(n_steps=frc["steps"], seed=frc["seed"],
                                scale=float(frc["scale"]), start=frc["start"].rstrip("Z"),
                                interval_s=float(frc["interval_s"]))
    if frc["source"] == "zarr":
        return ZarrForcing(frc["path"], frc["steps"])
    q = basin.q_lateral
    steps = q.sizes["time"] if frc["steps"] is None else min(frc["steps"], q.sizes["time"])
    t_end = q["time"].values[:steps]
    dt = float((t_end[1] - t_end[0]) / np.timedelta64(1, "s")) if t_end.size > 1 else 3600.0
    return ArrayForcing(q.values[:, :steps], t_end - np.timedelta64(int(dt), "s"), dt,
                        "bundled Lower Colorado NWM q_lateral")


def _reader_forcing(frc: dict[str, Any], network: RiverNetwork | None,
                    net_cfg: dict[str, Any]) -> Any:
    """``forcing.path`` read by the series reader ``forcing.source``, as an in-memory
    forcing in network order (source reaches outside the network are dropped).  A mizuRoute
    runoff file gets the HRU areas from the workflow's mizuRoute network file."""
    from ..io import ArrayForcing, get_reader, open_series
    from ..io.mizuroute import is_control_file

    if network is None:
        raise ValueError(f"forcing.source {frc['source']!r}: the network is needed to order "
                         "the forcing's reaches")
    engine, path = frc["source"], frc["path"]
    options: dict[str, Any] = dict(frc.get("options") or {})
    reader = get_reader(engine, "series")
    if (reader.options and "ntopo" in reader.options and not is_control_file(path)
            and net_cfg.get("source") == "mizuroute" and "ntopo" not in options):
        options["ntopo"] = net_cfg["path"]
    da = open_series(path, engine, **options)
    ids = da["reach"].values
    missing = np.setdiff1d(network.ids, ids)
    if missing.size:
        from ..network import format_ids

        raise ValueError(f"forcing {path} ({engine}): reaches of the network missing from it: "
                         f"{format_ids(missing)}")
    extra = ids.size - network.n_reaches
    if extra:
        logger.info("forcing %s: %d reaches not in the network are dropped", path, extra)
    da = da.sel(reach=network.ids)
    t = da["time"].values
    dt = da.attrs.get("interval_s")
    if dt is None and t.size > 1:
        dt = float((t[1] - t[0]) / np.timedelta64(1, "s"))
    if engine == "chrtout" and dt is not None:  # CHRTOUT valid times end each interval
        t = t - np.timedelta64(int(round(dt)), "s")
    if frc["steps"] is not None:
        da, t = da.isel(time=slice(0, frc["steps"])), t[: frc["steps"]]
    return ArrayForcing(np.asarray(da.values), t, dt, f"{engine}:{path}")


def _param_values(name: str, spec: Any, network: RiverNetwork, interval_s: float,
                  fallback_seed: int, time_exponent: int | None = 1) -> np.ndarray:
    """One parameter's values ``[N]`` in routing-step units.  ``units`` name the time unit the
    value is given in; it scales the parameter's time dimension (``time_exponent``, from the
    IRF's declared units: 1 for ``k`` in s, -1 for ``c`` in m/s; None: none declared)."""
    n = network.n_reaches
    if not isinstance(spec, dict):
        values = np.full(n, float(spec))
    elif "uniform" in spec:
        lo, hi = spec["uniform"]
        rng = np.random.default_rng([spec.get("seed", fallback_seed), *name.encode()])
        values = rng.uniform(lo, hi, n)
    elif "attribute" in spec:
        attr = spec["attribute"]
        if attr not in network.attrs:
            raise ValueError(
                f"routing.params.{name}: the network has no attribute {attr!r}; it has "
                f"{sorted(network.attrs)}"
            )
        values = np.asarray(network.attrs[attr], np.float64)
    else:
        values = np.loadtxt(spec["file"], delimiter=",", dtype=np.float64, ndmin=2)[:, 0]
        if values.size != n:
            raise ValueError(
                f"routing.params.{name}: {spec['file']!r} has {values.size} values for {n} "
                "reaches (one per line, in network order)"
            )
    values = values * float(spec.get("factor", 1.0)) if isinstance(spec, dict) else values
    unit = spec.get("units", "steps") if isinstance(spec, dict) else "steps"
    if TIME_UNITS[unit] is not None:
        if time_exponent is None:
            raise ValueError(
                f"routing.params.{name}: units {unit!r} given, but the IRF declares no "
                "parameter units (IRFSpec.units): give the value in routing steps"
            )
        if time_exponent == 0:
            raise ValueError(
                f"routing.params.{name}: units {unit!r} given, but {name} is dimensionless "
                "for this IRF: drop units (or use units: steps)"
            )
        if time_exponent == 1:
            values = values * TIME_UNITS[unit] / interval_s
        else:
            values = values * (TIME_UNITS[unit] / interval_s) ** time_exponent
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"routing.params.{name}: non-finite values at reaches "
            f"{network.ids[bad][:5].tolist()} ({int(bad.sum())} in all)"
        )
    return values


def build_params(routing: dict[str, Any], network: RiverNetwork, interval_s: float,
                 seed: int = 0) -> torch.Tensor:
    """Per-reach parameters ``[N, P]`` (float64, routing-step units, the IRF's column order)."""
    spec = get_irf(routing["irf"])
    exps = spec.time_exponents if spec.units_declared else dict.fromkeys(spec.params)
    cols = [_param_values(p, routing["params"][p], network, interval_s, seed, exps[p])
            for p in spec.params]
    return torch.from_numpy(np.stack(cols, axis=-1))


def routing_options(cfg: dict[str, Any], **replace: Any) -> RoutingOptions:
    """The workflow's routing as one :class:`~hydroscale.routing.RoutingOptions` (built once,
    passed as one object to the engine, the runtime and the run fingerprint); ``replace``
    amends it (e.g. the backend an engine name picks)."""
    rt = cfg["routing"]
    engine = rt.get("engine", "auto")
    return RoutingOptions(
        irf=rt["irf"], substeps=rt["substeps"], window=rt.get("window", "auto"),
        dtype=torch.float64 if rt["dtype"] == "float64" else torch.float32,
        backend=engine if engine in ("torch", "triton") else "auto",
        allow_unstable=rt["allow_unstable"]).replace(**replace)


def _network_what(net: dict[str, Any]) -> str:
    if net["source"] == "synthetic":
        return f"generating a synthetic forest of {net['reaches']:,} reaches (seed {net['seed']})"
    if net["source"] == "lower_colorado":
        return "loading the bundled Lower Colorado basin"
    return f"reading the {net['source']} network {net.get('path')}"


def build_inputs(cfg: dict[str, Any], progress: Progress = NullProgress) -> RouteInputs:
    """Network, forcing and parameters of a validated ``route``/``benchmark``/``calibrate``
    workflow; each is a logged phase (``network``, ``forcing``, ``parameters``) shown
    through ``progress`` (see :func:`~._common.phase`)."""
    with phase(progress, "network", _network_what(cfg["network"])):
        network, basin = build_network(cfg["network"])
    frc = cfg["forcing"]
    with phase(progress, "forcing", f"opening the {frc['source']} forcing"
               + (f" {frc['path']}" if frc.get("path") else "")
               + f" for {network.n_reaches:,} reaches"):
        forcing = build_forcing(frc, basin, network=network,
                                network_cfg=cfg["network"]).open(network)  # checked once
    if forcing.interval_s is None:
        raise ValueError(f"the forcing {forcing.describe()['source']} has irregular or unknown "
                         "times (no interval_s attribute); re-ingest regular time steps")
    params = None
    if "params" in cfg["routing"]:  # a calibration starts from its parameter model instead
        with phase(progress, "parameters", f"{cfg['routing']['irf']} parameters of "
                   f"{network.n_reaches:,} reaches"):
            params = build_params(cfg["routing"], network, forcing.interval_s,
                                  cfg["network"]["seed"])
    gauges = np.zeros(0, np.int64)
    refs: dict[str, Any] = {}
    if basin is not None:
        gauges = np.asarray(basin.gauged_reaches, np.int64)
        refs = {"NWM streamflow": basin.streamflow, "USGS": basin.usgs_at_reaches}
    elif "gages" in network.attrs:
        g = np.asarray(network.attrs["gages"]).astype(str)
        gauges = network.ids[np.char.strip(g) != ""]
    lakes = None
    if cfg["routing"].get("lakes", "none") == "level_pool":
        path = cfg["network"].get("lakes")
        with phase(progress, "lakes", f"reading the lakes {path or 'of the bundled basin'}"):
            lakes = build_lakes(path, network, basin)
    logger.info("inputs: %d reaches, %d steps of %s s, forcing %s", network.n_reaches,
                forcing.n_steps, forcing.interval_s, forcing.describe()["source"])
    return RouteInputs(network, forcing, params, gauges, refs, basin, lakes)


def build_lakes(path: str | None, network: RiverNetwork, basin: Any = None) -> Any:
    """The level-pool lakes of ``network`` (:class:`~hydroscale.routing.Lakes`) from
    ``network.lakes`` (a LAKEPARM.nc or a lake table), or the bundled basin's."""
    if path:
        from ..io import open_lakes

        return open_lakes(path, network)
    if basin is None:
        raise ValueError("routing.lakes level_pool: give network.lakes (an NWM LAKEPARM.nc or "
                         "a lake table CSV)")
    return basin.lakes

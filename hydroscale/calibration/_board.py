"""What the calibration page shows, held on the scheduler: :class:`Board`.

A calibration (through :class:`~hydroscale.calibration.dashboard.DashboardLink`) sends it
events; the page's handlers read two views of it:

- :meth:`Board.status`: the light part (state, iteration, waves and groups per worker, worker
  memory and timings, the action log), read at every poll;
- :meth:`Board.update`: the heavy part (curves, one page of the per-gauge table, the map's
  points, parameter histograms, watched hydrographs), rebuilt only when ``version`` changes,
  i.e. at most once per iteration (and when a hydrograph arrives), and cached per query so
  that several open pages cost one build.

Bounded whatever the run: per-gauge values are the latest iteration's only (``G`` floats per
metric); the curves hold one float per iteration and key; hydrographs are kept for at most
:data:`MAX_HYDROGRAPHS` gauges (the most recently clicked; at most
:data:`~hydroscale.calibration._summary.MAX_POINTS` points per series); the action log keeps
the last :data:`MAX_ACTIONS` entries; the table sends :data:`PAGE_ROWS` rows and the map
:data:`MAP_POINTS` points.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["Board", "MAP_POINTS", "PAGE_ROWS", "SERIES", "SORT_KEYS", "decimate_map",
           "table_page"]

SERIES = ("iteration", "loss", "val_loss", "nse_median", "nse_min", "kge_median",
          "val_nse_median", "val_nse_min", "val_kge_median", "lr", "seconds")
#: table columns the page sorts by (per-gauge metric names)
SORT_KEYS = ("nse", "kge", "bias", "val_nse", "val_kge", "id")
PAGE_ROWS = 50
MAP_POINTS = 1500
MAP_WORST = 300  # the map always shows this many of the worst-NSE gauges
MAX_HYDROGRAPHS = 8
MAX_ACTIONS = 200
_GAUGE_KEYS = ("nse", "kge", "bias", "val_nse", "val_kge", "val_bias")


def _num(v: Any) -> float | None:
    """JSON-safe float (NaN/inf -> None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _nums(a: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(x) else x for x in np.asarray(a, np.float64).tolist()]


def table_page(ids: np.ndarray, values: dict[str, np.ndarray], sort: str, descending: bool,
               page: int, rows: int = PAGE_ROWS) -> dict[str, Any]:
    """One page of the per-gauge table: rows ``page * rows ...`` of the gauges ordered by
    ``sort`` (a key of ``values``, or ``"id"``), NaN always last; ties keep gauge order.

    Returns ``rows`` (``id``, ``index`` and every column, NaN as None), ``page``,
    ``pages``, ``total``."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {list(SORT_KEYS)}, got {sort!r}")
    n = len(ids)
    key = np.asarray(ids, np.float64) if sort == "id" else values.get(sort)
    if key is None or len(key) != n:
        key = np.full(n, np.nan)
    nan = ~np.isfinite(key)
    k = np.where(nan, 0.0, -key if descending else key)
    order = np.lexsort((np.arange(n), k, nan))  # last key first: NaN last, then value, index
    pages = max(1, -(-n // rows))
    page = min(max(int(page), 0), pages - 1)
    pick = order[page * rows:(page + 1) * rows]
    out = {"id": np.asarray(ids)[pick].tolist(), "index": pick.tolist()}
    for name, v in values.items():
        out[name] = _nums(np.asarray(v)[pick]) if len(v) == n else [None] * len(pick)
    return {"rows": out, "page": page, "pages": pages, "total": n}


def decimate_map(nse: np.ndarray, n_points: int = MAP_POINTS, worst: int = MAP_WORST
                 ) -> np.ndarray:
    """Indices (sorted) of at most ``n_points`` gauges for the map: the ``worst`` lowest
    NSE (where problems are) and an even spread of the others (every gauge when there are
    few enough)."""
    n = len(nse)
    if n <= n_points:
        return np.arange(n)
    score = np.where(np.isfinite(nse), nse, -np.inf)  # no NSE yet: shown first
    by_nse = np.argsort(score, kind="stable")
    keep = by_nse[:worst]
    rest = np.sort(by_nse[worst:])
    spread = rest[np.linspace(0, rest.size - 1, n_points - worst).round().astype(np.int64)]
    return np.unique(np.concatenate([keep, spread]))


class Board:
    """The state of the latest calibration run, as the page shows it (scheduler side)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.run = 0
        self.reset()

    def reset(self) -> None:
        self.state = "idle"
        self.requested = "running"
        self.iteration = 0
        self.total = 0
        self.engine = ""
        self.lr: float | None = None
        self.version = 0
        self.series: dict[str, list[float | None]] = {k: [] for k in SERIES}
        self.ids = np.zeros(0, np.int64)
        self.lat: np.ndarray | None = None
        self.lon: np.ndarray | None = None
        self.gauges: dict[str, np.ndarray] = {}
        self.params: dict[str, Any] | None = None
        self.hydro: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.watch_pending: list[int] = []
        self.commands: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.device_memory: float | None = None
        self.waves: dict[str, Any] = {"iteration": None, "forward": None, "backward": None}
        self.worker_groups: dict[str, dict[str, list[int]]] = {}
        self.worker_peak: dict[str, float | None] = {}
        self.worker_timers: dict[str, dict[str, float]] = {}
        self.updated = time.time()
        self._cache: dict[tuple, bytes] = {}

    # ------------------------------------------------------------------ events in
    def event(self, ev: dict[str, Any]) -> None:
        """Record one event of the calibration (``kind``: start, iteration, progress,
        status, action, hydrograph, end)."""
        with self.lock:
            kind = ev.get("kind")
            if kind == "start":
                self._start(ev)
            elif kind == "iteration":
                self._iteration(ev)
            elif kind == "progress":
                it = int(ev.get("iteration", 0))
                if self.waves["iteration"] != it:
                    self.waves = {"iteration": it, "forward": None, "backward": None}
                self.waves[str(ev["phase"])] = [int(ev["wave"]), int(ev["waves"])]
                for w in ev.get("workers") or []:
                    self.worker_groups[str(w["worker"])] = {
                        k: v for k, v in w.items() if k in ("forward", "backward")}
            elif kind == "status":
                self.state = str(ev["state"])
            elif kind == "action":
                self.actions.append({k: v for k, v in ev.items() if k != "kind"})
                del self.actions[:-MAX_ACTIONS]
                if ev.get("action") == "lr":
                    self.lr = _num(ev.get("lr_to"))
            elif kind == "hydrograph":
                self._hydrograph(ev)
                self._bump()
            elif kind == "end":
                self.state = "stopped" if ev.get("reason") == "stopped" else "finished"
                self.iteration = int(ev.get("iteration", self.iteration))
                self._bump()
            self.updated = time.time()

    def _bump(self) -> None:
        self.version += 1
        self._cache.clear()

    def _start(self, ev: dict[str, Any]) -> None:
        run = self.run + 1
        hydro = self.hydro  # the clicked gauges stay watched by the next run of the page
        self.reset()
        self.run = run
        self.state = "running"
        self.total = int(ev.get("total", 0))
        self.iteration = int(ev.get("iteration", 0))
        self.engine = str(ev.get("engine", ""))
        self.lr = _num(ev.get("lr"))
        self.ids = np.asarray(ev.get("gauge_ids", []), np.int64)
        if ev.get("gauge_lat") is not None and ev.get("gauge_lon") is not None:
            self.lat = np.asarray(ev["gauge_lat"], np.float64)
            self.lon = np.asarray(ev["gauge_lon"], np.float64)
        p = ev.get("params")
        if p is not None:
            self.params = {"names": list(p["names"]), "edges": p["edges"], "n": int(p["n"]),
                           "first": {k: p[k] for k in ("counts", "at_low", "at_high")},
                           "now": None}
        self.actions = list(ev.get("actions") or [])[-MAX_ACTIONS:]
        self.watch_pending = [g for g in hydro if g in set(self.ids.tolist())]
        self._bump()

    def _iteration(self, ev: dict[str, Any]) -> None:
        self.iteration = int(ev["iteration"])
        for k in SERIES:
            self.series[k].append(_num(ev.get(k)))
        for k in _GAUGE_KEYS:
            if ev.get("gauge_" + k) is not None:
                self.gauges[k] = np.asarray(ev["gauge_" + k], np.float64)
        if ev.get("lr") is not None:  # the rate of this step; a later change comes after
            self.lr = _num(ev["lr"])
        if self.params is not None and ev.get("params") is not None:
            self.params["now"] = ev["params"]
        for h in ev.get("hydrographs") or []:
            self._hydrograph(h)
        if ev.get("device_memory") is not None:
            self.device_memory = _num(ev["device_memory"])
        for w in ev.get("worker_memory") or []:
            self.worker_peak[str(w["worker"])] = _num(w["peak_bytes"])
        for w in ev.get("worker_timers") or []:
            self.worker_timers[str(w["worker"])] = {k: float(v) for k, v in w.items()
                                                    if k != "worker"}
        self._bump()

    def _hydrograph(self, h: dict[str, Any]) -> None:
        g = int(h["gauge"])
        cur = self.hydro.pop(g, {"gauge": g})
        for k in ("observed", "first", "current", "train", "validation", "warmup",
                  "iteration"):
            if k in h and (h[k] is not None or k not in cur):
                cur[k] = h[k]
        self.hydro[g] = cur
        while len(self.hydro) > MAX_HYDROGRAPHS:
            self.hydro.popitem(last=False)

    # ------------------------------------------------------------------ requests
    def request(self, action: str) -> str:
        """Pause, resume or stop (a state the link applies); returns the requested state."""
        wanted = {"pause": "paused", "resume": "running", "stop": "stopped"}
        if action not in wanted:
            raise ValueError(f"unknown action {action!r}; use pause, resume or stop")
        with self.lock:
            if self.requested != "stopped":
                self.requested = wanted[action]
            return self.requested

    def command(self, cmd: dict[str, Any]) -> None:
        """Queue a one-shot command (``{"action": "lr", "lr": x}`` or ``{"action":
        "checkpoint"}``) for the link to take."""
        with self.lock:
            self.commands.append(dict(cmd))
            del self.commands[:-50]

    def watch(self, gauge: int) -> dict[str, Any] | None:
        """The page asks for gauge ``gauge``'s hydrograph: what is held (None if nothing
        yet); the link is asked to send it (see :meth:`take`)."""
        with self.lock:
            if gauge not in set(self.ids.tolist()):
                raise ValueError(f"no gauge at reach id {gauge} in this calibration")
            if gauge not in self.watch_pending:
                self.watch_pending.append(gauge)
            held = self.hydro.get(gauge)
            if held is not None:
                self.hydro.move_to_end(gauge)
            return None if held is None else dict(held)

    def take(self) -> dict[str, Any]:
        """What the link applies: the requested state, queued commands and gauges to
        watch (the last two emptied)."""
        with self.lock:
            out = {"requested": self.requested, "commands": self.commands,
                   "watch": self.watch_pending}
            self.commands, self.watch_pending = [], []
            return out

    # ------------------------------------------------------------------ views out
    def status(self, workers: list[dict[str, Any]]) -> dict[str, Any]:
        """The light view (every poll)."""
        with self.lock:
            rows = []
            for w in workers:
                a = w["address"]
                rows.append({**w, "peak_bytes": self.worker_peak.get(a),
                             "groups": self.worker_groups.get(a),
                             "timers": self.worker_timers.get(a)})
            return {"run": self.run, "version": self.version, "state": self.state,
                    "requested": self.requested, "iteration": self.iteration,
                    "total": self.total, "engine": self.engine, "lr": self.lr,
                    "device_memory": self.device_memory, "workers": rows,
                    "waves": dict(self.waves), "actions": self.actions[-20:],
                    "n_gauges": int(self.ids.size), "has_map": self.lat is not None,
                    "updated": self.updated}

    def meta(self) -> dict[str, Any]:
        """What the page's layout depends on (built when the page loads)."""
        with self.lock:
            return {"run": self.run, "has_map": self.lat is not None,
                    "params": None if self.params is None else list(self.params["names"]),
                    "n_gauges": int(self.ids.size)}

    def update(self, sort: str = "nse", descending: bool = False, page: int = 0
               ) -> tuple[int, bytes]:
        """``(version, JSON bytes)`` of the heavy view for one table query (cached until
        the next version)."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {list(SORT_KEYS)}, got {sort!r}")
        with self.lock:
            key = (self.version, sort, bool(descending), int(page))
            hit = self._cache.get(key)
            if hit is None:
                hit = json.dumps(self._update(sort, descending, page),
                                 separators=(",", ":")).encode()
                if len(self._cache) > 16:
                    self._cache.clear()
                self._cache[key] = hit
            return self.version, hit

    def _update(self, sort: str, descending: bool, page: int) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "run": self.run,
                               "series": {k: list(v) for k, v in self.series.items()}}
        n = self.ids.size
        cols = {k: v for k, v in self.gauges.items() if len(v) == n}
        out["table"] = table_page(self.ids, cols, sort, descending, page)
        out["table"].update(sort=sort, descending=bool(descending))
        nse = cols.get("nse", np.full(n, np.nan))
        if self.lat is not None:
            pick = decimate_map(nse)
            out["map"] = {"id": self.ids[pick].tolist(), "lat": _nums(self.lat[pick]),
                          "lon": _nums(self.lon[pick]), "nse": _nums(nse[pick]),
                          "shown": int(pick.size), "total": int(n)}
        finite = nse[np.isfinite(nse)]
        out["counts"] = {"gauges": int(n), "nse_below_0": int((finite < 0).sum()),
                         "nse_above_0_7": int((finite > 0.7).sum())}
        out["params"] = self.params
        out["hydrographs"] = list(self.hydro.values())
        return out

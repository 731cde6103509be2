"""The calibration page of the Dask dashboard, and the link between it and a calibration.

How it plugs in: :class:`CalibrationDashboardPlugin` is a scheduler plugin.  When it starts on
the scheduler it

- adds three routes to the scheduler's HTTP application (the dashboard's tornado app, same
  port): ``/calibration`` (the page), ``/calibration/state.json`` (what the page polls,
  read-only) and ``/calibration/control`` (POST ``{"action": "pause"|"resume"|"stop"}``, see
  below);
- appends ``calibration`` to the dashboard's navigation (the ``pages`` list of
  ``distributed.dashboard.scheduler.template_variables``, shared by every dashboard page);
- registers a scheduler handler ``hydroscale_calibration`` through which a calibration running
  in a client sends its events and receives the page's pause/resume/stop requests.

The page (package data: ``templates/calibration.html``, a Jinja template) extends the
dashboard's own ``base.html`` template (same navigation bar and style) and draws with a few
lines of JavaScript and SVG, so it needs nothing beyond what the dashboard already serves.
It shows the loss and the median training NSE/KGE per iteration, per-gauge NSE/KGE, progress
(iterations; for a :class:`~hydroscale.calibration.DistributedCalibrator` also the
forward/backward wave of the running iteration), and GPU memory per worker (from the workers'
NVML metrics when they have GPUs, and the peak of the last iteration that a distributed
calibrator reports per worker, 0 on CPU) and of the calibrating device.

On the client side, :func:`attach_dashboard` registers the plugin if needed, forwards a
:class:`~hydroscale.calibration.Calibrator`'s events and applies the page's requests to its
:class:`~hydroscale.calibration.CalibrationControl` (a background thread polls while the loop
is paused).  It returns a :class:`DashboardLink` whose ``url`` is the page's address.

Who may pause, resume or stop: every attach makes a new secret token (``link.token``) and hands
it to the scheduler, which embeds it in the page it serves.  A control request must

- come from the page's own origin: an ``Origin`` (or, without one, ``Referer``) header naming
  another origin is refused;
- carry the token in the ``X-Hydroscale-Token`` header, compared in constant time;
- send its action as JSON (``Content-Type: application/json``).

A custom header and a JSON body are what a cross-site form cannot send, and a cross-origin
script cannot send them without a CORS preflight that this page never answers (it sends no CORS
headers); nor can another origin read the page to learn the token.  Refusals are answered with
a short plain-text message (403 for origin and token, 400/415 for a malformed request) and
logged without a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import secrets
import threading
import time
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from ._control import CalibrationControl

__all__ = ["CalibrationDashboardPlugin", "DashboardLink", "attach_dashboard", "page_url",
           "PLUGIN_NAME", "TOKEN_HEADER"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "hydroscale-calibration"
HANDLER = "hydroscale_calibration"
TOKEN_HEADER = "X-Hydroscale-Token"
_SERIES = ("iteration", "loss", "nse_median", "kge_median", "nse_min", "val_nse_median")


class _Board:
    """What the page shows: the state of the latest calibration run (scheduler side)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.run = 0
        self.state = "idle"
        self.requested = "running"
        self.iteration = 0
        self.total = 0
        self.engine = ""
        self.series: dict[str, list[float]] = {k: [] for k in _SERIES}
        self.gauge_ids: list[int] = []
        self.gauge_nse: list[float] = []
        self.gauge_kge: list[float] = []
        self.device_memory: float | None = None
        self.waves: dict[str, Any] = {"iteration": None, "forward": None, "backward": None}
        self.worker_peak: dict[str, float] = {}
        self.updated = time.time()

    def event(self, ev: dict[str, Any]) -> None:
        with self.lock:
            kind = ev.get("kind")
            if kind == "start":
                run = self.run + 1
                self.reset()
                self.run = run
                self.state = "running"
                self.total = int(ev.get("total", 0))
                self.iteration = int(ev.get("iteration", 0))
                self.gauge_ids = [int(i) for i in ev.get("gauge_ids", [])]
                self.engine = str(ev.get("engine", ""))
            elif kind == "iteration":
                self.iteration = int(ev["iteration"])
                for k in _SERIES:
                    self.series[k].append(_num(ev.get(k)))
                self.gauge_nse = [_num(v) for v in ev.get("gauge_nse", [])]
                self.gauge_kge = [_num(v) for v in ev.get("gauge_kge", [])]
                if ev.get("device_memory") is not None:
                    self.device_memory = _num(ev["device_memory"])
                for w in ev.get("worker_memory") or []:
                    self.worker_peak[str(w["worker"])] = _num(w["peak_bytes"])
            elif kind == "progress":
                it = int(ev.get("iteration", 0))
                if self.waves["iteration"] != it:
                    self.waves = {"iteration": it, "forward": None, "backward": None}
                self.waves[str(ev["phase"])] = [int(ev["wave"]), int(ev["waves"])]
            elif kind == "status":
                self.state = str(ev["state"])
            elif kind == "end":
                self.state = "stopped" if ev.get("reason") == "stopped" else "finished"
                self.iteration = int(ev.get("iteration", self.iteration))
            self.updated = time.time()

    def request(self, action: str) -> str:
        wanted = {"pause": "paused", "resume": "running", "stop": "stopped"}
        if action not in wanted:
            raise ValueError(f"unknown action {action!r}; use pause, resume or stop")
        with self.lock:
            if self.requested != "stopped":
                self.requested = wanted[action]
            return self.requested

    def snapshot(self, workers: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            workers = [{**w, "peak_bytes": self.worker_peak.get(w["address"])}
                       for w in workers]
            return {
                "run": self.run, "state": self.state, "requested": self.requested,
                "iteration": self.iteration, "total": self.total, "engine": self.engine,
                "series": {k: list(v) for k, v in self.series.items()},
                "gauges": {"ids": list(self.gauge_ids), "nse": list(self.gauge_nse),
                           "kge": list(self.gauge_kge)},
                "device_memory": self.device_memory, "workers": workers,
                "waves": dict(self.waves), "updated": self.updated,
            }


def _num(v: Any) -> float | None:
    """JSON-safe float (NaN/inf -> None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _gpu_workers(scheduler: Any) -> list[dict[str, Any]]:
    """GPU memory per worker from the NVML metrics distributed collects (empty without GPUs)."""
    out = []
    for addr, ws in list(scheduler.workers.items()):
        gpu = (ws.metrics or {}).get("gpu") or {}
        info = (ws.extra or {}).get("gpu") or {}
        out.append({"worker": ws.name if ws.name is not None else addr, "address": addr,
                    "memory_used": gpu.get("memory-used"),
                    "memory_total": info.get("memory-total"), "gpu": info.get("name")})
    return out


class _Handler(web.RequestHandler):
    def initialize(self, plugin: CalibrationDashboardPlugin) -> None:
        self.plugin = plugin


class _PageHandler(_Handler):
    def get(self) -> None:
        # the page carries the control token: never cached, never framed by another origin
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Content-Security-Policy", "frame-ancestors 'self'")
        self.write(self.plugin.render_page())


class _StateHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(self.plugin.state()))


class _Refused(Exception):
    """A control request refused with ``status`` and a plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DEFAULT_PORTS = {"http": 80, "https": 443}
_ACTION_EXAMPLE = '{"action": "pause"} (or "resume", "stop")'


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of ``url`` (default port filled in), None if it has none."""
    try:
        parts = urlsplit(url.strip())
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        return None
    if not scheme or not host or port is None:
        return None
    return scheme, host, port


class _ControlHandler(_Handler):
    """``POST {"action": ...}``: same origin, the run's token, JSON; anything else refused."""

    def post(self) -> None:
        try:
            self._check_origin()
            self._check_token()
            requested = self.plugin.board.request(self._action())
        except _Refused as refused:
            self._refuse(refused)
            return
        logger.info("dashboard requested %s", requested)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps({"requested": requested}))

    def _refuse(self, refused: _Refused) -> None:
        level = logging.WARNING if refused.status == 403 else logging.INFO
        logger.log(level, "calibration control request from %s refused (%d): %s",
                   self.request.remote_ip, refused.status, refused.message)
        self.set_status(refused.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.finish(refused.message + "\n")

    def _check_origin(self) -> None:
        own = f"{self.request.protocol}://{self.request.host}"
        for header in ("Origin", "Referer"):
            value = self.request.headers.get(header)
            if value is None:
                continue
            theirs = _origin(value)
            if theirs is None or theirs != _origin(own):
                raise _Refused(403, f"cross-origin request refused: {header} {value[:100]!r} "
                                    f"is not this page's origin {own}")
            return  # the Origin, when there is one, decides

    def _check_token(self) -> None:
        expected = self.plugin.token
        if expected is None:
            raise _Refused(403, "no calibration is attached to this page: nothing to control")
        given = self.request.headers.get(TOKEN_HEADER)
        if not given:
            raise _Refused(403, f"missing {TOKEN_HEADER} header: send the token of the "
                                "calibration page (reload the page)")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _Refused(403, f"wrong {TOKEN_HEADER}: the page may be from an earlier "
                                "calibration (reload the page)")

    def _action(self) -> str:
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise _Refused(415, f"send the action as JSON with Content-Type: application/json, "
                                f"got Content-Type {media or 'none'!r}: {_ACTION_EXAMPLE}")
        try:
            body = json.loads(self.request.body)
        except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
            raise _Refused(400, f"the body is not valid JSON ({type(err).__name__}); send "
                                f"{_ACTION_EXAMPLE}") from None
        if not isinstance(body, dict):
            raise _Refused(400, f"the body must be a JSON object, got a JSON "
                                f"{type(body).__name__}; send {_ACTION_EXAMPLE}")
        if "action" not in body:
            raise _Refused(400, f'the body has no "action"; send {_ACTION_EXAMPLE}')
        action = body["action"]
        if action not in ("pause", "resume", "stop"):
            raise _Refused(400, f"unknown action {json.dumps(action)[:40]}; send "
                                f"{_ACTION_EXAMPLE}")
        return action


class CalibrationDashboardPlugin(SchedulerPlugin):
    """Scheduler plugin serving the calibration page on the dashboard's port.

    Parameters
    ----------
    prefix : the dashboard's URL prefix (``dask scheduler --dashboard-prefix``), default ``/``.
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, prefix: str = "/") -> None:
        self.prefix = "/" + prefix.strip("/") + ("/" if prefix.strip("/") else "")
        self.scheduler: Any = None
        self.token: str | None = None  # the attached calibration's, see attach_dashboard

    async def start(self, scheduler: Any) -> None:
        self.board = _Board()  # made here: the plugin is pickled to reach the scheduler
        self.scheduler = scheduler
        scheduler.handlers[HANDLER] = self.handle
        app = getattr(scheduler, "http_application", None)
        if app is None:
            logger.warning("the scheduler serves no dashboard: the calibration page is off")
            return
        base = self.prefix + "calibration"
        app.add_handlers(r".*", [
            (base, _PageHandler, {"plugin": self}),
            (base + "/state.json", _StateHandler, {"plugin": self}),
            (base + "/control", _ControlHandler, {"plugin": self}),
        ])
        pages = self._template_variables().get("pages")
        if pages is not None and "calibration" not in pages:
            pages.append("calibration")
        logger.info("calibration page at %s on the dashboard", base)

    def _template_variables(self) -> dict[str, Any]:
        try:
            from distributed.dashboard.scheduler import template_variables
        except ImportError:  # no bokeh: the dashboard has no navigation to join
            return {"pages": ["calibration"], "plots": [], "jupyter": False}
        return template_variables(self.scheduler)

    # ------------------------------------------------------------------ data
    def handle(self, action: str, event: dict[str, Any] | None = None,
               token: str | None = None) -> dict[str, Any]:
        """Scheduler handler: ``action="attach"`` installs ``token``, the one the page embeds and
        its control requests must carry (each attach replaces the previous calibration's);
        ``action="event"`` records ``event``; every action returns the state the page requests
        (``running``, ``paused`` or ``stopped``)."""
        if action == "attach":
            if not isinstance(token, str) or len(token) < 32:
                raise ValueError("attach needs the calibration's token (a string of at least 32 "
                                 "characters, from secrets.token_urlsafe)")
            self.token = token
            logger.info("a calibration attached to the calibration page")
        elif action == "event" and event is not None:
            if event.get("kind") == "start":
                with self.board.lock:
                    self.board.requested = "running"
            self.board.event(event)
        elif action == "request":
            self.board.request(str((event or {}).get("action")))
        elif action not in ("event", "poll"):
            raise ValueError(f"unknown action {action!r}; use attach, event, poll or request")
        with self.board.lock:
            return {"requested": self.board.requested}

    def state(self) -> dict[str, Any]:
        """Everything the page shows (JSON-safe)."""
        return self.board.snapshot(_gpu_workers(self.scheduler))

    def render_page(self) -> str:
        """The page's HTML: :func:`_page` rendered inside the dashboard's ``base.html``."""
        import distributed.http
        from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader

        templates = FileSystemLoader(distributed.http.__path__[0] + "/templates")
        env = Environment(loader=ChoiceLoader([DictLoader({"calibration.html": _page()}),
                                               templates]), autoescape=True)
        tv = self._template_variables()
        return env.get_template("calibration.html").render(
            pages=tv.get("pages", []), plots=tv.get("plots", []),
            jupyter=tv.get("jupyter", False), prefix=self.prefix, token=self.token or "",
        )


class DashboardLink:
    """Forwards a calibrator's events to the dashboard and applies the page's requests.

    Created by :func:`attach_dashboard`; call :meth:`close` to stop polling (done at the end
    of the calibration).  ``token`` is the secret the page's control requests carry (in the
    ``X-Hydroscale-Token`` header); keep it to yourself, it is never logged.
    """

    def __init__(self, client: Any, control: CalibrationControl, interval: float = 0.25,
                 token: str | None = None):
        self.client = client
        self.control = control
        self.interval = float(interval)
        self.token = token
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Address of the calibration page."""
        return page_url(self.client)

    def _call(self, action: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client.sync(self.client.scheduler.hydroscale_calibration, action=action,
                                event=event)

    def _apply(self, reply: dict[str, Any]) -> None:
        want = reply.get("requested")
        if want == "stopped" and not self.control.stopped:
            self.control.stop()
        elif want == "paused" and not self.control.paused and not self.control.stopped:
            self.control.pause()
        elif want == "running" and self.control.paused:
            self.control.resume()

    def __call__(self, event: dict[str, Any]) -> None:
        """Listener: send ``event``, apply the reply."""
        self._apply(self._call("event", _jsonable(event)))
        if event["kind"] == "start":
            self._start_polling()
        elif event["kind"] == "end":
            self.close()

    def _start_polling(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def poll() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self._apply(self._call("poll"))
                except Exception:  # the scheduler went away: keep calibrating
                    logger.warning("calibration dashboard unreachable", exc_info=True)
                    return

        self._thread = threading.Thread(target=poll, name="hydroscale-dashboard-poll",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling the scheduler."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def page_url(client: Any) -> str:
    """Address of the calibration page on the dashboard of ``client``'s scheduler."""
    link = client.dashboard_link
    base = link.rsplit("/", 1)[0] if link.endswith("/status") else link.rstrip("/")
    return base + "/calibration"


def attach_dashboard(calibrator: Any, client: Any, *, prefix: str = "/",
                     interval: float = 0.25) -> DashboardLink:
    """Show ``calibrator`` on the dashboard of ``client``'s scheduler and let the page pause,
    resume and stop it.  Registers :class:`CalibrationDashboardPlugin` when the scheduler does
    not have it yet, and gives it a new secret token that the page embeds and its controls must
    send (a page opened for an earlier calibration can no longer steer this one).  Returns the
    link: ``link.url`` is the page's address, ``link.token`` the token, for a script that
    steers the page itself (header ``X-Hydroscale-Token``)."""
    have = client.run_on_scheduler(lambda dask_scheduler: PLUGIN_NAME in
                                   dask_scheduler.plugins)
    if not have:
        client.register_plugin(CalibrationDashboardPlugin(prefix))
    token = secrets.token_urlsafe(32)
    client.sync(client.scheduler.hydroscale_calibration, action="attach", token=token)
    link = DashboardLink(client, calibrator.control, interval, token=token)
    calibrator.add_listener(link)
    logger.info("calibration page: %s", link.url)
    return link


def _jsonable(ev: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in ev.items():
        if isinstance(v, (list, tuple)):
            out[k] = [_num(x) if isinstance(x, float) else x for x in v]
        elif isinstance(v, float):
            out[k] = _num(v)
        else:
            out[k] = v
    return out


@cache
def _page() -> str:
    """The calibration page's Jinja template (package data, read once)."""
    page = resources.files(__package__).joinpath("templates", "calibration.html")
    return page.read_text(encoding="utf-8")

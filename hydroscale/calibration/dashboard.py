"""The calibration page of the Dask dashboard, and the link between it and a calibration.

How it plugs in: :class:`CalibrationDashboardPlugin` is a scheduler plugin.  When it starts on
the scheduler it

- adds routes to the scheduler's HTTP application (the dashboard's tornado app, same port):
  ``/calibration`` (the page), ``/calibration/state.json`` (the light state the page polls:
  run state, iteration, waves and groups per worker, memory, timings, the action log),
  ``/calibration/update.json?sort=nse&desc=0&page=0`` (curves, one page of the per-gauge
  table, the map's points, parameter histograms, hydrographs: rebuilt at most once per
  iteration, see :mod:`~hydroscale.calibration._board`),
  ``/calibration/hydrograph.json?gauge=<reach id>`` (asks for a gauge's hydrograph) and
  ``/calibration/control`` (POST ``{"action": "pause"|"resume"|"stop"|"checkpoint"}`` or
  ``{"action": "lr", "lr": 0.01}``, see below);
- appends ``calibration`` to the dashboard's navigation (the ``pages`` list of
  ``distributed.dashboard.scheduler.template_variables``, shared by every dashboard page);
- registers a scheduler handler ``hydroscale_calibration`` through which a calibration running
  in a client sends its events and receives the page's pause/resume/stop requests.

The page (package data: ``templates/calibration.html``, a Jinja template) extends the
dashboard's own ``base.html`` template (same navigation bar and style) and embeds a Bokeh
layout (:mod:`~hydroscale.calibration._page`, drawn by the BokehJS the dashboard serves: no
CDN).  It shows the training and validation loss per iteration (log axis, hover), median and
minimum NSE and KGE for training and validation, a per-gauge table (paged, sorted on the
scheduler by NSE, KGE or volume bias), a map of the gauges coloured by NSE when the network
has ``lat``/``lon`` (NWM RouteLink), the hydrograph of a clicked gauge (observed, first guess,
current; the validation period shaded), parameter histograms now against the first guess with
the share at a bound, progress (iterations; for a
:class:`~hydroscale.calibration.DistributedCalibrator` the wave and the groups done per
worker), seconds per iteration and per-worker timings, and device memory per worker (NVML
when the workers have GPUs, otherwise the words "no GPU").  Steering: pause, resume, stop
after the current iteration (the workflow then writes its outputs), take a checkpoint now,
change the learning rate; each action is logged in the run's history
(:attr:`CalibrationLoop.actions <hydroscale.calibration.Calibrator.actions>`) and shown.

On the client side, :func:`attach_dashboard` registers the plugin if needed, forwards a
calibrator's events and applies the page's requests to its
:class:`~hydroscale.calibration.CalibrationControl` and its watched gauges (a background
thread polls every ``interval`` seconds).  It returns a :class:`DashboardLink` whose ``url``
is the page's address.

Who may steer: every attach makes a new secret token (``link.token``) and hands
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
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado import web

from ._board import SORT_KEYS, Board
from ._control import CalibrationControl

__all__ = ["CalibrationDashboardPlugin", "DashboardLink", "attach_dashboard", "page_url",
           "tunnel_hint", "PLUGIN_NAME", "TOKEN_HEADER"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "hydroscale-calibration"
HANDLER = "hydroscale_calibration"
TOKEN_HEADER = "X-Hydroscale-Token"
ACTIONS = ("pause", "resume", "stop", "checkpoint", "lr")


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


def _plain(handler: web.RequestHandler, status: int, message: str) -> None:
    handler.set_status(status)
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Cache-Control", "no-store")
    handler.finish(message + "\n")


class _UpdateHandler(_Handler):
    """The heavy view for one table query (``sort``, ``desc``, ``page``)."""

    def get(self) -> None:
        sort = self.get_query_argument("sort", "nse")
        if sort not in SORT_KEYS:
            _plain(self, 400, f"sort must be one of {', '.join(SORT_KEYS)}, got {sort[:40]!r}")
            return
        try:
            page = int(self.get_query_argument("page", "0"))
        except ValueError:
            _plain(self, 400, "page must be an integer")
            return
        desc = self.get_query_argument("desc", "0") in ("1", "true")
        _, body = self.plugin.board.update(sort, desc, page)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(body)


class _HydrographHandler(_Handler):
    """``?gauge=<reach id>``: what the board holds of that gauge (``{"pending": true}`` until
    the calibration sent it) and a request that the calibration send it."""

    def get(self) -> None:
        try:
            gauge = int(self.get_query_argument("gauge"))
            held = self.plugin.board.watch(gauge)
        except (ValueError, web.MissingArgumentError) as err:
            _plain(self, 400, f"{err}"[:200])
            return
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(held if held is not None else {"gauge": gauge,
                                                              "pending": True}))


class _Refused(Exception):
    """A control request refused with ``status`` and a plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_DEFAULT_PORTS = {"http": 80, "https": 443}
_ACTION_EXAMPLE = ('{"action": "pause"} (or "resume", "stop", "checkpoint"), or '
                   '{"action": "lr", "lr": 0.01}')


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
            action, body = self._action()
        except _Refused as refused:
            self._refuse(refused)
            return
        board = self.plugin.board
        if action in ("pause", "resume", "stop"):
            reply: dict[str, Any] = {"requested": board.request(action)}
            logger.info("dashboard requested %s", reply["requested"])
        else:
            cmd = {"action": action, **({"lr": body["lr"]} if action == "lr" else {})}
            board.command(cmd)
            logger.info("dashboard requested %s", cmd)
            reply = {"queued": cmd, "requested": board.requested}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(reply))

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

    def _action(self) -> tuple[str, dict[str, Any]]:
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
        if action not in ACTIONS:
            raise _Refused(400, f"unknown action {json.dumps(action)[:40]}; send "
                                f"{_ACTION_EXAMPLE}")
        if action == "lr":
            lr = body.get("lr")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) \
                    or not (math.isfinite(lr) and lr > 0):
                raise _Refused(400, f"the learning rate must be a number > 0, got "
                                    f"{json.dumps(lr)[:40]}; send {_ACTION_EXAMPLE}")
        return action, body


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
        self.board = Board()  # made here: the plugin is pickled to reach the scheduler
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
            (base + "/update.json", _UpdateHandler, {"plugin": self}),
            (base + "/hydrograph.json", _HydrographHandler, {"plugin": self}),
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
        ``action="event"`` records ``event``; every action returns what the link applies
        (:meth:`Board.take <hydroscale.calibration._board.Board.take>`: the state the page
        requests, ``running``, ``paused`` or ``stopped``; queued commands; gauges whose
        hydrographs the page asked for)."""
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
        return self.board.take()

    def state(self) -> dict[str, Any]:
        """The light state the page polls (JSON-safe)."""
        return self.board.status(_gpu_workers(self.scheduler))

    def render_page(self) -> str:
        """The page's HTML: :func:`_page` rendered inside the dashboard's ``base.html``."""
        import distributed.http
        from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader

        templates = FileSystemLoader(distributed.http.__path__[0] + "/templates")
        env = Environment(loader=ChoiceLoader([DictLoader({"calibration.html": _page()}),
                                               templates]), autoescape=True)
        from ._page import page_item

        tv = self._template_variables()
        meta = self.board.meta()
        return env.get_template("calibration.html").render(
            pages=tv.get("pages", []), plots=tv.get("plots", []),
            jupyter=tv.get("jupyter", False), prefix=self.prefix, token=self.token or "",
            run=meta["run"], item=json.dumps(page_item(meta)).replace("</", "<\\/"),
        )


class DashboardLink:
    """Forwards a calibrator's events to the dashboard and applies the page's requests.

    Created by :func:`attach_dashboard`; call :meth:`close` to stop polling (done at the end
    of the calibration).  ``token`` is the secret the page's control requests carry (in the
    ``X-Hydroscale-Token`` header); keep it to yourself, it is never logged.
    """

    def __init__(self, client: Any, control: CalibrationControl, interval: float = 0.25,
                 token: str | None = None, calibrator: Any = None):
        self.client = client
        self.control = control
        self.calibrator = calibrator
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
        for cmd in reply.get("commands") or []:
            try:
                if cmd.get("action") == "lr":
                    self.control.set_lr(cmd["lr"], source="page")
                elif cmd.get("action") == "checkpoint":
                    self.control.checkpoint(source="page")
            except (KeyError, TypeError, ValueError):
                logger.warning("calibration page command %r refused", cmd, exc_info=True)
        if self.calibrator is not None:
            for gauge in reply.get("watch") or []:
                try:
                    h = self.calibrator.watch(int(gauge))
                except ValueError:
                    logger.warning("the page asked for gauge %s, which this calibration "
                                   "does not have", gauge)
                    continue
                self._apply(self._call("event", _jsonable({"kind": "hydrograph", **h})))

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


def _local_names() -> set[str]:
    """Names and addresses of this machine (best effort)."""
    import socket

    names = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
    for name in (socket.gethostname(), socket.getfqdn()):
        names.add(name.lower())
        try:
            names.update(socket.gethostbyname_ex(name)[2])
        except OSError:
            pass
    return names


def tunnel_hint(url: str, local_names: set[str] | None = None) -> tuple[str, str] | None:
    """For a page ``url`` served by a scheduler on another host: ``(ssh command, URL to
    open here)``, the SSH tunnel that brings the dashboard's port to this machine, e.g.
    ``("ssh -N -L 8787:localhost:8787 node17", "http://localhost:8787/calibration")``.
    None when the scheduler runs here (``local_names``: this machine's names and addresses,
    found when None)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return None
    if host.startswith("127.") or host in (local_names if local_names is not None
                                           else _local_names()):
        return None
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    path = parts.path or "/"
    return (f"ssh -N -L {port}:localhost:{port} {host}",
            f"http://localhost:{port}{path}")


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
    link = DashboardLink(client, calibrator.control, interval, token=token,
                         calibrator=calibrator)
    calibrator.add_listener(link)
    logger.info("calibration page: %s", link.url)
    return link


def _jsonable(v: Any) -> Any:
    """``v`` with NaN/inf floats as None, numpy scalars as Python numbers (JSON-safe)."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return _num(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    return v


def _num(v: Any) -> float | None:
    """JSON-safe float (NaN/inf -> None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@cache
def _page() -> str:
    """The calibration page's Jinja template (package data, read once)."""
    page = resources.files(__package__).joinpath("templates", "calibration.html")
    return page.read_text(encoding="utf-8")

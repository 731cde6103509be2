"""The calibration page of the Dask dashboard: served on the dashboard's port and linked from
its navigation, fed by a running calibration, and able to pause, resume, stop it, change its
learning rate and take a checkpoint, over plain HTTP (the headless-Chromium test is in
test_dashboard_browser.py).
Its controls obey only same-origin requests that carry the run's token; anything else is
refused with a plain message and no traceback."""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from _cdp import wait_for

from hydroscale.calibration import Calibrator, GaugeObservations
from hydroscale.calibration.dashboard import attach_dashboard
from hydroscale.models import FreeParameters
from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle

distributed = pytest.importorskip("distributed")

TOKEN_HEADER = "X-Hydroscale-Token"  # what the page's buttons send the run's token in


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _base(client) -> str:
    return f"http://127.0.0.1:{client.scheduler_info()['services']['dashboard']}/"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _request(url: str, body: bytes | None = None, method: str = "POST",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """``(status, headers, body)`` of one request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()


def _control(base: str, token: str, action: str) -> dict:
    """What the page's buttons send: JSON and the token, from the page's origin."""
    status, _, text = _request(base + "calibration/control", json.dumps({"action": action})
                               .encode(), headers={"Content-Type": "application/json",
                                                   TOKEN_HEADER: token,
                                                   "Origin": base.rstrip("/")})
    assert status == 200, text
    return json.loads(text)


def _requested(base: str) -> str:
    return json.loads(_get(base + "calibration/state.json"))["requested"]


def _calibrator(**options) -> Calibrator:
    net = continental_forest(200, seed=8)
    rng = np.random.default_rng(3)
    true = np.stack([rng.uniform(0.5, 2.0, 200), rng.uniform(0.05, 0.3, 200)], -1)
    runoff = rng.uniform(0.0, 1.0, (200, 30))
    q = route_oracle(net, runoff, "muskingum", true, allow_unstable=True).numpy()
    gauges = net.outlets[:4]
    obs = GaugeObservations(net.ids[gauges], q[gauges])
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
    return Calibrator(net, runoff, obs, model, engine="levels",
                      engine_options={"window": "auto"}, lr=0.01, allow_unstable=True,
                      **options)


def _update(base: str, query: str = "") -> dict:
    return json.loads(_get(base + "calibration/update.json" + query))


def _post(base: str, token: str, body: dict) -> dict:
    status, _, text = _request(base + "calibration/control", json.dumps(body).encode(),
                               headers={"Content-Type": "application/json",
                                        TOKEN_HEADER: token, "Origin": base.rstrip("/")})
    assert status == 200, text
    return json.loads(text)


def test_page_state_and_control_over_http(client, tmp_path):
    cal = _calibrator(checkpoint_dir=tmp_path / "ck")
    link = attach_dashboard(cal, client, interval=0.05)
    assert link.url.endswith("/calibration")
    base = _base(client)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    try:
        wait_for(lambda: cal.iteration >= 2, "two iterations")
        # the page state is published every `interval`: wait until it shows both iterations
        wait_for(lambda: json.loads(_get(base + "calibration/state.json"))["iteration"] >= 2,
              "the page to show two iterations")
        state = json.loads(_get(base + "calibration/state.json"))
        assert state["state"] == "running" and state["engine"] == "levels"
        assert state["lr"] == 0.01 and state["n_gauges"] == len(cal.observations)
        assert len(state["workers"]) == 1  # one worker; no GPU here, so no NVML figures
        up = _update(base)
        n = len(up["series"]["loss"])
        assert n >= 2 and up["series"]["iteration"] == list(range(1, n + 1))
        np.testing.assert_allclose(up["series"]["loss"], cal.history["loss"][:n], rtol=1e-12)
        assert sorted(up["table"]["rows"]["id"]) == sorted(cal.observations.ids.tolist())
        assert "map" not in up  # the synthetic network has no coordinates: the table only
        assert up["params"]["names"] == ["k", "x"] and up["params"]["n"] == 200
        page = _get(base + "calibration")
        assert 'id="hs-stop"' in page and 'href="calibration"' in page
        assert "static/js/bokeh.min.js" in page and "hs-layout" in page  # no CDN
        # the dashboard's own pages link to it
        assert 'href="calibration"' in _get(base + "status")
        assert _request(base + "calibration/control", b'{"action": "explode"}',
                        headers={"Content-Type": "application/json",
                                 TOKEN_HEADER: link.token})[0] == 400
        # a gauge's hydrograph: asked for, then sent by the calibration
        gauge = int(cal.observations.ids[1])
        first = json.loads(_get(base + f"calibration/hydrograph.json?gauge={gauge}"))
        assert first == {"gauge": gauge, "pending": True}
        h = wait_for(lambda: (lambda x: x if x.get("current") else None)(json.loads(
            _get(base + f"calibration/hydrograph.json?gauge={gauge}"))), "the hydrograph")
        np.testing.assert_allclose(h["observed"]["value"], cal.observations.values[1])
        np.testing.assert_allclose(h["first"]["value"], cal.first_guess[1], rtol=1e-6)
        assert len(h["current"]["value"]) == cal.observations.n_steps
        # steering: a new learning rate and a checkpoint now, both logged as actions
        assert _post(base, link.token, {"action": "lr", "lr": 0.002})["queued"] == {
            "action": "lr", "lr": 0.002}
        assert _post(base, link.token, {"action": "checkpoint"})["queued"] == {
            "action": "checkpoint"}
        wait_for(lambda: len(cal.actions) >= 2, "the two actions")
        lr_act, ck_act = cal.actions[:2]
        assert (lr_act["action"], lr_act["lr_from"], lr_act["lr_to"]) == ("lr", 0.01, 0.002)
        assert lr_act["source"] == "page"
        assert ck_act["action"] == "checkpoint"
        assert ck_act["path"].endswith(f"calibration-{ck_act['iteration']:08d}.pt")
        wait_for(lambda: cal.iteration >= lr_act["iteration"] + 2, "two more iterations")
        lrs = list(cal.history["lr"])  # the rate of each iteration's step
        assert set(lrs[:lr_act["iteration"]]) == {0.01}
        assert set(lrs[lr_act["iteration"]:]) == {0.002}
        assert cal.optimizer.param_groups[0]["lr"] == 0.002
        status = _refusal(*_request(base + "calibration/control",
                                    b'{"action": "lr", "lr": -1}',
                                    headers={"Content-Type": "application/json",
                                             TOKEN_HEADER: link.token}), expected=400)
        assert "learning rate must be a number > 0" in status
        wait_for(lambda: len(json.loads(_get(base + "calibration/state.json"))["actions"]) >= 2,
              "the page to show the actions")
        assert _control(base, link.token, "pause") == {"requested": "paused"}
        wait_for(lambda: cal.control.paused, "the pause to reach the calibrator")
        assert _control(base, link.token, "resume") == {"requested": "running"}
        wait_for(lambda: not cal.control.paused, "the resume")
        assert _control(base, link.token, "stop") == {"requested": "stopped"}
        run.join(timeout=60)
        assert not run.is_alive() and cal.control.stopped and cal.end_reason == "stopped"
        assert [a["action"] for a in cal.actions][-3:] == ["pause", "resume", "stop"]
        wait_for(lambda: json.loads(_get(base + "calibration/state.json"))["state"] == "stopped",
              "the page to show the stop")
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()


def test_page_follows_a_distributed_calibration(client):
    """A DistributedCalibrator on the same page: wave progress of the running iteration, the
    groups done per worker and the peak memory of every worker (0: CPU workers); the stop
    request stops it."""
    from hydroscale.calibration import DistributedCalibrator

    cal0 = _calibrator()
    model = FreeParameters("muskingum", cal0.network, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
    cal = DistributedCalibrator(client, cal0.network, cal0.runoff[0].numpy(), cal0.observations,
                                model, max_reaches=40, window="auto", lr=0.01,
                                allow_unstable=True)
    n_waves = cal.engine.plan.n_waves
    n_groups = cal.engine.plan.n_groups
    assert n_waves >= 2
    link = attach_dashboard(cal, client, interval=0.05)
    base = _base(client)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    try:
        state = wait_for(lambda: (lambda s: s if s["engine"] == "distributed"
                               and s["iteration"] >= 2 else None)(
            json.loads(_get(base + "calibration/state.json"))), "two distributed iterations")
        assert state["engine"] == "distributed" and state["state"] == "running"
        waves = state["waves"]
        assert waves["iteration"] >= 2 and waves["forward"][1] == n_waves
        (worker,) = state["workers"]
        assert worker["peak_bytes"] == 0 and worker["gpu"] is None
        assert worker["groups"]["forward"][1] == n_groups  # one worker holds every group
        assert {"forward", "backward", "update"} <= set(worker["timers"])
        assert _control(base, link.token, "stop") == {"requested": "stopped"}
        run.join(timeout=60)
        assert not run.is_alive() and cal.control.stopped
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()
        cal.close()


# ---------------------------------------------------------------- who may steer a calibration
EVIL = "http://evil.example"
STOP = b'{"action": "stop"}'


@pytest.fixture
def logs(caplog):
    """Every record at INFO and above, tornado's and distributed's included (they do not
    propagate to the root logger, where caplog listens)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="hydroscale")
    own = [logging.getLogger(n) for n in ("tornado", "tornado.application", "distributed")]
    for logger in own:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in own:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def running(client, logs):
    """A calibration attached to the page and iterating: ``(calibrator, link, base URL)``."""
    cal = _calibrator()
    link = attach_dashboard(cal, client, interval=0.05)
    base = _base(client)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    try:
        wait_for(lambda: cal.iteration >= 1 and _requested(base) == "running",
              "the calibration to start")
        yield cal, link, base
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()


def _assert_unchanged(cal, base: str) -> None:
    """The page still requests ``running`` and the loop goes on: nothing was applied."""
    assert _requested(base) == "running"
    held = cal.iteration
    # the link applies the page's request at every iteration: two more iterations later the
    # calibrator would be paused or stopped had anything been requested
    wait_for(lambda: cal.iteration >= held + 2, "two more iterations")
    assert cal.control.state == "running"


def _assert_no_traceback(logs) -> None:
    for record in logs.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
    assert "Traceback" not in logs.text


def _refusal(status: int, headers: dict[str, str], text: str, expected: int = 403) -> str:
    assert status == expected, text
    assert headers["content-type"].startswith("text/plain")
    assert not any(k.startswith("access-control-") for k in headers)  # no CORS, ever
    assert 0 < len(text) < 300
    return text


@pytest.mark.parametrize("case", ["origin, no token", "origin and token", "referer and token",
                                  "simple form"])
def test_cross_origin_control_is_refused(running, logs, case):
    cal, link, base = running
    body, headers = STOP, {"Content-Type": "application/json", "Origin": EVIL}
    if case == "referer and token":
        headers = {"Content-Type": "application/json", "Referer": EVIL + "/page"}
    if case == "simple form":  # what a cross-site <form> can send: no custom header
        body, headers["Content-Type"] = b"action=stop", "application/x-www-form-urlencoded"
    if "token" in case and "no token" not in case:
        headers[TOKEN_HEADER] = link.token
    text = _refusal(*_request(base + "calibration/control", body, headers=headers))
    assert "cross-origin request refused" in text and "evil.example" in text
    # the CORS preflight a cross-origin script would need is not answered either
    _, pre, _ = _request(base + "calibration/control", method="OPTIONS",
                         headers={"Origin": EVIL, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": TOKEN_HEADER})
    assert "access-control-allow-origin" not in pre
    _assert_unchanged(cal, base)
    assert link.token not in logs.text
    _assert_no_traceback(logs)


@pytest.mark.parametrize("case", ["no token", "wrong token", "token in a form field"])
def test_same_origin_control_needs_the_token(running, logs, case):
    cal, link, base = running
    body, headers = STOP, {"Content-Type": "application/json", "Origin": base.rstrip("/")}
    if case == "wrong token":
        headers[TOKEN_HEADER] = link.token[::-1]
    if case == "token in a form field":
        body = f"action=stop&token={link.token}".encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    text = _refusal(*_request(base + "calibration/control", body, headers=headers))
    assert TOKEN_HEADER in text
    _assert_unchanged(cal, base)
    assert link.token not in logs.text
    _assert_no_traceback(logs)


def test_same_origin_control_with_the_page_token(running, logs):
    """The page embeds this run's token (and nothing else shows it: not the state, not the
    logs); with it, a same-origin request pauses, resumes and stops the calibration."""
    cal, link, base = running
    embedded = re.search(r'data-token="([^"]*)"', _get(base + "calibration")).group(1)
    assert len(link.token) >= 32 and embedded == link.token
    assert link.token not in _get(base + "calibration/state.json")
    assert _control(base, embedded, "pause") == {"requested": "paused"}
    wait_for(lambda: cal.control.paused, "the pause to reach the calibrator")
    assert _control(base, embedded, "resume") == {"requested": "running"}
    wait_for(lambda: not cal.control.paused, "the resume")
    assert _control(base, embedded, "stop") == {"requested": "stopped"}
    wait_for(lambda: cal.control.stopped, "the stop")
    assert link.token not in logs.text
    _assert_no_traceback(logs)


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"\xff\xfe\xfd", "application/json", 400, "not valid JSON"),
    (b"[" * 100_000, "application/json", 400, "not valid JSON"),
    (b'["stop"]', "application/json", 400, "must be a JSON object, got a JSON list"),
    (b"{}", "application/json", 400, 'no "action"'),
    (b'{"action": "explode"}', "application/json", 400, 'unknown action "explode"'),
    (b'{"action": "stop"}', "text/plain", 415, "Content-Type: application/json"),
], ids=["bad JSON", "not UTF-8", "deep nesting", "not an object", "no action",
        "unknown action", "not JSON"])
def test_malformed_control_request_is_a_plain_error(running, logs, body, content_type,
                                                    status, message):
    cal, link, base = running
    text = _refusal(*_request(base + "calibration/control", body,
                              headers={"Content-Type": content_type,
                                       TOKEN_HEADER: link.token}), expected=status)
    assert message in text
    _assert_unchanged(cal, base)
    _assert_no_traceback(logs)

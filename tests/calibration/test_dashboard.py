"""The calibration page of the Dask dashboard: served on the dashboard's port and linked from
its navigation, fed by a running calibration, and able to pause, resume and stop it; once over
plain HTTP, once in headless Chromium (skipped, with the reason, when no Chromium is found)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from _cdp import Chromium, find_chromium

from hydroscale.calibration import Calibrator, GaugeObservations
from hydroscale.calibration.dashboard import attach_dashboard
from hydroscale.models import FreeParameters
from hydroscale.network import continental_forest
from hydroscale.routing import route_oracle

distributed = pytest.importorskip("distributed")


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


def _post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _calibrator() -> Calibrator:
    net = continental_forest(200, seed=8)
    rng = np.random.default_rng(3)
    true = np.stack([rng.uniform(0.5, 2.0, 200), rng.uniform(0.05, 0.3, 200)], -1)
    runoff = rng.uniform(0.0, 1.0, (200, 30))
    q = route_oracle(net, runoff, "muskingum", true, allow_unstable=True).numpy()
    gauges = net.outlets[:4]
    obs = GaugeObservations(net.ids[gauges], q[gauges])
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
    return Calibrator(net, runoff, obs, model, engine="levels", engine_options={"window": 8},
                      lr=0.01, allow_unstable=True)


def _wait(cond, what: str, timeout: float = 60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout} s for {what}")


def test_page_state_and_control_over_http(client):
    cal = _calibrator()
    link = attach_dashboard(cal, client, interval=0.05)
    assert link.url.endswith("/calibration")
    base = _base(client)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    try:
        _wait(lambda: cal.iteration >= 2, "two iterations")
        # the page state is published every `interval`: wait until it shows both iterations
        _wait(lambda: json.loads(_get(base + "calibration/state.json"))["iteration"] >= 2,
              "the page to show two iterations")
        state = json.loads(_get(base + "calibration/state.json"))
        assert state["state"] == "running" and state["engine"] == "levels"
        assert len(state["series"]["loss"]) >= 2
        assert sorted(state["gauges"]["ids"]) == sorted(cal.observations.ids.tolist())
        assert len(state["workers"]) == 1  # one worker; no GPU here, so no NVML figures
        page = _get(base + "calibration")
        assert 'id="hs-stop"' in page and 'href="calibration"' in page
        # the dashboard's own pages link to it
        assert 'href="calibration"' in _get(base + "status")
        with pytest.raises(urllib.error.HTTPError, match="400"):
            _post(base + "calibration/control", b"action=explode")
        assert _post(base + "calibration/control", b"action=pause") == {"requested": "paused"}
        _wait(lambda: cal.control.paused, "the pause to reach the calibrator")
        assert _post(base + "calibration/control", b"action=resume") == {"requested": "running"}
        _wait(lambda: not cal.control.paused, "the resume")
        assert _post(base + "calibration/control", b"action=stop") == {"requested": "stopped"}
        run.join(timeout=60)
        assert not run.is_alive() and cal.control.stopped
        _wait(lambda: json.loads(_get(base + "calibration/state.json"))["state"] == "stopped",
              "the page to show the stop")
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()


def test_page_in_headless_chromium(client, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set HYDROSCALE_CHROMIUM)")
    cal = _calibrator()
    link = attach_dashboard(cal, client, interval=0.05)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    browser = None
    try:
        browser = Chromium(binary, str(tmp_path / "profile"))
        _wait(lambda: cal.iteration >= 1, "the first iteration")
        browser.navigate(_base(client) + "calibration")
        # it renders: the dashboard's navigation with our page, our controls and plots
        browser.wait_for("document.body && document.body.getAttribute('data-hs-updates') >= 1")
        assert browser.eval("!!document.querySelector(\"a[href='calibration']\")")
        assert browser.eval("!!document.querySelector(\"a[href='status']\")")
        assert browser.wait_for("document.getElementById('hs-state').textContent") == "running"
        # it updates while the calibration runs
        first = int(browser.eval("document.getElementById('hs-iteration').textContent"))
        browser.wait_for(f"+document.getElementById('hs-iteration').textContent > {first}")
        browser.wait_for("document.querySelectorAll('#hs-loss-plot polyline').length == 1")
        n_rows = browser.wait_for("document.querySelectorAll('#hs-gauges tbody tr').length")
        assert n_rows == len(cal.observations)
        # pause and resume from the page
        browser.eval("document.getElementById('hs-pause').click()")
        browser.wait_for("document.getElementById('hs-state').textContent == 'paused'")
        assert cal.control.paused
        held = cal.iteration
        browser.wait_for("document.getElementById('hs-requested').textContent == 'paused'")
        assert cal.iteration == held  # the loop is blocked while paused
        browser.eval("document.getElementById('hs-resume').click()")
        browser.wait_for("document.getElementById('hs-state').textContent == 'running'")
        browser.wait_for(f"+document.getElementById('hs-iteration').textContent > {held}")
        # the stop button stops it
        browser.eval("document.getElementById('hs-stop').click()")
        run.join(timeout=60)
        assert not run.is_alive() and cal.control.stopped
        browser.wait_for("document.getElementById('hs-state').textContent == 'stopped'")
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()
        if browser is not None:
            browser.close()


def test_page_follows_a_distributed_calibration(client):
    """A DistributedCalibrator on the same page: wave progress of the running iteration and
    the peak memory of every worker (0: CPU workers); the stop request stops it."""
    from hydroscale.calibration import DistributedCalibrator

    cal0 = _calibrator()
    model = FreeParameters("muskingum", cal0.network, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)})
    cal = DistributedCalibrator(client, cal0.network, cal0.runoff[0].numpy(), cal0.observations,
                                model, max_reaches=40, window=8, lr=0.01, allow_unstable=True)
    n_waves = cal.engine.plan.n_waves
    assert n_waves >= 2
    link = attach_dashboard(cal, client, interval=0.05)
    base = _base(client)
    run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
    run.start()
    try:
        state = _wait(lambda: (lambda s: s if s["engine"] == "distributed"
                               and s["iteration"] >= 2 else None)(
            json.loads(_get(base + "calibration/state.json"))), "two distributed iterations")
        assert state["engine"] == "distributed" and state["state"] == "running"
        waves = state["waves"]
        assert waves["iteration"] >= 2 and waves["forward"][1] == n_waves
        assert [w["peak_bytes"] for w in state["workers"]] == [0]
        assert _post(base + "calibration/control", b"action=stop") == {"requested": "stopped"}
        run.join(timeout=60)
        assert not run.is_alive() and cal.control.stopped
    finally:
        cal.control.stop()
        run.join(timeout=60)
        link.close()
        cal.close()

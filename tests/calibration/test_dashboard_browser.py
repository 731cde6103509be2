"""The calibration page in headless Chromium, driving a 2-worker CPU calibration: every panel
renders, the curves gain a point per iteration, a click on a gauge shows its hydrograph, a new
learning rate changes the next step (checked against plain SGD, ``raw -= lr * grad``, and in
the history), a cross-origin POST is refused, and pause/resume/stop work from the page.
Skipped, with the reason, only when no Chromium binary is found (.ci/run installs one)."""

from __future__ import annotations

import copy
import logging
import threading

import numpy as np
import pytest
import torch
from _cdp import Chromium, find_chromium, wait_for

from hydroscale.calibration import DistributedCalibrator, GaugeObservations
from hydroscale.calibration.dashboard import attach_dashboard
from hydroscale.models import FreeParameters
from hydroscale.network import RiverNetwork, continental_forest
from hydroscale.routing import route_oracle

distributed = pytest.importorskip("distributed")

N, T, SPLIT = 300, 40, 30

# every element matching a selector, shadow roots included (Bokeh 3 renders in them)
DEEP = """function hsDeep(sel, root) { root = root || document;
  var out = Array.from(root.querySelectorAll(sel));
  root.querySelectorAll('*').forEach(function (e) {
    if (e.shadowRoot) { out = out.concat(hsDeep(sel, e.shadowRoot)); } });
  return out; }"""


def _problem():
    """A twin on a 300-reach forest with coordinates (the map panel), 6 gauges, a training
    and a validation period; SGD so that a step is ``raw -= lr * grad`` exactly."""
    base = continental_forest(N, seed=8)
    rng = np.random.default_rng(3)
    net = RiverNetwork(base.ids, base.downstream, {"lat": rng.uniform(30.0, 31.0, N),
                                                   "lon": rng.uniform(-98.0, -97.0, N)})
    true = np.stack([rng.uniform(0.5, 2.0, N), rng.uniform(0.05, 0.3, N)], -1)
    runoff = rng.uniform(0.0, 1.0, (N, T))
    q = route_oracle(net, runoff, "muskingum", true, allow_unstable=True).numpy()
    up = np.bincount(net.downstream[net.downstream >= 0], minlength=N)
    gauges = np.argsort(-up, kind="stable")[:6]
    obs = GaugeObservations(net.ids[gauges], q[gauges])
    model = FreeParameters("muskingum", net, bounds={"k": (0.2, 3.0), "x": (0.0, 0.45)},
                           dtype=torch.float64)  # float64 steps: the SGD oracle to 1e-9
    return net, runoff, obs, model


def _click(browser: Chromium, js_element: str) -> None:
    """A real mouse click at the centre of the element ``js_element`` evaluates to."""
    box = browser.eval(f"(function () {{ {DEEP}; var e = {js_element}; e.scrollIntoView();"
                       " var r = e.getBoundingClientRect();"
                       " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                     button="left", clickCount=1)


def test_page_drives_a_two_worker_calibration(tmp_path, caplog):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set HYDROSCALE_CHROMIUM)")
    caplog.set_level(logging.INFO, logger="hydroscale")
    net, runoff, obs, model = _problem()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        cal = DistributedCalibrator(client, net, runoff, obs, model, max_reaches=60,
                                    window="auto", optimizer="sgd", lr=0.01,
                                    allow_unstable=True, train=slice(0, SPLIT),
                                    validation=slice(SPLIT, T), warmup=3)
        # the oracle of every step: after iteration i, the parameters and the gradient there
        # (plain SGD: step i + 1 is raw_{i+1} = raw_i - lr_{i+1} * grad_i)
        steps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        mirror = copy.deepcopy(model)

        def record(ev):
            if ev["kind"] == "iteration":
                raw = cal.engine.update_model(mirror).raw.detach().numpy().copy()
                steps[ev["iteration"]] = (raw, cal.engine.gradient()["model"]["raw"].numpy())

        link = attach_dashboard(cal, client, interval=0.05)
        cal.add_listener(record)
        port = client.scheduler_info()["services"]["dashboard"]
        base = f"http://127.0.0.1:{port}/"
        run = threading.Thread(target=cal.run, args=(10**6,), daemon=True)
        run.start()
        browser = None
        try:
            browser = Chromium(binary, str(tmp_path / "profile"))
            browser.send("Emulation.setDeviceMetricsOverride", width=1400, height=1800,
                         deviceScaleFactor=1, mobile=False)
            wait_for(lambda: cal.iteration >= 1, "the first iteration")
            browser.navigate(base + "calibration")
            browser.wait_for("document.body && document.body.getAttribute('data-hs-updates')"
                             " >= 1")
            # every panel renders: the dashboard's navigation, status, workers, actions and
            # the Bokeh figures (loss, skill, map, hydrograph, 2 parameters, seconds), table
            assert browser.eval("!!document.querySelector(\"a[href='calibration']\")")
            assert browser.eval("!!document.querySelector(\"a[href='status']\")")
            assert browser.wait_for("document.getElementById('hs-state').textContent") == \
                "running"
            figs = ["hs-loss-fig", "hs-skill-fig", "hs-map-fig", "hs-hydro-fig",
                    "hs-param-fig-0", "hs-param-fig-1", "hs-seconds-fig", "hs-table-view"]
            assert browser.eval("JSON.stringify(%s.map(function (n) { return !!hsModel(n); }))"
                                % figs) == "[" + ",".join(["true"] * len(figs)) + "]"
            assert browser.wait_for(f"(function () {{ {DEEP}; return "
                                    "hsDeep('canvas').length; })()") >= 7
            rows = browser.wait_for(f"(function () {{ {DEEP}; return "
                                    "hsDeep('.slick-row').length; })()")
            assert rows == len(obs)
            assert browser.eval("document.querySelectorAll('#hs-workers tbody tr').length") == 2
            assert "no GPU" in browser.eval("document.getElementById('hs-workers').textContent")
            assert browser.eval("hsModel('hs-map').data.id.length") == len(obs)
            assert browser.eval("hsModel('hs-param-0').data.now.reduce("
                                "function (a, b) { return a + b; }, 0)") == N
            # the curves gain a point per iteration: each update holds every iteration so far
            for _ in range(2):
                n = browser.eval("hsModel('hs-series').data.iteration.length")
                browser.wait_for(f"hsModel('hs-series').data.iteration.length > {n}")
                got = browser.eval("JSON.stringify([hsModel('hs-series').data.iteration, "
                                   "hsModel('hs-series').data.loss])")
                its, losses = _json(got)
                assert its == list(range(1, len(its) + 1))
                np.testing.assert_allclose(losses, cal.history["loss"][:len(its)], rtol=1e-12)
            # the table's cells show the latest values (a replaced source must be redrawn)
            assert browser.wait_for(f"(function () {{ {DEEP}; var c = hsDeep('.slick-row')[0]"
                                    ".querySelectorAll('.slick-cell'), d = hsModel('hs-table')"
                                    ".data; return hsUpdates >= 3 && c[0].textContent == "
                                    "String(d.id[0]) && c[1].textContent == d.nse[0].toFixed(3)"
                                    "; })()")
            # clicking a gauge (the table's first row) shows its hydrograph
            _click(browser, "hsDeep('.slick-row')[0].querySelector('.slick-cell')")
            gauge = browser.wait_for("hsSelected")
            assert gauge == browser.eval("hsModel('hs-table').data.id[0]")
            browser.wait_for("hsModel('hs-hydro-cur').data.value.length > 0")
            k = int(np.flatnonzero(obs.ids == gauge)[0])
            observed = _json(browser.eval("JSON.stringify(hsModel('hs-hydro-obs').data.value)"))
            np.testing.assert_allclose(observed, obs.values[k])
            first = _json(browser.eval("JSON.stringify(hsModel('hs-hydro-first').data.value)"))
            np.testing.assert_allclose(first, cal.first_guess[k], rtol=1e-6)
            assert browser.eval("[hsModel('hs-hydro-val').left, hsModel('hs-hydro-val').right]"
                                ) == [SPLIT, T]
            # a new learning rate from the page changes the very next step
            browser.eval("document.getElementById('hs-lr-input').value = '0.25'")
            browser.eval("document.getElementById('hs-lr-set').click()")
            act = wait_for(lambda: next((a for a in cal.actions if a["action"] == "lr"), None),
                        "the learning-rate action")
            assert (act["lr_from"], act["lr_to"], act["source"]) == (0.01, 0.25, "page")
            at = act["iteration"]
            wait_for(lambda: cal.iteration >= at + 2 and at + 1 in steps, "two more iterations")
            browser.wait_for("document.getElementById('hs-actions').textContent"
                             ".indexOf('0.25') >= 0")
            browser.wait_for("document.getElementById('hs-lr').textContent == '0.25'")
            lrs = list(cal.history["lr"])
            assert lrs[:at] == [0.01] * at and set(lrs[at:]) == {0.25}
            for i in sorted(steps)[:-1]:
                if i + 1 not in steps:
                    continue
                (raw0, grad), (raw1, _) = steps[i], steps[i + 1]
                np.testing.assert_allclose(raw1, raw0 - lrs[i] * grad, rtol=1e-9, atol=1e-12)
            (raw0, grad), (raw1, _) = steps[at], steps[at + 1]
            assert not np.allclose(raw1, raw0 - 0.01 * grad)  # the old rate would not do
            assert cal.engine.runtime.call("lr") == [[0.25], [0.25]]  # both workers
            # a cross-origin POST is refused: a "simple" one reaches the server (403, logged),
            # one with the token header needs a CORS preflight, which is never answered
            other = f"http://localhost:{port}/calibration/control"
            browser.eval(f"fetch('{other}', {{method: 'POST', mode: 'no-cors', body: "
                         "'{\"action\": \"stop\"}', headers: {'Content-Type': 'text/plain'}})"
                         ".then(function () { window.hsSimple = 'sent'; })")
            browser.wait_for("window.hsSimple")
            wait_for(lambda: "cross-origin request refused" in caplog.text, "the refusal")
            browser.eval(f"fetch('{other}', {{method: 'POST', body: JSON.stringify({{action: "
                         "'stop'}), headers: {'Content-Type': 'application/json', "
                         "'X-Hydroscale-Token': hsToken}}).then(function () { "
                         "window.hsCors = 'answered'; }, function (e) { "
                         "window.hsCors = 'failed: ' + e; })")
            assert browser.wait_for("window.hsCors").startswith("failed")
            held = cal.iteration
            wait_for(lambda: cal.iteration >= held + 2, "two more iterations")
            assert cal.control.state == "running"
            # pause, resume and stop from the page
            browser.eval("document.getElementById('hs-pause').click()")
            browser.wait_for("document.getElementById('hs-state').textContent == 'paused'")
            held = cal.iteration
            assert cal.control.paused and cal.iteration == held
            browser.eval("document.getElementById('hs-resume').click()")
            browser.wait_for(f"+document.getElementById('hs-iteration').textContent > {held}")
            browser.eval("document.getElementById('hs-stop').click()")
            run.join(timeout=60)
            assert not run.is_alive() and cal.end_reason == "stopped"
            browser.wait_for("document.getElementById('hs-state').textContent == 'stopped'")
            assert [a["action"] for a in cal.actions] == ["lr", "pause", "resume", "stop"]
        finally:
            cal.control.stop()
            run.join(timeout=60)
            link.close()
            cal.close()
            if browser is not None:
                browser.close()


def _json(text: str):
    import json

    return json.loads(text)

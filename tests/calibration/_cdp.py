"""A minimal headless-Chromium driver over the Chrome DevTools protocol (tornado websocket).

Enough to open a page, evaluate JavaScript and wait for conditions; no dependency beyond
tornado (already required by distributed) and a ``chromium`` binary.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from typing import Any

from tornado.websocket import websocket_connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$HYDROSCALE_CHROMIUM`` first), or None."""
    env = os.environ.get("HYDROSCALE_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """Headless Chromium with one page, driven through CDP."""

    def __init__(self, binary: str, profile_dir: str) -> None:
        self.ws = None
        self.loop = None
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-dev-shm-usage",
             "--disable-extensions", "--no-first-run", "--remote-debugging-port=0",
             f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self.loop = asyncio.new_event_loop()

        async def connect() -> Any:
            return await websocket_connect(self.ws_url, max_message_size=1 << 26)

        self.ws = self.loop.run_until_complete(connect())
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; returns its ``result``."""
        self._id += 1
        msg_id = self._id

        async def go() -> dict[str, Any]:
            await self.ws.write_message(json.dumps({"id": msg_id, "method": method,
                                                    "params": params}))
            while True:
                raw = await self.ws.read_message()
                if raw is None:
                    raise RuntimeError("the DevTools connection closed")
                msg = json.loads(raw)
                if msg.get("id") == msg_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]

        return self.loop.run_until_complete(asyncio.wait_for(go(), 60))

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def eval(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll until the expression is truthy; returns its value (error after ``timeout``)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError:
                value = None  # page still loading
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s (last {value!r})")

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            if self.loop is not None:
                self.loop.close()


def wait_for(cond, what: str, timeout: float = 60.0):
    """Poll ``cond()`` every 50 ms until it returns something truthy (returned); TimeoutError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout} s for {what}")

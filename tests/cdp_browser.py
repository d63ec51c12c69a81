"""Headless Chromium driven over the Chrome DevTools Protocol (websocket), for page tests.

No selenium or playwright: Debian's ``chromium`` is started with ``--remote-debugging-port=0``, the port is read
from ``DevToolsActivePort`` in its throw-away profile, and one page target is driven with the ``websockets``
package (installed with uvicorn[standard]). Console errors are collected from ``Runtime.consoleAPICalled``,
``Runtime.exceptionThrown`` and ``Log.entryAdded``. The browser runs in its own process group, which is killed
on exit, so no process is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Self

from websockets.sync.client import connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-port=0"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("chromium is not installed: `make chromium` installs it (apt-get install -y chromium)")


class Browser:
    """``with Browser(profile_dir) as b: b.open(url); b.evaluate(js); b.screenshot(path)``."""

    def __init__(self, profile_dir: Path, width: int = 1280, height: int = 1600):
        self.profile = Path(profile_dir)
        self.size = (width, height)
        self.console: list[dict] = []
        self._id = 0

    def __enter__(self) -> Self:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._wait_port()
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(t for t in targets if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
        except BaseException:
            self._kill()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):  # closing a dead socket must not hide the test's error
            self.ws.close()
        self._kill()

    def _kill(self) -> None:
        """SIGTERM the browser's process group, then SIGKILL whatever of it is left (renderers, zygotes)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=10)

    def _wait_port(self, timeout: float = 30.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}")
            if marker.is_file():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    return int(first[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    # ---- protocol -------------------------------------------------------------------------------------
    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"level": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append({"level": "exception", "text": text})
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append({"level": entry.get("level"), "text": entry.get("text")})

    def _receive(self, timeout: float) -> dict:
        message = json.loads(self.ws.recv(timeout=timeout))
        self._record(message)
        return message

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(deadline - time.monotonic(), 0.01))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, timeout: float = 60.0) -> None:
        """Navigate and wait for the load event."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while True:
            if self._receive(max(deadline - time.monotonic(), 0.01)).get("method") == "Page.loadEventFired":
                return

    def follow(self, path: str) -> None:
        """Go to ``path`` inside the loaded single-page app as its own links do: ``history.pushState``, then the
        ``popstate`` event its router listens to. The app's scripts are not loaded again."""
        self.evaluate(f"window.history.pushState({{}}, '', {json.dumps(path)}); "
                      "window.dispatchEvent(new PopStateEvent('popstate', {state: {}}))")

    def before_each_page(self, source: str) -> None:
        """Run ``source`` in every page before its own scripts (``Page.addScriptToEvaluateOnNewDocument``)."""
        self.call("Page.addScriptToEvaluateOnNewDocument", source=source)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll ``expression`` until it is truthy; return its value (raise on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"page never satisfied: {expression}")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, 8000), "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def errors(self) -> list[dict]:
        return [m for m in self.console if m["level"] in ("error", "exception", "assert")]

"""Open a local HTML file in headless Chromium and report what a user's browser would see.

Chromium is driven through its DevTools protocol (CDP) over a websocket (the ``websockets`` package, a Prefect
dependency), so the page under test is loaded unmodified:

* started with ``--headless --no-sandbox --disable-gpu --disable-background-networking
  --disable-component-update --no-first-run --disable-sync --disable-quic``, a fresh ``--user-data-dir`` and
  ``--remote-debugging-port=0``; the port chosen by Chromium is read from ``DevToolsActivePort`` in that folder;
* a new tab is attached with ``Runtime``, ``Log``, ``Page`` and ``Network`` enabled *before* navigation, so every
  console message, uncaught exception, browser log entry (e.g. a failed resource load) and every request the page
  makes is recorded from the first byte;
* after the ``load`` event, a script waits for each ``<img>`` to settle and returns its ``complete`` flag and
  ``naturalWidth``/``naturalHeight`` (0 for an image that failed to decode or load);
* a full-page PNG screenshot is captured with ``Page.captureScreenshot``.

Usage::

    with Chromium(tmp_path / "chromium") as browser:
        result = browser.load(tmp_path / "page.html", screenshot=tmp_path / "page.png")
        assert not result.errors
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
    "--hide-scrollbars", "--window-size=1280,900",
)
_IMAGES_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })));
  return imgs.map(i => ({src: i.currentSrc.slice(0, 64), alt: i.alt, complete: i.complete,
                         naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}));
})()
"""


def chromium_binary() -> str | None:
    """Path of the Chromium executable, or None when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(RuntimeError):
    """The browser did not start, or a DevTools call failed or timed out."""


@dataclass
class PageResult:
    """What loading one page produced."""

    url: str
    title: str
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, log entries at error level
    warnings: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page requested (data: URIs included)
    text: str = ""  # document.body.innerText
    screenshot: Path | None = None
    probe: Any = None  # the value of load()'s probe expression


class Chromium:
    """A headless Chromium process with a DevTools websocket; a context manager that always stops the process."""

    def __init__(self, user_data_dir: Path, *, binary: str | None = None, timeout_s: float = 30.0) -> None:
        self.user_data_dir = Path(user_data_dir)
        self.binary = binary or chromium_binary()
        if self.binary is None:
            raise CDPError("no chromium executable on PATH")
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._ws = None

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        self.user_data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.user_data_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self._log = open(self.user_data_dir.parent / f"{self.user_data_dir.name}.log", "wb")  # noqa: SIM115
        cmd = [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.user_data_dir}", "--remote-debugging-port=0",
               "about:blank"]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout_s
        while True:
            if port_file.is_file():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    break
            if self._proc.poll() is not None:
                self._stop()
                raise CDPError(f"chromium exited with {self._proc.returncode} before DevTools was up "
                               f"(log: {self._log.name})")
            if time.monotonic() > deadline:
                self._stop()
                raise CDPError(f"chromium wrote no DevToolsActivePort within {self.timeout_s} s")
            time.sleep(0.05)
        port, path = lines[0], lines[1]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=self.timeout_s)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._call("Browser.close", timeout_s=5)
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ws = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()

    # -- protocol --------------------------------------------------------------------------------------------------
    def _call(self, method: str, params: dict | None = None, *, session: str | None = None,
              timeout_s: float | None = None) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            data = self._recv(deadline, method)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise CDPError(f"{method}: {data['error']}")
                return data.get("result", {})
            self._events.append(data)

    def _recv(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CDPError(f"timed out waiting for {waiting_for}")
        try:
            return json.loads(self._ws.recv(timeout=left))
        except TimeoutError as exc:
            raise CDPError(f"timed out waiting for {waiting_for}") from exc

    def _wait_event(self, method: str, session: str) -> dict[str, Any]:
        for e in self._events:
            if e.get("method") == method and e.get("sessionId") == session:
                return e
        deadline = time.monotonic() + self.timeout_s
        while True:
            data = self._recv(deadline, method)
            self._events.append(data)
            if data.get("method") == method and data.get("sessionId") == session:
                return data

    # -- pages -----------------------------------------------------------------------------------------------------
    def load(self, html: Path, *, screenshot: Path | None = None, probe: str | None = None) -> PageResult:
        """Open ``html`` in a new tab, wait for it to load, and collect errors, images, requests and a screenshot;
        ``probe``: a JavaScript expression (a promise is awaited) whose JSON value is kept as ``result.probe``."""
        url = Path(html).resolve().as_uri()
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            for domain in ("Runtime", "Log", "Page", "Network"):
                self._call(f"{domain}.enable", session=session)
            self._events = [e for e in self._events if e.get("sessionId") != session]
            nav = self._call("Page.navigate", {"url": url}, session=session)
            if nav.get("errorText"):
                raise CDPError(f"navigation to {url} failed: {nav['errorText']}")
            self._wait_event("Page.loadEventFired", session)
            images = self._eval(_IMAGES_JS, session)
            title = self._eval("document.title", session)
            text = self._eval("document.body ? document.body.innerText : ''", session)
            probed = self._eval(probe, session) if probe is not None else None
            shot = None
            if screenshot is not None:
                m = self._call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                clip = {"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1}
                png = self._call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                            "clip": clip}, session=session)["data"]
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(png))
                shot = screenshot
            # drain what arrived meanwhile (late console messages), without waiting
            with contextlib.suppress(CDPError):
                self._call("Runtime.evaluate", {"expression": "0"}, session=session)
        finally:
            with contextlib.suppress(CDPError):
                self._call("Target.closeTarget", {"targetId": target})
        result = PageResult(url=url, title=title, images=images, text=text, screenshot=shot, probe=probed)
        self._collect(result, session)
        return result

    def _eval(self, expr: str, session: str) -> Any:
        r = self._call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                       session=session)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluating {expr[:40]!r}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def _collect(self, result: PageResult, session: str) -> None:
        for e in self._events:
            if e.get("sessionId") != session:
                continue
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                if p.get("type") in ("error", "assert"):
                    result.errors.append(f"console.{p['type']}: {text}")
                elif p.get("type") == "warning":
                    result.warnings.append(f"console.warning: {text}")
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                result.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif method == "Log.entryAdded":
                entry = p.get("entry", {})
                line = f"log[{entry.get('source')}]: {entry.get('text')} {entry.get('url', '')}".strip()
                if entry.get("level") == "error":
                    result.errors.append(line)
                elif entry.get("level") == "warning":
                    result.warnings.append(line)
            elif method == "Network.requestWillBeSent":
                result.requests.append(p.get("request", {}).get("url", ""))
            elif method == "Network.loadingFailed":
                result.errors.append(f"network: {p.get('errorText')} ({p.get('type')})")
        self._events = [e for e in self._events if e.get("sessionId") != session]

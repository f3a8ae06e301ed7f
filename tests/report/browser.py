"""A real headless Chromium, driven over the DevTools protocol on a pipe: standard library only.

``--remote-debugging-pipe`` makes Chromium read commands from fd 3 and write replies and events to fd 4, as
NUL-terminated JSON; that is all a test needs to load a page, collect every console message, script error and
failed resource load, and take a screenshot. No WebSocket client, no driver package, no downloaded browser:
Debian's ``chromium`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Flags that work on the CI machine and here (root, no GPU, no network needed).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "about:blank")
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((path for name in _CHROMIUM_NAMES if (path := shutil.which(name))), None)


class BrowserError(RuntimeError):
    pass


@dataclass
class Loaded:
    """One page load: its screenshot (PNG bytes), the problems the page reported, and its size in CSS px."""

    screenshot: bytes
    problems: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0


class Chromium:
    """A headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def use_pipes() -> None:  # in the child: our pipe ends as fds 3 and 4, inheritable
            read_end = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}"],
                                        preexec_fn=use_pipes, close_fds=False, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- the protocol --------------------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium within {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (status {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _wait_for(self, session: str, method: str) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._receive())

    # --- what tests use ------------------------------------------------------------------------------------

    def load(self, page: Path, *, width: int = 1280, height: int = 900, mobile: bool = False,
             scale: float = 1.0, full_page: bool = True) -> Loaded:
        """Open ``page`` (a file) in a new tab, wait for it to load fully, and screenshot it."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}, session)
        self.call("Page.navigate", {"url": page.resolve().as_uri()}, session)
        self._wait_for(session, "Page.loadEventFired")
        metrics = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = {"format": "png"}
        if full_page:
            shot |= {"captureBeyondViewport": True,
                     "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}}
        image = base64.b64decode(self.call("Page.captureScreenshot", shot, session)["data"])
        problems = [_problem(e) for e in self._events if e.get("sessionId") == session and _problem(e)]
        self.call("Target.closeTarget", {"targetId": target})
        return Loaded(image, problems, int(metrics["width"]), int(metrics["height"]))


def _problem(event: dict) -> str | None:
    """A console error or warning, an uncaught exception or a failed load, as one line; else None."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
        return f"console.{params['type']}: {' '.join(str(a.get('value')) for a in params.get('args', []))}"
    if method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
        entry = params["entry"]
        return f"{entry['level']}: {entry.get('text')} {entry.get('url', '')}".strip()
    if method == "Network.loadingFailed":
        return f"load failed: {params.get('errorText')} ({params.get('type')})"
    return None

"""The real daemon speaks sd_notify on a real unix datagram socket, the way systemd listens (Type=notify)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np


def test_ready_watchdog_status_and_stopping(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.2)
    hot, results = tmp_path / "hot", tmp_path / "results"
    config = tmp_path / "c.toml"
    config.write_text(f'hot_folder = "{hot}"\nresults_folder = "{results}"\n[naming]\nstack_size = 2\n'
                      "[completeness]\nsettle_seconds = 0.3\n[workers]\ncount = 1\n")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    daemon = subprocess.Popen([sys.executable, "-m", "watcher.cli", "run", "--config", str(config)], env=env,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    messages: list[tuple[float, list[str]]] = []

    def receive_until(predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            with contextlib.suppress(TimeoutError):
                messages.append((time.monotonic(), listener.recv(4096).decode().splitlines()))
        assert predicate(), messages

    def seen(line: str) -> bool:
        return any(line in lines for _, lines in messages)

    try:
        receive_until(lambda: seen("READY=1"), 30)
        rng = np.random.default_rng(0)
        for s in range(12):
            for k in range(2):
                image = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), np.uint8), (0, 0), 1 + k)
                cv2.imwrite(str(hot / f"pos{s}_f{k}.png"), image)
        receive_until(lambda: any("STATUS=0 running, 0 queued, 12 done, 0 failed" in lines
                                  for _, lines in messages), 60)
        daemon.send_signal(signal.SIGTERM)
        receive_until(lambda: seen("STOPPING=1"), 30)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
    pings = [at for at, lines in messages if "WATCHDOG=1" in lines]
    assert len(pings) >= 3
    # WATCHDOG_USEC is 1 s: no pass of the main loop may come near it, stacking or not. Measured by the daemon
    # itself (CPU time of its busiest pass), since the gaps seen from here also hold the machine's other load.
    stopped = [json.loads(line) for line in (results / "focus-watcher.log").read_text().splitlines()
               if '"daemon.stopped"' in line]
    assert stopped and stopped[0]["passes"] >= 3 and stopped[0]["longest_pass_cpu_ms"] < 250, stopped
    statuses = [line for _, lines in messages for line in lines if line.startswith("STATUS=")]
    assert any("1 running" in s for s in statuses)  # progress reported while a stack was being fused
    assert len(list(results.glob("pos*.json"))) == 12

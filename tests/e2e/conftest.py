"""End-to-end helpers: a real ``focus-watcher`` daemon process on real temp folders.

Everything here is real: the daemon is ``python -m watcher.cli run --config <toml>`` in its own process group,
watchdog sees real file-system events, stacks run in real worker processes, and the tests read what the daemon
leaves behind (result files, JSON records, its JSON-lines log). Nothing is mocked.

Waiting is always a poll against a deadline (:func:`wait_until`); a timeout fails with the daemon's log tail.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import itertools
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks.picamera_dng import SyntheticCamera, write_dng
from benchmarks.soak import INOTIFY_KNOB_LOCK
from benchmarks.unprivileged import unprivileged as as_unprivileged

REPO = Path(__file__).resolve().parents[2]
LOG_NAME = "focus-watcher.log"
STATE_FOLDER = ".focus-watcher"  # ours in the results folder: the pid, the report, openscan records
REPORT_FOLDER = f"{STATE_FOLDER}/report"  # the morning report's pages and thumbnails
TEMP_MARKER = ".tmp-"

# Defaults of every e2e config: short settle time, generous stack timeout (so no test depends on it unless it
# sets it), 2 workers (this machine has 2 cores), a rescan period longer than any test so that the file-system
# events (not the periodic walk) are what the daemon reacts to.
DEFAULTS: dict[str, dict[str, Any]] = {
    "completeness": {"settle_seconds": 0.5, "stack_timeout_seconds": 30.0},
    "workers": {"count": 2, "stop_grace_seconds": 20.0},
    "observer": {"mode": "inotify", "poll_interval_seconds": 0.25, "rescan_seconds": 60.0},
    "logging": {"level": "info"},
}


# --- waiting -------------------------------------------------------------------------------------------------


# Every bound is a safety net, never the assertion: a passing test never reaches it, and a loaded machine (CI
# beside other jobs, a CPU hog) runs several times slower than the figures the tests name.
SAFETY_MARGIN = 3


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               detail: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s (on this
    machine, quiet) times :data:`SAFETY_MARGIN`."""
    timeout *= SAFETY_MARGIN
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}\n{detail() if detail else ''}",
                        pytrace=False)
        time.sleep(interval)


# --- the log -------------------------------------------------------------------------------------------------


def parse_events(path: Path) -> list[dict]:
    """JSON-line events of a log (or stderr capture); other lines (e.g. libjpeg warnings) are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if isinstance(event, dict) and "event" in event:
                events.append(event)
    return events


def select(events: Iterable[dict], name: str | None = None, **match: Any) -> list[dict]:
    return [e for e in events if (name is None or e["event"] == name)
            and all(e.get(key) == value for key, value in match.items())]


def event_time(event: dict) -> float:
    """The event's timestamp (structlog's local ISO time) as a Unix time."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def count_by_stack(events: Iterable[dict], name: str) -> Counter:
    return Counter(e["stack"] for e in events if e["event"] == name)


# --- processes -----------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def living_in_group(pgid: int) -> list[int]:
    """Processes (zombies excluded) of process group ``pgid``."""
    found = []
    for pid in _pids():
        info = _stat(pid)
        if info is not None and info[2] == pgid and info[0] != "Z":
            found.append(pid)
    return found


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (zombie or reaped)."""
    info = _stat(pid)
    return info is None or info[0] == "Z"


def children(pid: int) -> list[int]:
    found = []
    for child in _pids():
        info = _stat(child)
        if info is not None and info[1] == pid and info[0] != "Z":
            found.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def below(root: Path, pattern: str = "*", *, skip: Path | None = None) -> list[Path]:
    """The files and folders below ``root`` whose names match ``pattern``, sorted, not walking into ``skip``.

    os.walk, not rglob: the daemon removes folders while a test looks (the report's at a rebuild, inputs after
    stacking), and Python 3.11's rglob raises FileNotFoundError for a folder gone mid-walk.
    """
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if Path(folder, name) != skip]
        found += [Path(folder, name) for name in [*dirs, *files] if fnmatch.fnmatchcase(name, pattern)]
    return sorted(found)


@contextlib.contextmanager
def paused(pid: int):
    """Process ``pid`` stopped (SIGSTOP) for the block, continued after it: a stack caught running stays running
    for as long as the test needs, however fast or loaded the machine is."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed meanwhile (by the test, or by the daemon)
            os.kill(pid, signal.SIGCONT)


def stacking_workers(daemon_pid: int) -> list[int]:
    """The daemon's stacking worker processes: the children of its multiprocessing forkserver."""
    servers = [pid for pid in children(daemon_pid) if "forkserver" in cmdline(pid)]
    return [worker for server in servers for worker in children(server)]


def the_worker(daemon: Daemon) -> int:
    """The one stacking worker process of ``daemon`` running now."""
    workers = daemon.wait_for(lambda: stacking_workers(daemon.pid), 15, "a stacking worker process")
    assert len(workers) == 1, f"expected one worker, found {workers}"
    return workers[0]


class Watchdog:
    """The systemd side of sd_notify for one daemon: the times of its WATCHDOG=1 pings (interval ``usec`` / 2)."""

    def __init__(self, path: Path, usec: int = 1_000_000) -> None:
        self.path = path
        self.usec = usec
        self.pings: list[float] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(self.usec)}

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                lines = self._socket.recv(4096).decode(errors="replace").splitlines()
            except TimeoutError:
                continue
            if "WATCHDOG=1" in lines:
                self.pings.append(time.monotonic())

    def longest_gap(self, since: float) -> float:
        """Longest time without a ping from ``since`` (time.monotonic()) until now."""
        times = [since, *(t for t in self.pings if t > since), time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close()


class Daemon:
    """One ``focus-watcher`` process (``run`` or ``once``) with its stderr captured to a file."""

    def __init__(self, rig: Rig, command: str, config: Path, index: int, *, unprivileged: bool = False,
                 env: dict[str, str] | None = None, prefix: list[str] | None = None, umask: int = -1) -> None:
        self.rig = rig
        self.command = command
        self.stderr_path = rig.root / f"daemon-{index}-{command}.stderr"
        full_env = {key: value for key, value in os.environ.items() if not key.startswith("FOCUS_WATCHER_")}
        full_env.update(PYTHONUNBUFFERED="1", **(env or {}))
        argv = [*(prefix or []), sys.executable, "-m", "watcher.cli", command, "--config", str(config)]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                as_unprivileged(argv) if unprivileged else argv,
                cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, umask=umask,
                start_new_session=True,  # own process group: teardown kills the daemon, forkserver and workers
            )
        self.pid = self.proc.pid

    # what it said
    def events(self, name: str | None = None, **match: Any) -> list[dict]:
        """This process's events (from its stderr, so a restart's events are separate)."""
        return select(parse_events(self.stderr_path), name, **match)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            text = []
        state = "running" if self.alive else f"exited with {self.proc.returncode}"
        return f"--- daemon pid {self.pid} ({self.command}, {state}); last {lines} lines of its stderr:\n" + \
            "\n".join(text[-lines:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # waiting for it
    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Like :func:`wait_until`, but fails at once if the daemon exits, and always shows its log tail."""
        def check():
            value = predicate()
            if not value and not self.alive:
                pytest.fail(f"daemon exited ({self.proc.returncode}) while waiting for {what}\n{self.tail()}",
                            pytrace=False)
            return value
        return wait_until(check, timeout, what, self.tail)

    def wait_event(self, name: str, timeout: float = 15.0, count: int = 1, **match: Any) -> list[dict]:
        return self.wait_for(lambda: len(found := self.events(name, **match)) >= count and found,
                             timeout, f"{count} x {name} {match or ''}")

    def wait_done(self, stacks: Iterable[str], timeout: float, what: str = "the stacks done") -> None:
        """Each of ``stacks`` has an ok record and this daemon's ``stack.done`` line (written just after the
        record: a test that counts the lines waits for them, not only for the records)."""
        stacks = list(stacks)
        self.wait_for(lambda: self.rig.ok_records(stacks)
                      and set(stacks) <= {e["stack"] for e in self.events("stack.done")}, timeout, what)

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_event("daemon.ready", timeout)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within {timeout:.1f} s\n{self.tail()}", pytrace=False)

    # stopping it
    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


# --- the rig: folders, config, results -----------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(str(key))} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


@dataclass
class Rig:
    """A hot folder, a results folder, a config file, and the daemons started on them."""

    root: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def hot(self) -> Path:
        return self.root / "hot"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def log(self) -> Path:
        return self.results / LOG_NAME

    def config(self, name: str = "focus-watcher.toml", results_folder: Path | None = None,
               **sections: dict[str, Any]) -> Path:
        """Write a TOML config: :data:`DEFAULTS` updated by ``sections`` (``workers={"count": 1}``, ...)."""
        merged = {section: dict(values) for section, values in DEFAULTS.items()}
        for section, values in sections.items():
            merged.setdefault(section, {}).update(values)
        lines = [f"hot_folder = {toml_value(self.hot)}",
                 f"results_folder = {toml_value(results_folder or self.results)}"]
        for section, values in merged.items():
            lines.append(f"\n[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, config: Path | None = None, command: str = "run", wait_ready: bool = True, *,
              unprivileged: bool = False, env: dict[str, str] | None = None, prefix: list[str] | None = None,
              umask: int = -1) -> Daemon:
        """Start a daemon; ``unprivileged``: with file permissions applying to it even when the tests run as
        root (as the service user); ``env``: extra environment (e.g. :meth:`Watchdog.env`); ``prefix``: a
        command that runs it (e.g. ``setpriv ...``); ``umask``: its umask."""
        with open(INOTIFY_KNOB_LOCK, "a") as knob:
            # Not while a soak night (another test process) has lowered the system-wide inotify queue limit for its
            # own daemon: that one's events overflow on purpose, this one's must not.
            fcntl.flock(knob, fcntl.LOCK_SH)
            daemon = Daemon(self, command, config or self.config(), len(self.daemons), unprivileged=unprivileged,
                            env=env, prefix=prefix, umask=umask)
            self.daemons.append(daemon)
            if wait_ready and command == "run":
                daemon.wait_ready()
        return daemon

    def cli(self, *args: str, config: Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a short ``focus-watcher`` command (``status --json``) to completion."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("FOCUS_WATCHER_")}
        return subprocess.run([sys.executable, "-m", "watcher.cli", *args, "--config", str(config or self.config())],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    def log_events(self, name: str | None = None, **match: Any) -> list[dict]:
        """Events of every run so far, from ``<results>/focus-watcher.log``."""
        return select(parse_events(self.log), name, **match)

    # results
    def result_files(self, pattern: str = "*") -> list[Path]:
        """Files under the results folder (with the openscan layout, the records kept apart in
        ``.focus-watcher/stacks``), but not the report's (its pages, state and thumbnails)."""
        return below(self.results, pattern, skip=self.results / REPORT_FOLDER)

    def records(self) -> dict[str, dict]:
        """Every stack record under the results folder, by stack id (fails on a record that does not parse)."""
        found = {}
        for path in self.result_files("*.json"):
            if TEMP_MARKER in path.name:
                continue
            record = json.loads(path.read_text())
            assert record["stack"] not in found, f"two records for {record['stack']}"
            found[record["stack"]] = record
        return found

    def temp_files(self) -> list[Path]:
        return [p for p in below(self.results) if TEMP_MARKER in p.name]

    def assert_results_sound(self) -> int:
        """Every visible result is whole: each .jpg decodes and ends with FF D9, each .json parses.

        Returns the number of images checked."""
        images = 0
        for path in self.result_files():
            if not path.is_file() or TEMP_MARKER in path.name:
                continue
            data = path.read_bytes()
            if path.suffix == ".jpg":
                assert data.rstrip(b"\0").endswith(b"\xff\xd9"), f"{path} is truncated (no FF D9)"
                assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None, f"{path}"
                images += 1
            elif path.suffix == ".json":
                json.loads(data)
        return images

    def ok_records(self, stacks: Iterable[str]) -> bool:
        records = self.records()
        return all(records.get(s, {}).get("status") == "ok" for s in stacks)

    def hot_files(self) -> list[str]:
        return [str(p.relative_to(self.hot)) for p in below(self.hot) if p.is_file()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.e2e_failed = report.failed
    return report


@pytest.fixture
def rig(request, tmp_path: Path):
    rig = Rig(tmp_path)
    rig.hot.mkdir()
    yield rig
    for daemon in rig.daemons:
        daemon.kill_group()  # whatever the test did: no daemon, forkserver or worker survives it
    if getattr(request.node, "e2e_failed", False):  # shown under "Captured stdout teardown"
        for daemon in rig.daemons:
            print(daemon.tail(60))


# --- frames --------------------------------------------------------------------------------------------------


def _encode(image: np.ndarray, size: tuple[int, int], quality: int = 90) -> bytes:
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


@dataclass(frozen=True)
class Frames:
    """Encoded JPEG frames, cut from the team's real focus stacks."""

    small: tuple[bytes, ...]  # 7 PCB frames at 320x240, in focus order
    ring: tuple[bytes, ...]  # 6 ring frames at 320x240 (other content: a "replaced" frame)
    medium: tuple[bytes, ...]  # 7 PCB frames at 800x600: a stack that runs for about 1.5 s (here)
    big: tuple[bytes, ...]  # 7 PCB frames at 1280x960: a stack that runs for about 3 s (here)
    raw: tuple[bytes, ...]  # 7 PCB frames at 320x240 as DNGs, as Picamera2 writes them (12-bit, RGGB)

    def stack(self, n: int = 3, offset: int = 0) -> list[bytes]:
        return [self.small[(offset + k) % len(self.small)] for k in range(n)]


@pytest.fixture(scope="session")
def frames(pcb_stack, ring_stack) -> Frames:
    pcb = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in pcb_stack]
    ring = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in ring_stack]
    return Frames(
        small=tuple(_encode(image, (320, 240)) for image in pcb),
        ring=tuple(_encode(image, (320, 240)) for image in ring),
        medium=tuple(_encode(image, (800, 600)) for image in pcb),
        big=tuple(_encode(image, (1280, 960)) for image in pcb),
        raw=tuple(_dng(image, (320, 240)) for image in pcb),
    )


def _dng(image: np.ndarray, size: tuple[int, int]) -> bytes:
    """A PCB frame's light (its JPEG values linearised) as a Picamera2 DNG."""
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return write_dng(None, np.power(small[..., ::-1] / np.float32(255), 2.2),
                     camera=SyntheticCamera(model="imx519"))


def write_frame(path: Path, data: bytes) -> None:
    """Write a frame the way a camera or a copy does: create, write, close (no rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def write_slowly(path: Path, data: bytes, cuts: Iterable[int], pause: float) -> float:
    """Write ``data`` in pieces cut at byte offsets ``cuts``, flushing and pausing between them.

    Returns the time (``time.time()``) just after the last byte was written, before the file is closed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = [0, *sorted(cuts), len(data)]
    with open(path, "wb") as handle:
        for index, (start, end) in enumerate(itertools.pairwise(bounds)):
            if index:
                time.sleep(pause)
            handle.write(data[start:end])
            handle.flush()
            os.fsync(handle.fileno())
        last_write = time.time()
    return last_write


def write_scan_json(folder: Path, status: str = "running", focus_stacks: int = 3) -> None:
    """OpenScan3's ``scan.json``, written as the firmware does it: a hidden temp file renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"project_name": folder.parent.name, "index": 1, "status": status,
                       "settings": {"points": 20, "focus_stacks": focus_stacks}})
    temp = folder / f".tmp_{random.getrandbits(32):08x}.json"
    temp.write_text(text)
    os.replace(temp, folder / "scan.json")


def openscan3_name(scan: int, position: int, focus: int, suffix: str = ".jpg") -> str:
    return f"scan{scan:02d}_{position:03d}_fs{focus:02d}{suffix}"


def openscan3_stack(project: str, scan: int, position: int) -> str:
    """The stack id the daemon gives an OpenScan3 stack in ``<hot>/<project>/scanNN/``."""
    return f"{project}/scan{scan:02d}/scan{scan:02d}_{position:03d}"


def write_openscan3_stacks(hot: Path, project: str, scan: int, stacks: dict[int, Iterable[bytes]],
                           focus_stacks: int | None = None, status: str = "running", suffix: str = ".jpg") -> list[str]:
    """Write OpenScan3 stacks ``{position: frames}`` into ``<hot>/<project>/scanNN/`` (with its scan.json,
    ``focus_stacks`` defaulting to the first stack's length), in the given order; return their stack ids.
    ``suffix``: ``.dng`` for a scan with ``image_format = "dng"``."""
    stacks = {position: list(data) for position, data in stacks.items()}
    folder = hot / project / f"scan{scan:02d}"
    if focus_stacks is None:
        focus_stacks = len(next(iter(stacks.values())))
    write_scan_json(folder, status, focus_stacks)
    for position, data in stacks.items():
        for focus, frame in enumerate(data):
            write_frame(folder / openscan3_name(scan, position, focus, suffix), frame)
    return [openscan3_stack(project, scan, position) for position in stacks]


ExifValue = str | int | tuple[int, int]  # ASCII, SHORT, RATIONAL (numerator, denominator)


def tiff_exif(ifd0: dict[int, ExifValue], exif_ifd: dict[int, ExifValue], *, big_endian: bool = True) -> bytes:
    """A TIFF-structured EXIF block with IFD0 ``ifd0`` and an Exif sub-IFD ``exif_ifd`` (tag -> value), written
    here byte by byte, independently of the code under test."""
    order = ">" if big_endian else "<"
    exif_at = 8 + 2 + 12 * (len(ifd0) + 1) + 4
    data_at = exif_at + 2 + 12 * len(exif_ifd) + 4
    data = bytearray()

    def directory(tags: dict[int, ExifValue | None]) -> bytes:
        out = struct.pack(order + "H", len(tags))
        for tag, value in sorted(tags.items()):
            if value is None:  # the Exif IFD pointer
                kind, count, payload = 4, 1, struct.pack(order + "I", exif_at)
            elif isinstance(value, str):
                payload = value.encode("ascii") + b"\0"
                kind, count = 2, len(payload)
            elif isinstance(value, int):
                kind, count, payload = 3, 1, struct.pack(order + "H", value)
            else:
                kind, count, payload = 5, 1, struct.pack(order + "II", *value)
            if len(payload) <= 4:
                out += struct.pack(order + "HHI", tag, kind, count) + payload.ljust(4, b"\0")
            else:
                out += struct.pack(order + "HHII", tag, kind, count, data_at + len(data))
                data.extend(payload + b"\0" * (len(payload) % 2))
        return out + struct.pack(order + "I", 0)

    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8)
    return head + directory({**ifd0, 0x8769: None}) + directory(exif_ifd) + bytes(data)


def openscan3_exif(model: str, *, big_endian: bool = True) -> bytes:
    """The EXIF OpenScan3 writes into a frame (through Picamera2 and piexif, big-endian): Orientation, libcamera's
    Model, Software; ExposureTime, ISO, DateTimeOriginal. No Make, no focal length."""
    return tiff_exif({0x0112: 1, 0x0110: model, 0x0131: "OpenScan3 (Picamera2)"},
                     {0x829A: (1, 20), 0x8827: 100, 0x9003: "2026:07:18 19:22:04"}, big_endian=big_endian)


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``exif`` (TIFF-structured) right after its SOI marker."""
    payload = b"Exif\x00\x00" + exif
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]

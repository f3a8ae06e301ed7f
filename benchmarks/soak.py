"""A night of an OpenScan rig with everything going wrong, against a real daemon, reconciled at the end.

    uv run python -m benchmarks.soak --minutes 30 --stacks 2000          # the full campaign
    uv run python -m benchmarks.soak --minutes 1.5 --stacks 120          # what the test suite runs

A simulated rig writes scans the way OpenScan3 does (final names written directly, positions out of order, frames
of a position together, scan.json rewritten atomically after each position) while faults are injected: the daemon
killed with SIGKILL and restarted, stopped with SIGTERM and restarted, workers killed mid-stack, corrupt frames
(truncated, garbage, empty, wrong size, a 20000x20000 decompression bomb), a frame written slowly, a stack that
never gets all its frames, a burst faster than the pool drains, stacks deleted while queued, a symlink out of the
hot folder, names trying path traversal, and -- when running as root -- a results folder that turns read-only and
one that fills up (a small tmpfs), and a tiny inotify queue so events overflow and only rescans find files.

The reconciliation counts, per planned stack, what the results folder and the daemon's log say happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from benchmarks.synthetic import make_focal_stack
from watcher.service.lock import PID_NAME

FRAMES = 3
# What each corrupt frame must make the stack's record say.
CORRUPTIONS = {
    "truncated": "truncated JPEG",
    "garbage": "not a JPEG, PNG or TIFF",
    "empty": "empty file",
    "wrong_size": "differs from the reference",
    "bomb": "MP limit",
}
# Names that try to climb out of the results folder through the regex's stack group.
TRAVERSAL_NAMES = ("a\\..\\..\\evil_fs00.jpg", "..\\escape_fs00.jpg")


@dataclass
class Planned:
    stack: str  # "proj/scanNN/scanNN_PPP"
    expect: str  # "ok" | "failed" | "absent" | "ok_or_absent"
    fault: str = ""
    frames: list[str] = field(default_factory=list)


@dataclass
class Night:
    root: Path
    minutes: float
    stacks: int
    workers: int
    seed: int = 0
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)

    def __post_init__(self) -> None:
        self.hot, self.results, self.outside = self.root / "hot", self.root / "results", self.root / "outside"
        self.plan: dict[str, Planned] = {}
        self.counts = Counter()
        self.rss: list[tuple[float, int]] = []  # (time, daemon RSS kB) of the current incarnation
        self.rss_runs: list[list[tuple[float, int]]] = []
        self.daemon: subprocess.Popen | None = None
        self.notify = Notifications(self.root / "notify.sock")
        self.rng = random.Random(self.seed)
        case = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=FRAMES, seed=self.seed)
        self.frame_bytes = list(case.jpeg_bytes)
        small = cv2.resize(case.frames[0], (160, 120))
        self.corrupt = {
            "truncated": self.frame_bytes[1][: len(self.frame_bytes[1]) // 2],
            "garbage": bytes(self.rng.getrandbits(8) for _ in range(5000)),
            "empty": b"",
            "wrong_size": cv2.imencode(".jpg", small)[1].tobytes(),
            "bomb": _bomb(self.frame_bytes[1]),
        }

    # --- the daemon ----------------------------------------------------------------------------------------

    def config(self) -> Path:
        path = self.root / "config.toml"
        path.write_text(
            f'hot_folder = "{self.hot}"\nresults_folder = "{self.results}"\n'
            "[naming]\nmode = \"regex\"\npattern = '(?P<stack>.+)_fs(?P<frame>\\d+)'\n"
            f"stack_size = {FRAMES}\n"
            "[completeness]\nsettle_seconds = 1.0\nstack_timeout_seconds = 8.0\n"
            "[observer]\nrescan_seconds = 5.0\n"
            f"[workers]\ncount = {self.workers}\nqueue_size = 8\nstop_grace_seconds = 10.0\n"
            "[logging]\nfile_max_bytes = 200000000\n"
        )
        return path

    def start(self) -> None:
        """Start the daemon as systemd would (NOTIFY_SOCKET, a 4 s watchdog) and wait for READY=1."""
        command = [sys.executable, "-m", "watcher.cli", "run", "--config", str(self.config())]
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "4000000"}
        with self._small_inotify_queue():
            self.notify.new_run()
            with open(self.root / "daemon.stderr", "ab") as stderr:
                self.daemon = subprocess.Popen(command, stderr=stderr, start_new_session=True, env=env)
            _wait(lambda: self.notify.ready >= self.counts["starts"] + 1, 60)
        self.counts["starts"] += 1
        self.rss = []
        self.rss_runs.append(self.rss)

    def stop(self, how: signal.Signals) -> None:
        assert self.daemon is not None
        os.killpg(self.daemon.pid, how) if how == signal.SIGKILL else self.daemon.send_signal(how)
        code = self.daemon.wait(timeout=60)
        if how == signal.SIGTERM and code != 0:
            raise RuntimeError(f"daemon exited {code} on SIGTERM")
        self.counts["sigkill" if how == signal.SIGKILL else "sigterm"] += 1

    def kill_a_worker(self) -> bool:
        workers = [pid for pid in _descendants(self.daemon.pid) if b"forkserver" in _cmdline(_parent(pid))]
        if not workers:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(workers[0], signal.SIGKILL)
            self.counts["workers_killed"] += 1
        return True

    def sample_rss(self, stop: threading.Event) -> None:
        while not stop.wait(0.5):
            daemon = self.daemon
            if daemon is not None and daemon.poll() is None:
                rss = _status_kb(daemon.pid, "VmRSS")
                if rss:
                    self.rss.append((time.monotonic(), rss))

    @contextlib.contextmanager
    def _small_inotify_queue(self):
        """As root: a 64-event inotify queue for the daemon's instance, so event overflows really happen."""
        knob = Path("/proc/sys/fs/inotify/max_queued_events")
        if not self.as_root:
            yield
            return
        old = knob.read_text()
        knob.write_text("64")
        try:
            yield
            time.sleep(1.5)  # the daemon creates its inotify instance while the limit is low
        finally:
            knob.write_text(old)

    # --- the rig -------------------------------------------------------------------------------------------

    def write_stack(self, scan: Path, name: str, fault: str = "") -> Planned:
        planned = Planned(f"{scan.relative_to(self.hot).as_posix()}/{name}", "ok", fault)
        frames = FRAMES if fault != "incomplete" else 1
        for k in range(frames):
            path = scan / f"{name}_fs{k:02d}.jpg"
            planned.frames.append(path.name)
            data = self.corrupt[fault] if fault in CORRUPTIONS and k == 1 else self.frame_bytes[k]
            if fault == "slow" and k == frames - 1:
                threading.Thread(target=_write_slowly, args=(path, data), daemon=True).start()
            else:
                path.write_bytes(data)  # final name, written directly: what OpenScan3 does
        planned.expect = "failed" if fault in CORRUPTIONS else "ok"
        self.plan[planned.stack] = planned
        return planned

    def night(self) -> None:
        """Write all scans at a steady rate, with faults at fixed points of the night."""
        self.hot.mkdir(parents=True)
        self.results.mkdir(parents=True)
        tmpfs = self.as_root and _mount_tmpfs(self.results, 512)
        self.counts["tmpfs"] = int(bool(tmpfs))
        stop_sampling = threading.Event()
        threading.Thread(target=self.sample_rss, args=(stop_sampling,), daemon=True).start()
        self.start()
        try:
            self._write_night(tmpfs)
            self._wait_until_done()
            self.stop(signal.SIGTERM)
        finally:
            stop_sampling.set()
            if self.daemon is not None and self.daemon.poll() is None:
                os.killpg(self.daemon.pid, signal.SIGKILL)
            self._reconcile()
            if tmpfs:
                subprocess.run(["umount", "-l", str(self.results)], check=False)

    def _write_night(self, tmpfs: bool) -> None:
        per_scan = 40
        scans = max(1, -(-self.stacks // per_scan))
        interval = self.minutes * 60 / self.stacks
        faults = self._fault_schedule(tmpfs)
        index = 0
        start = time.monotonic()
        for s in range(scans):
            scan = self.hot / "proj" / f"scan{s + 1:02d}"
            scan.mkdir(parents=True)
            positions = list(range(min(per_scan, self.stacks - index)))
            self.rng.shuffle(positions)  # the path optimiser's order
            for step, position in enumerate(positions):
                fault = faults.get(index, "")
                if fault == "burst":
                    self._burst(scan, position)
                elif fault in ("sigkill", "sigterm"):
                    self.stop(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
                    self.start()
                elif fault == "kill_worker":
                    _wait(self.kill_a_worker, 20, fail=False)
                elif fault == "readonly":
                    threading.Thread(target=self._read_only_for, args=(15,), daemon=True).start()
                elif fault == "full":
                    threading.Thread(target=self._full_for, args=(15,), daemon=True).start()
                elif fault == "hostile":
                    self._hostile_files()
                name = f"scan{s + 1:02d}_{position:03d}"
                self.write_stack(scan, name, fault if fault in (*CORRUPTIONS, "slow", "incomplete") else "")
                if fault == "delete":
                    self._delete_soon(scan, name)
                _write_scan_json(scan, "running", step + 1)
                index += 1
                time.sleep(max(0.0, start + index * interval - time.monotonic()))
            _write_scan_json(scan, "completed", len(positions))

    def _fault_schedule(self, tmpfs: bool) -> dict[int, str]:
        """Stack index -> fault. Each fault at its fraction of the night, or the next free stack after it."""
        schedule: dict[int, str] = {}

        def place(fraction: float, fault: str) -> None:
            index = int(self.stacks * fraction)
            while index in schedule:
                index += 1
            schedule[index] = fault

        for fraction, fault in ((0.15, "hostile"), (0.20, "sigkill"), (0.30, "burst"), (0.35, "kill_worker"),
                                (0.40, "slow"), (0.45, "sigkill"), (0.55, "delete"), (0.56, "delete"),
                                (0.60, "sigterm"), (0.65, "incomplete"), (0.70, "sigkill"), (0.85, "kill_worker")):
            place(fraction, fault)
        for offset, corruption in enumerate(CORRUPTIONS):
            place(0.10 + offset / self.stacks, corruption)
            place(0.75 + offset / self.stacks, corruption)
        if tmpfs:
            place(0.50, "readonly")
            place(0.78, "full")
        return schedule

    def _burst(self, scan: Path, avoid: int) -> None:
        """30 stacks at once (positions 900+), faster than any pool drains; some deleted while queued."""
        for b in range(30):
            planned = self.write_stack(scan, f"{scan.name}_{900 + b:03d}")
            if b % 10 == 9:
                planned.expect = "ok_or_absent"
                threading.Timer(1.5, self._delete, args=(scan, planned)).start()
        self.counts["burst"] += 30

    def _delete_soon(self, scan: Path, name: str) -> None:
        planned = self.plan[f"{scan.relative_to(self.hot).as_posix()}/{name}"]
        planned.expect = "ok_or_absent"
        threading.Timer(0.5, self._delete, args=(scan, planned)).start()

    def _delete(self, scan: Path, planned: Planned) -> None:
        for frame in planned.frames:
            (scan / frame).unlink(missing_ok=True)
        self.counts["deleted_stacks"] += 1

    def _read_only_for(self, seconds: float) -> None:
        """A read-only bind mount over the results folder: every new write fails with EROFS."""
        target = str(self.results)
        subprocess.run(["mount", "--bind", target, target], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", target], check=True)
        time.sleep(seconds)
        subprocess.run(["umount", "--lazy", target], check=True)  # a restarted daemon may hold its lock in it
        self.counts["readonly_periods"] += 1

    def _full_for(self, seconds: float) -> None:
        filler = self.results / "filler"
        with open(filler, "wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * (1 << 20))
        time.sleep(seconds)
        filler.unlink()
        self.counts["full_periods"] += 1

    def _hostile_files(self) -> None:
        """A symlink to frames outside the hot folder, and names that try to climb out of the results folder."""
        self.outside.mkdir(exist_ok=True)
        for k in range(FRAMES):
            (self.outside / f"secret_{k}.jpg").write_bytes(self.frame_bytes[k])
        scan = self.hot / "proj" / "scan01"
        (scan / "linked").symlink_to(self.outside, target_is_directory=True)
        for k in range(FRAMES):
            (scan / f"scan01_777_fs{k:02d}.jpg").symlink_to(self.outside / f"secret_{k}.jpg")
        self.plan["proj/scan01/scan01_777"] = Planned("proj/scan01/scan01_777", "absent", "symlink")
        for name in TRAVERSAL_NAMES:
            (scan / name).write_bytes(self.frame_bytes[0])
        self.counts["hostile_files"] = FRAMES + 1 + len(TRAVERSAL_NAMES)

    def _wait_until_done(self) -> None:
        def settled() -> bool:
            return all(_record(self.results, p.stack) is not None for p in self.plan.values()
                       if p.expect in ("ok", "failed"))

        _wait(settled, 300, fail=False)
        time.sleep(3)  # let anything late (a rescan) show up before stopping

    # --- reconciliation ------------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        events = _events(self.results)
        done_events = Counter(e["stack"] for e in events if e.get("event") == "stack.done")
        failed_events = Counter(e["stack"] for e in events if e.get("event") == "stack.failed")
        rows = Counter({key: 0 for key in ("lost", "duplicated", "partial files visible", "failures unexplained",
                                            "processed but must not be", "files written outside results",
                                            "read before fully written")})
        self.failures: list[tuple[str, str, bool]] = []
        self.duplicates: list[list[dict]] = []
        for planned in self.plan.values():
            record = _record(self.results, planned.stack)
            status = record["status"] if record else "absent"
            rows[f"planned {planned.expect}"] += 1
            if record is None and planned.expect in ("ok", "failed"):
                rows["lost"] += 1
            if record is not None and planned.expect == "absent":
                rows["processed but must not be"] += 1
            if status == "ok":
                rows["results ok"] += 1
            if status == "failed":
                explained = planned.fault in CORRUPTIONS and CORRUPTIONS[planned.fault] in (record["error"] or "")
                self.failures.append((planned.stack, record["error"], explained))
                rows["failures"] += 1
                rows["failures unexplained"] += not explained
            if done_events[planned.stack] + failed_events[planned.stack] > 1:
                rows["duplicated"] += 1
                self.duplicates.append([e for e in events if e.get("stack") == planned.stack])
            if planned.fault == "slow" and record is not None:
                full = len(self.frame_bytes[FRAMES - 1])
                rows["read before fully written"] += record["inputs"][-1]["size"] != full
        escaped = [p for p in self.root.rglob("*") if p.is_file() and not p.is_relative_to(self.hot)
                   and not p.is_relative_to(self.results) and not p.is_relative_to(self.outside)
                   and p.name not in ("config.toml", "daemon.stderr")]
        rows["files written outside results"] = len(escaped)
        rows["partial files visible"] = sum(1 for p in self.results.rglob("*") if _partial(p))
        rows["unsafe names refused"] = sum(1 for e in events if e.get("event") == "file.unplaced"
                                           and "unsafe" in e.get("reason", ""))
        rows["retries after worker death"] = sum(1 for e in events if e.get("event") == "stack.retry")
        rows["results unwritable (retried)"] = sum(1 for e in events if e.get("event") == "results.unwritable")
        self.rows = rows
        self.worker_peaks = [r.get("worker_peak_rss_mb", 0) for r in _records(self.results)]

    def report(self, seconds: float) -> str:
        rows, counts = self.rows, self.counts
        longest = max(self.rss_runs, key=len) if self.rss_runs else []
        fifth = max(1, len(longest) // 5)
        early = sorted(r for _, r in longest[:fifth])[len(longest[:fifth]) // 2] if longest else 0
        late = sorted(r for _, r in longest[-fifth:])[len(longest[-fifth:]) // 2] if longest else 0
        lines = [
            f"night: {seconds / 60:.1f} min, {len(self.plan)} stacks planned, {self.workers} workers, "
            f"root faults (tmpfs, inotify overflow): {'yes' if counts['tmpfs'] else 'no (not root)'}",
            f"{'stacks written':40} {sum(len(p.frames) > 0 for p in self.plan.values()):6}",
            *(f"{key:40} {rows[key]:6}" for key in sorted(rows)),
            f"{'daemon starts (SIGKILL / SIGTERM before)':40} {counts['starts']:6} "
            f"({counts['sigkill']} / {counts['sigterm'] - 1})",
            f"{'workers killed mid-stack':40} {counts['workers_killed']:6}",
            f"{'watchdog pings / longest gap s (< 4 ok)':40} {self.notify.pings:6} / {self.notify.longest_gap:.1f}",
            f"{'stacks deleted by the rig':40} {counts['deleted_stacks']:6}",
            f"{'read-only / full periods':40} {counts['readonly_periods']:3} / {counts['full_periods']}",
            f"{'daemon peak RSS MiB':40} {max((r for run in self.rss_runs for _, r in run), default=0) / 1024:6.1f}",
            f"{'daemon RSS MiB, longest run: early/late':40} {early / 1024:6.1f} / {late / 1024:.1f}",
            f"{'worker peak RSS MiB (max over stacks)':40} {max(self.worker_peaks, default=0):6.1f}",
            f"{'throughput, stacks/min':40} {rows['results ok'] / (seconds / 60):6.1f}",
            "failures:",
            *(f"  {'explained  ' if ok else 'UNEXPLAINED'} {stack}: {error}" for stack, error, ok in self.failures),
            *(f"duplicated: {json.dumps(events)}" for events in self.duplicates),
        ]
        return "\n".join(lines)


class Notifications:
    """The systemd side of sd_notify: counts READY=1 and the longest gap between WATCHDOG=1 pings."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready = 0
        self.pings = 0
        self.longest_gap = 0.0
        self._last: float | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        threading.Thread(target=self._receive, daemon=True).start()

    def new_run(self) -> None:
        self._last = None  # a restart is not a stalled loop

    def _receive(self) -> None:
        while True:
            message = self._socket.recv(4096).decode(errors="replace").splitlines()
            now = time.monotonic()
            if "READY=1" in message:
                self.ready += 1
            if "WATCHDOG=1" in message:
                self.pings += 1
                if self._last is not None:
                    self.longest_gap = max(self.longest_gap, now - self._last)
                self._last = now
            if "STOPPING=1" in message:
                self._last = None


def run_night(root: Path, minutes: float, stacks: int, workers: int) -> Night:
    night = Night(root, minutes, stacks, workers)
    started = time.monotonic()
    night.night()
    night.seconds = time.monotonic() - started
    return night


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the rig writes")
    parser.add_argument("--stacks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        night = run_night(root, args.minutes, args.stacks, args.workers)
        print(night.report(night.seconds))


# --- helpers -------------------------------------------------------------------------------------------------


def _bomb(jpeg: bytes) -> bytes:
    """A real JPEG whose header claims 20000 x 20000 pixels."""
    data = bytearray(jpeg)
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 20000, 20000)
    return bytes(data)


def _write_slowly(path: Path, data: bytes, seconds: float = 3.0, chunks: int = 6) -> None:
    with open(path, "wb") as handle:
        for i in range(chunks):
            handle.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
            handle.flush()
            time.sleep(seconds / chunks)


def _write_scan_json(scan: Path, status: str, step: int) -> None:
    temp = scan / f".tmp_{os.getpid()}.json"
    temp.write_text(json.dumps({"status": status, "current_step": step, "settings": {"focus_stacks": FRAMES}}))
    os.replace(temp, scan / "scan.json")


def _mount_tmpfs(path: Path, megabytes: int) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _record(results: Path, stack: str) -> dict | None:
    try:
        return json.loads((results / f"{stack}.json").read_text())
    except (OSError, ValueError):
        return None


def _records(results: Path):
    for path in results.rglob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            yield json.loads(path.read_text())


def _events(results: Path) -> list[dict]:
    events = []
    for path in sorted(results.glob("focus-watcher.log*")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def _partial(path: Path) -> bool:
    """A file visible under its final name that is not complete."""
    if path.name == PID_NAME:
        return False
    if not path.is_file() or path.name.startswith("."):
        return path.is_file()  # any temp file left behind counts as partial
    if path.suffix == ".jpg":
        return not path.read_bytes().rstrip(b"\0").endswith(b"\xff\xd9")
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except ValueError:
            return True
    return False


def _wait(predicate, timeout: float, fail: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if fail:
                raise TimeoutError("timed out")
            return False
        time.sleep(0.2)
    return True


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(_parent(int(entry.name)), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()

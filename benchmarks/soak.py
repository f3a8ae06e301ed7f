"""A night of an OpenScan rig with everything going wrong, against a real daemon, reconciled at the end.

    uv run python -m benchmarks.soak --minutes 30 --stacks 2000          # the full campaign
    uv run python -m benchmarks.soak --minutes 1 --stacks 90             # what the test suite runs
    uv run python -m benchmarks.soak --minutes 3 --stacks 200 --workers 2 --executor dask   # a plain Dask cluster

A simulated rig writes scans the way OpenScan3 does (final names written directly, positions out of order, frames
of a position together, scan.json rewritten atomically after each position) while faults are injected; the daemon
archives each stack's inputs after its result (``results.after_success = "archive"``). Faults of the night:

- the daemon killed with SIGKILL, stopped with SIGTERM, and Ctrl-C'd (SIGINT to its whole process group) while
  stacks run -- each time restarted; a second ``run`` and a ``once`` started beside it (must be refused);
- workers killed mid-stack; a burst faster than the pool drains; stacks deleted while queued;
- corrupt frames (truncated, garbage, empty, wrong size, a 20000x20000 decompression bomb), a frame written
  slowly, a stack that never gets all its frames;
- a stack copied in with its old mtimes (``cp -p``), a scan paused mid-position past the stack timeout;
- a frame replaced while its stack is being fused (it must not be archived unstacked); a result deleted (it
  must be made again); malformed records where the next stacks' records go;
- a frame unreadable (EACCES) for a while (it must wait, not fail); a scan zip with a member that inflates to
  512 MiB; a FIFO and a link to /dev/zero as scan.json, symlinked frames (one to /dev/zero) and a FIFO frame;
- a symlink out of the hot folder and names trying path traversal; as root, a results folder that turns
  read-only and one that fills up (a small tmpfs), and a tiny inotify queue so events overflow.

With ``--executor dask`` the stacks run on a plain Dask cluster on this machine (``dask scheduler`` and
``--workers`` times ``dask worker``, no ``--resources``: benchmarks/local_dask.py), started and stopped by the night
itself, and the faults of the cluster replace the local worker kills: a worker killed mid-stack (twice), and the
scheduler stopped and started again once, its workers with it (as their units' ``Restart=always`` would).

The reconciliation (benchmarks/soak_report.py) counts, per planned stack, what the results folder, the archive
and the daemon's log say happened.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from benchmarks.local_dask import Cluster
from benchmarks.soak_report import CORRUPTIONS, Planned, output_of, read_record, reconcile, records, report
from benchmarks.synthetic import make_focal_stack
from benchmarks.unprivileged import unprivileged
from watcher.names import display

FRAMES = 3
# Names that try to climb out of the results folder through the regex's stack group.
TRAVERSAL_NAMES = ("a\\..\\..\\evil_fs00.jpg", "..\\escape_fs00.jpg")
SETTLE, STACK_TIMEOUT = 1.0, 8.0
_KERNEL_DEFAULT_QUEUED_EVENTS = "16384"
# Held exclusively while the system-wide inotify queue limit is lowered; other daemons started meanwhile (the
# tests' own, in other processes) take it shared, so they never start with the small queue.
INOTIFY_KNOB_LOCK = Path("/tmp/focus-watcher-soak-inotify.lock")
# As root, the daemon runs without the capabilities that bypass file permissions, as the service user does.
# The project every scan of the night is in: a name as odd as cameras, Samba shares and USB sticks make (a
# latin-1 byte that is not UTF-8, spaces, URL and HTML specials), so every stack's log lines, records, results,
# archive and report pages carry one.
PROJECT = os.fsdecode(b"proj caf\xe9 #1 ?%&<'")


@dataclass
class Night:
    root: Path
    minutes: float
    stacks: int
    workers: int
    burst: int = 30  # stacks written at once, faster than any pool drains
    executor: str = "local"  # or "dask": a plain Dask cluster of ``workers`` workers, started by the night
    seed: int = 0
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)

    def __post_init__(self) -> None:
        self.hot, self.results, self.outside = self.root / "hot", self.root / "results", self.root / "outside"
        self.archive = self.root / "archive"
        self.cluster = Cluster(self.root / "cluster", prefix=unprivileged([])) \
            if self.executor == "dask" else None
        self.plan: dict[str, Planned] = {}
        self.counts = Counter()
        self.rss: list[tuple[float, int]] = []  # (time, daemon RSS kB) of the current incarnation
        self.rss_runs: list[list[tuple[float, int]]] = []
        self.peak_kb = 0
        self.daemon: subprocess.Popen | None = None
        # A restart and the second daemons' check take turns: a ``once`` that reaches the lock while the daemon is
        # down takes it, rightly, and the restarted daemon is then the one refused.
        self.lifecycle = threading.Lock()
        self.notify = Notifications(self.root / "notify.sock")
        self.rng = random.Random(self.seed)
        case = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=FRAMES, seed=self.seed)
        self.frame_bytes = list(case.jpeg_bytes)
        big = make_focal_stack("coffee_tilt", size=(1600, 1200), n_frames=FRAMES + 1, seed=self.seed)
        self.big_bytes = list(big.jpeg_bytes)  # ~1 s of stacking: long enough to replace a frame meanwhile
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
        cluster = f'executor = "dask"\ndask_scheduler = "{self.cluster.address}"\n' if self.cluster else ""
        path.write_text(
            f'hot_folder = "{self.hot}"\nresults_folder = "{self.results}"\n'
            "[naming]\nmode = \"regex\"\npattern = '(?P<stack>.+)_fs(?P<frame>\\d+)'\n"
            f"stack_size = {FRAMES}\n"
            f"[completeness]\nsettle_seconds = {SETTLE}\nstack_timeout_seconds = {STACK_TIMEOUT}\n"
            "[observer]\nrescan_seconds = 5.0\n"
            f"[workers]\ncount = {self.workers}\nqueue_size = 8\nstop_grace_seconds = 10.0\n{cluster}"
            f'[results]\nafter_success = "archive"\narchive_folder = "{self.archive}"\n'
            "[logging]\nfile_max_bytes = 200000000\n"
        )
        return path

    def command(self, what: str = "run") -> list[str]:
        argv = [sys.executable, "-m", "watcher.cli", what, "--config", str(self.config())]
        return unprivileged(argv)

    def start(self) -> None:
        """Start the daemon as systemd would (NOTIFY_SOCKET, a 4 s watchdog) and wait for READY=1."""
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "4000000"}
        with self._small_inotify_queue():
            self.notify.new_run()
            with open(self.root / "daemon.stderr", "ab") as stderr:
                self.daemon = subprocess.Popen(self.command(), stderr=stderr, start_new_session=True, env=env)
            _wait(lambda: self.notify.ready >= self.counts["starts"] + 1, 180)  # a safety net for loaded machines
        self.counts["starts"] += 1
        self.rss = []
        self.rss_runs.append(self.rss)

    def stop(self, how: signal.Signals) -> None:
        """SIGKILL to the process group (a power cut), SIGTERM to the daemon (systemd), SIGINT to the group
        (Ctrl-C in a terminal): the last two must let running stacks finish and exit 0."""
        assert self.daemon is not None
        if how == signal.SIGTERM:
            self.daemon.send_signal(how)
        else:
            os.killpg(self.daemon.pid, how)
        code = self.daemon.wait(timeout=60)
        if how != signal.SIGKILL and code != 0:
            raise RuntimeError(f"daemon exited {code} on {how.name}")
        self.counts[how.name.lower()] += 1

    def second_daemons(self) -> None:
        """A second ``run`` and a ``once`` beside the running daemon: each must exit 2 at once."""
        with self.lifecycle:
            for what in ("run", "once"):
                self.counts["second_daemons"] += 1
                done = subprocess.run(self.command(what), capture_output=True, text=True, timeout=60, check=False)
                self.counts["second_daemons_refused"] += done.returncode == 2 and "is in use" in done.stderr

    def kill_a_worker(self) -> bool:
        workers = [pid for pid in _descendants(self.daemon.pid) if _is_stacking_worker(pid)]
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
                self.peak_kb = max(self.peak_kb, _status_kb(daemon.pid, "VmHWM"))
                if rss:
                    self.rss.append((time.monotonic(), rss))

    def peak_rss_mb(self) -> float:
        return max(self.peak_kb, max((r for run in self.rss_runs for _, r in run), default=0)) / 1024

    @contextlib.contextmanager
    def _small_inotify_queue(self):
        """As root: a 64-event inotify queue for the daemon's instance, so event overflows really happen.

        The knob is system-wide: nights running at once (other checkouts on one machine) take turns under a lock,
        so none restores another's 64 as "the old value"; a 64 found there is such a leftover, and the kernel's
        default is restored instead.
        """
        knob = Path("/proc/sys/fs/inotify/max_queued_events")
        if not self.as_root:
            yield
            return
        with open(INOTIFY_KNOB_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = knob.read_text().strip()
            knob.write_text("64")
            try:
                yield
                time.sleep(1.5)  # the daemon creates its inotify instance while the limit is low
            finally:
                knob.write_text(old if old != "64" else _KERNEL_DEFAULT_QUEUED_EVENTS)

    # --- the rig -------------------------------------------------------------------------------------------

    def planned(self, scan: Path, name: str, fault: str = "", expect: str = "ok") -> Planned:
        planned = Planned(f"{scan.relative_to(self.hot).as_posix()}/{name}", expect, fault)
        self.plan[planned.stack] = planned
        return planned

    def write_stack(self, scan: Path, name: str, fault: str = "") -> Planned:
        planned = self.planned(scan, name, fault, "failed" if fault in CORRUPTIONS else "ok")
        frames = FRAMES if fault not in ("incomplete", "paused") else 1 if fault == "incomplete" else 2
        for k in range(frames):
            path = scan / f"{name}_fs{k:02d}.jpg"
            planned.frames.append(path.name)
            data = self.corrupt[fault] if fault in CORRUPTIONS and k == 1 else self.frame_bytes[k]
            if fault == "slow" and k == frames - 1:
                threading.Thread(target=_write_slowly, args=(path, data), daemon=True).start()
            else:
                path.write_bytes(data)  # final name, written directly: what OpenScan3 does
        return planned

    def night(self) -> None:
        """Write all scans at a steady rate, with faults at fixed points of the night."""
        self.hot.mkdir(parents=True)
        self.results.mkdir(parents=True)
        tmpfs = self.as_root and _mount_tmpfs(self.results, 512)
        self.counts["tmpfs"] = int(bool(tmpfs))
        stop_sampling = threading.Event()
        threading.Thread(target=self.sample_rss, args=(stop_sampling,), daemon=True).start()
        try:
            if self.cluster:
                self._start_cluster()
            self.start()
            self._write_night(tmpfs)
            self._wait_until_done()
            self.stop(signal.SIGTERM)
        finally:
            stop_sampling.set()
            if self.daemon is not None and self.daemon.poll() is None:
                os.killpg(self.daemon.pid, signal.SIGKILL)
            if self.cluster:
                self.cluster.close()
            self.rows, self.failures, self.duplicates = reconcile(self)
            self.worker_peaks = [r.get("worker_peak_rss_mb", 0) for r in records(self.results)]
            if tmpfs:
                _unmount_all(self.results)

    def _write_night(self, tmpfs: bool) -> None:
        per_scan = 40
        scans = max(1, -(-self.stacks // per_scan))
        interval = self.minutes * 60 / self.stacks
        faults = self._fault_schedule(tmpfs)
        index = 0
        start = time.monotonic()
        for s in range(scans):
            scan = self.hot / PROJECT / f"scan{s + 1:02d}"
            scan.mkdir(parents=True)
            positions = list(range(min(per_scan, self.stacks - index)))
            self.rng.shuffle(positions)  # the path optimiser's order
            for step, position in enumerate(positions):
                fault = faults.get(index, "")
                name = f"scan{s + 1:02d}_{position:03d}"
                self._fault(fault, scan, name, position)
                if fault not in ("copied", "replaced", "unreadable", "paused", "kill_dask_worker"):
                    self.write_stack(scan, name, fault if fault in (*CORRUPTIONS, "slow", "incomplete") else "")
                if fault == "delete":
                    self._delete_soon(scan, name)
                _write_scan_json(scan, "running", step + 1)
                index += 1
                time.sleep(max(0.0, start + index * interval - time.monotonic()))
            _write_scan_json(scan, "completed", len(positions))

    def _fault(self, fault: str, scan: Path, name: str, position: int) -> None:
        """The faults that happen beside (or instead of) writing this position's stack."""
        if fault == "burst":
            self._burst(scan, position)
        elif fault in ("sigkill", "sigterm", "sigint"):
            with self.lifecycle:
                self.stop(signal.Signals[fault.upper()])
                self.start()
        elif fault == "kill_worker":
            _wait(self.kill_a_worker, 20, fail=False)
        elif fault == "kill_dask_worker":
            self._big_stack(scan, name, fault, self._kill_its_worker, after="stack.running")
        elif fault == "restart_scheduler":
            threading.Thread(target=self._restart_scheduler, daemon=True).start()
        elif fault == "readonly":
            threading.Thread(target=self._read_only_for, args=(15,), daemon=True).start()
        elif fault == "full":
            threading.Thread(target=self._full_for, args=(15,), daemon=True).start()
        elif fault == "hostile":
            self._hostile_files()
        elif fault == "second_daemon":
            threading.Thread(target=self.second_daemons, daemon=True).start()
        elif fault == "copied":
            threading.Thread(target=self._copy_old, args=(scan, name), daemon=True).start()
        elif fault == "paused":
            self._paused(scan, name)
        elif fault == "replaced":
            self._big_stack(scan, name, fault, self._replace).runs = 2
        elif fault == "unreadable":
            self._big_stack(scan, name, fault, self._unreadable)
        elif fault == "zip":
            self._scan_zip()
        elif fault == "malformed":
            self._malformed_records(scan)
        elif fault == "result_deleted":
            self._delete_a_result()

    def _fault_schedule(self, tmpfs: bool) -> dict[int, str]:
        """Stack index -> fault. Each fault at its fraction of the night, or the next free stack after it."""
        schedule: dict[int, str] = {}

        def place(fraction: float, fault: str) -> None:
            index = int(self.stacks * fraction)
            while index in schedule:
                index += 1
            schedule[index] = fault

        for fraction, fault in ((0.12, "hostile"), (0.14, "copied"), (0.16, "malformed"), (0.20, "sigkill"),
                                (0.25, "zip"), (0.30, "burst"), (0.33, "second_daemon"), (0.35, "kill_worker"),
                                (0.40, "slow"), (0.45, "sigkill"), (0.48, "sigint"), (0.80, "result_deleted"),
                                (0.55, "delete"), (0.56, "delete"), (0.58, "paused"), (0.60, "sigterm"),
                                (0.65, "incomplete"), (0.70, "sigkill"), (0.85, "kill_worker"), (0.92, "replaced"),
                                (0.96, "unreadable")):
            place(fraction, fault)
        for offset, corruption in enumerate(c for c in CORRUPTIONS if c != "zip_bomb"):
            place(0.10 + offset / self.stacks, corruption)
            place(0.75 + offset / self.stacks, corruption)
        if tmpfs:
            place(0.50, "readonly")
            place(0.78, "full")
        if self.cluster:  # the cluster's faults instead of the local pool's
            schedule = {i: "kill_dask_worker" if f == "kill_worker" else f for i, f in schedule.items()}
            place(0.38, "restart_scheduler")
        return schedule

    def _burst(self, scan: Path, avoid: int) -> None:
        """``burst`` stacks at once (positions 900+), faster than any pool drains; some deleted while queued."""
        for b in range(self.burst):
            planned = self.write_stack(scan, f"{scan.name}_{900 + b:03d}")
            if b % 10 == 9:
                planned.expect = "ok_or_absent"
                threading.Timer(1.5, self._delete, args=(scan, planned)).start()
        self.counts["burst"] += self.burst

    def _delete_soon(self, scan: Path, name: str) -> None:
        planned = self.plan[f"{scan.relative_to(self.hot).as_posix()}/{name}"]
        planned.expect = "ok_or_absent"
        threading.Timer(0.5, self._delete, args=(scan, planned)).start()

    def _delete(self, scan: Path, planned: Planned) -> None:
        for frame in planned.frames:
            (scan / frame).unlink(missing_ok=True)
        self.counts["deleted_stacks"] += 1

    def _copy_old(self, scan: Path, name: str) -> None:
        """``cp -p`` of a stack taken three hours ago, one frame every 1.5 s (longer than the settle time)."""
        planned = self.planned(scan, name, "copied")
        card = self.outside / "card"
        card.mkdir(parents=True, exist_ok=True)
        then = time.time() - 3 * 3600
        for k in range(FRAMES):
            source = card / f"{name}_fs{k:02d}.jpg"
            source.write_bytes(self.frame_bytes[k])
            os.utime(source, (then, then + k))
            planned.frames.append(source.name)
        for k in range(FRAMES):
            shutil.copy2(card / planned.frames[k], scan / planned.frames[k])
            time.sleep(1.5)

    def _paused(self, scan: Path, name: str) -> None:
        """OpenScan3 paused between two frames of a position, past the stack timeout, then resumed."""
        _write_scan_json(scan, "paused", 0)
        planned = self.write_stack(scan, name, "paused")
        time.sleep(SETTLE + STACK_TIMEOUT + 2)
        (scan / f"{name}_fs02.jpg").write_bytes(self.frame_bytes[2])
        planned.frames.append(f"{name}_fs02.jpg")

    def _big_stack(self, scan: Path, name: str, fault: str, then, after: str = "stack.started") -> Planned:
        """A stack of large frames (~1 s of stacking); ``then(scan, name, tail, event)`` runs once the daemon has
        logged ``event``, its ``after`` line (the stack started; on a cluster, ``stack.running``: it runs there)."""
        planned = self.planned(scan, name, fault)
        tail = LogTail(self.root / "daemon.stderr")
        for k in range(FRAMES):
            (scan / f"{name}_fs{k:02d}.jpg").write_bytes(self.big_bytes[k])
            planned.frames.append(f"{name}_fs{k:02d}.jpg")

        def wait_then() -> None:
            found: list[dict] = []
            if _wait(lambda: found.extend(tail.found(after, planned.stack)) or found, 120, fail=False):
                then(scan, name, tail, found[0])

        threading.Thread(target=wait_then, daemon=True).start()
        return planned

    def _start_cluster(self) -> None:
        """The scheduler and ``workers`` plain workers (no memory resource declared), all connected."""
        self.cluster.root.mkdir()
        self.cluster.start_scheduler()
        for k in range(self.workers):
            self.cluster.start_worker(f"w{k + 1}", None)
        self.cluster.wait_for_workers(self.workers)

    def _kill_its_worker(self, scan: Path, name: str, tail: LogTail, running: dict) -> None:
        """SIGKILL to the Dask worker process running this stack, mid-stack: its nanny starts a new one, the
        scheduler runs the stack again (the daemon counts the run: ``stack.retry``)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(running["pid"], signal.SIGKILL)
            self.counts["workers_killed"] += 1

    def _restart_scheduler(self) -> None:
        """``dask scheduler`` stopped (SIGTERM) and started again at the same address; meanwhile each ``dask
        worker`` that ends (they end without a scheduler) is started again, as its unit's ``Restart=always``
        would, until the new scheduler has them all."""
        self.cluster.stop_scheduler()
        self.cluster.start_scheduler()

        def all_back() -> bool:
            for name, process in list(self.cluster.workers.items()):
                if process.poll() is not None:
                    self.cluster.start_worker(name, None)
            with contextlib.suppress(OSError):
                return len(self.cluster.info()) >= self.workers
            return False

        if _wait(all_back, 180, fail=False, interval=0.5):
            self.counts["scheduler_restarts"] += 1

    def _replace(self, scan: Path, name: str, tail: LogTail, _started: dict) -> None:
        """Frame 1 rewritten with other content while its stack is fused: it must not be archived unstacked."""
        (scan / f"{name}_fs01.jpg").write_bytes(self.big_bytes[FRAMES])
        self.counts["frames_replaced"] += 1

    def _unreadable(self, scan: Path, name: str, tail: LogTail, _started: dict) -> None:
        """EACCES on the frames a worker reads last (a permission fixed later): the stack waits, then succeeds."""
        ends = [scan / f"{name}_fs{k:02d}.jpg" for k in (0, FRAMES - 1)]
        for path in ends:
            path.chmod(0)
        _wait(lambda: tail.seen("inputs.unavailable", f"{scan.relative_to(self.hot).as_posix()}/{name}"), 10,
              fail=False)
        time.sleep(2)
        for path in ends:
            path.chmod(0o644)
        self.counts["unreadable_periods"] += 1

    def _scan_zip(self) -> None:
        """An OpenScan2-style scan zip: two good stacks and one whose first member inflates to 512 MiB."""
        zip_path = self.hot / PROJECT / "2024-01-01_00.00.00-owl.zip"
        temp = self.outside / zip_path.name
        temp.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for position in range(3):
                planned = Planned(f"{PROJECT}/{zip_path.name}/zip_{position:03d}", "ok")
                for k in range(FRAMES):
                    member = f"zip_{position:03d}_fs{k:02d}.jpg"
                    planned.frames.append(member)
                    if position == 1 and k == 0:
                        planned.expect, planned.fault = "failed", "zip_bomb"
                        with archive.open(member, "w", force_zip64=True) as handle:
                            handle.write(self.frame_bytes[0][:-2])
                            for _ in range(512):
                                handle.write(bytes(1 << 20))
                    else:
                        archive.writestr(member, self.frame_bytes[k])
                self.plan[planned.stack] = planned
        os.replace(temp, zip_path)

    def _malformed_records(self, scan: Path) -> None:
        """Records that are not ours where the next stacks' records go: a JSON list, no inputs, not JSON."""
        folder = self.results / scan.relative_to(self.hot)
        folder.mkdir(parents=True, exist_ok=True)
        for position, text in zip((950, 951, 952), ("[]", '{"stack": "x", "status": "ok"}', "{not json")):
            (folder / f"{scan.name}_{position}.json").write_text(text)
            self.write_stack(scan, f"{scan.name}_{position}")

    def _delete_a_result(self) -> None:
        """The result image of a stack done earlier, deleted (OpenScan's "delete photos"): it is made again.
        (A zip's stack: other stacks' inputs are archived, and with them gone there is nothing to stack.) The rig
        waits for one to be done: a read-only results folder or a restart may have held them back."""
        done: list[Planned] = []

        def find() -> list[Planned]:
            done.extend(p for p in self.plan.values() if p.expect == "ok" and p.runs == 1
                        and (record := read_record(self.results, p)) and record["status"] == "ok"
                        and p.stack.split("/")[1].endswith(".zip"))
            return done

        if _wait(find, 180, fail=False):
            planned = done[0]
            planned.runs, planned.fault = 2, "result_deleted"
            record = read_record(self.results, planned)
            (self.results / output_of(record)).unlink(missing_ok=True)
            self.counts["results_deleted"] += 1

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
        """Symlinks out of the hot folder and to /dev/zero, FIFOs as a frame and as scan.json, and names that
        try to climb out of the results folder."""
        self.outside.mkdir(exist_ok=True)
        for k in range(FRAMES):
            (self.outside / f"secret_{k}.jpg").write_bytes(self.frame_bytes[k])
        scan = self.hot / PROJECT / "scan01"
        (scan / "linked").symlink_to(self.outside, target_is_directory=True)
        for k in range(FRAMES):
            (scan / f"scan01_777_fs{k:02d}.jpg").symlink_to(self.outside / f"secret_{k}.jpg")
            (scan / f"scan01_778_fs{k:02d}.jpg").symlink_to("/dev/zero")
            os.mkfifo(scan / f"scan01_779_fs{k:02d}.jpg")
        for position in (777, 778, 779):
            self.plan[f"{PROJECT}/scan01/scan01_{position}"] = Planned(f"{PROJECT}/scan01/scan01_{position}", "absent",
                                                                  "symlink")
        for folder, make in (("fifo", os.mkfifo), ("zero", lambda p: p.symlink_to("/dev/zero"))):
            (self.hot / PROJECT / folder).mkdir()
            make(self.hot / PROJECT / folder / "scan.json")
        for name in TRAVERSAL_NAMES:
            (scan / name).write_bytes(self.frame_bytes[0])
        self.counts["hostile_files"] = 3 * FRAMES + 3 + len(TRAVERSAL_NAMES)

    def _wait_until_done(self) -> None:
        def settled() -> bool:
            """Every stack that must have a record has one, and each ok record's result is there (a deleted one
            made again)."""
            return all((record := read_record(self.results, p)) is not None
                       and (record["status"] != "ok" or (self.results / (output_of(record) or "")).is_file())
                       for p in self.plan.values() if p.expect in ("ok", "failed"))

        _wait(settled, 300, fail=False)
        time.sleep(3)  # let anything late (a rescan, a result made again) show up before stopping


class LogTail:
    """The daemon's stderr (JSON lines), read from where this tail started (not the whole file each time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.buffer = b""

    def seen(self, event: str, stack: str) -> bool:
        return bool(self.found(event, stack))

    def found(self, event: str, stack: str) -> list[dict]:
        """The lines of ``event`` about ``stack`` written since the last look."""
        with contextlib.suppress(OSError), open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
            self.offset += len(chunk)
            self.buffer += chunk
        lines = self.buffer.split(b"\n")
        self.buffer = lines.pop()
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event and entry.get("stack") == display(stack):
                    found.append(entry)
        return found


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


def run_night(root: Path, minutes: float, stacks: int, workers: int, burst: int = 30,
              executor: str = "local") -> Night:
    night = Night(root, minutes, stacks, workers, burst, executor)
    started = time.monotonic()
    night.night()
    night.seconds = time.monotonic() - started
    return night


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the rig writes")
    parser.add_argument("--stacks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--executor", choices=["local", "dask"], default="local",
                        help="dask: on a plain Dask cluster of --workers workers, started by the night")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        night = run_night(root, args.minutes, args.stacks, args.workers, executor=args.executor)
        print(report(night, night.seconds))


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


def _unmount_all(path: Path) -> None:
    """Undo every mount over ``path``: the night's tmpfs, and a read-only period's bind mount if its thread did not
    get to undo it (a thread whose remount failed, or one still sleeping when the test process exits); one left
    behind outlives the test and makes pytest's clean-up of old temporary folders warn on every later run."""
    for _ in range(4):
        if not os.path.ismount(path):
            return
        subprocess.run(["umount", "-l", str(path)], check=False)


def _mount_tmpfs(path: Path, megabytes: int) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _wait(predicate, timeout: float, fail: bool = True, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if fail:
                raise TimeoutError("timed out")
            return False
        time.sleep(interval)
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


def _is_stacking_worker(pid: int) -> bool:
    """A child of the daemon's forkserver (False if it ended meanwhile: workers come and go all night)."""
    try:
        return b"forkserver" in _cmdline(_parent(pid))
    except OSError:
        return False


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

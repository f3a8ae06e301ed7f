"""The daemon: observer -> tracker -> queue -> worker pool -> results, in one single-threaded loop.

Only this loop touches the tracker, the queue, the pool and the results folder; watchdog's thread just queues
raw events. Each pass is short (never blocks for more than a fraction of a second), so it also feeds the systemd
watchdog: if the loop hangs, the pings stop and systemd restarts the service.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from watcher.config import Settings
from watcher.service.naming import ScanInfo, parse_scan_json
from watcher.service.notify import SystemdNotifier
from watcher.service.observer import Event, Found, HotFolder, archive_members, excluded_results, start_watching
from watcher.service.pool import Finished, Job, WorkerPool
from watcher.service.results import ResultStore, UnsafePathError, build_record
from watcher.service.tracker import FileState, ReadyStack, StackTracker
from watcher.service.worker import JobSpec
from watcher.stacking.frames import FrameSource
from watcher.stacking.pipeline import estimate_peak_bytes
from watcher.stacking.probe import ProbeError, probe_image

log = structlog.get_logger("focus-watcher")

_TICK = 0.2  # s: longest wait of one loop pass
_UNWRITABLE_RETRY = 30.0  # s before retrying a stack whose result could not be written
_HEADER_BYTES = 256 << 10  # enough for any JPEG header, EXIF thumbnail included
_UNKNOWN_FRAME = (5472, 3648, 8)  # 20 MP: estimate used when the first frame's header cannot be read


@dataclass(frozen=True)
class _Context:
    ready: ReadyStack
    queued_at: float


class Daemon:
    """Watches ``settings.hot_folder`` and stacks every stack as it completes (or, ``once``, what is complete)."""

    def __init__(self, settings: Settings, *, once: bool = False, notifier: SystemdNotifier | None = None) -> None:
        self.settings = settings
        self.once = once
        self.notifier = notifier or SystemdNotifier()
        self.hot = settings.hot_folder.resolve()
        self.results = settings.results_folder.resolve()
        self.hot.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self.folder = HotFolder(self.hot, settings.naming.extensions, exclude=excluded_results(settings))
        self.store = ResultStore(self.results, settings.results, settings.stacking.output_format)
        self.tracker = StackTracker(settings.naming, settings.completeness)
        self.pool = WorkerPool(settings.workers.count, settings.workers.memory_budget_mb << 20,
                               settings.workers.stack_timeout_seconds)
        self.queue: collections.deque[Job] = collections.deque()
        self.events: queue.Queue[Event] = queue.Queue()
        self.archives: dict[str, Path] = {}  # zip scan -> zip path
        self.archive_states: dict[str, FileState] = {}
        self.counts = collections.Counter()
        self.stopping = False
        self._status = ""

    # --- lifecycle -----------------------------------------------------------------------------------------

    def run(self) -> int:
        removed = self.store.remove_stale_temp_files()
        log.info("daemon.start", hot=str(self.hot), results=str(self.results), workers=self.pool.workers,
                 memory_budget_mb=self.settings.workers.memory_budget_mb, once=self.once,
                 stale_temp_files_removed=removed)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        observer = None
        if not self.once:
            observer = start_watching(self.hot, self.settings.observer.mode,
                                      self.settings.observer.poll_interval_seconds, self.events)
        self.rescan()
        self.notifier.ready(f"watching {self.hot}")
        log.info("daemon.ready", observer=self.settings.observer.mode if observer else "none")
        next_rescan = time.monotonic() + self.settings.observer.rescan_seconds
        while not self.stopping:
            self._drain_events(_TICK if not self.pool.running else 0.0)
            for finished in self.pool.collect(timeout=0.0 if self.events.qsize() else _TICK / 2):
                self._finish(finished)
            if time.monotonic() >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.settings.observer.rescan_seconds
            self._recheck()
            self._report_unplaced()
            self._enqueue_ready()
            self._start_jobs()
            self._notify()
            if self.once and self._idle():
                break
        return self._shutdown(observer)

    def _stop(self, signum: int, _frame) -> None:
        first, self.stopping = not self.stopping, True  # flag first: a second signal may interrupt the log call
        if first:
            log.info("daemon.stopping", signal=signal.Signals(signum).name, running=self.pool.running,
                     queued=len(self.queue))

    def _shutdown(self, observer) -> int:
        self.notifier.stopping(f"finishing {self.pool.running} running stacks")
        if observer is not None:
            observer.stop()
        for job in self.queue:
            self.tracker.release(job.context["ctx"].ready.stack)
        self.queue.clear()
        for finished in self.pool.shutdown(self.settings.workers.stop_grace_seconds):
            self._finish(finished, stopping=True)
        if observer is not None:
            observer.join(timeout=5)
        log.info("daemon.stopped", done=self.counts["done"], failed=self.counts["failed"],
                 pending=self.tracker.pending())
        self.notifier.close()
        return 0

    def _idle(self) -> bool:
        """For ``once``: nothing running or queued, nothing ready, and no file still settling."""
        return not self.queue and not self.pool.running and not self.tracker.unsettled() and not self.tracker.ready()

    # --- noticing files ------------------------------------------------------------------------------------

    def rescan(self) -> None:
        """Walk the whole hot folder: files the events missed, and files that vanished."""
        started = time.monotonic()
        seen: dict[str, set[str]] = collections.defaultdict(set)
        for found in self.folder.walk():
            self._take(found, writing=None)
            if found.kind == "frame":
                seen[found.scan].add(found.name)
            elif found.kind == "archive":
                seen[found.scan] |= self.tracker.known(found.scan)
        for scan in self.tracker.scans():
            for name in self.tracker.known(scan) - seen.get(scan, set()):
                self.tracker.observe(scan, name, None)
        log.debug("scan.rescanned", seconds=round(time.monotonic() - started, 3), scans=len(seen))

    def _drain_events(self, timeout: float) -> None:
        inotify = self.settings.observer.mode == "inotify"
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return
        walk_all = False
        while True:
            if event.kind == "overflow" or (event.is_directory and event.kind == "deleted"):
                walk_all = True  # events were lost, or a whole folder went: one walk after the batch
            elif event.is_directory:
                if event.kind == "created" and event.path.is_dir() and not event.path.is_symlink():
                    for found in self.folder.walk(below=event.path):
                        self._take(found, writing=None)
            else:
                found = self.folder.locate(event.path)
                if found is not None:
                    # Open/close tracking only where events are precise (inotify); polling reports plain changes.
                    writing = {"modified": True, "closed": False}.get(event.kind) if inotify else None
                    self._take(found, writing=writing)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        if walk_all:
            log.info("observer.rescan", reason="events lost (inotify queue overflow) or a folder removed")
            self.rescan()

    def _take(self, found: Found, writing: bool | None) -> None:
        if found.kind == "frame":
            previous = self.tracker.state(found.scan, found.name)
            self.tracker.observe(found.scan, found.name, self.folder.look(found.path, previous), writing=writing)
        elif found.kind == "scan_json":
            self.tracker.set_scan_info(found.scan, _read_scan_json(found.path))
        else:
            self._take_archive(found.scan, found.path)

    def _take_archive(self, scan: str, path: Path) -> None:
        """An OpenScan2 scan zip is a whole scan: its members are its frames, read without extracting."""
        state = self.folder.look(path, self.archive_states.get(scan))
        if state is None:
            self.archives.pop(scan, None)
            self.archive_states.pop(scan, None)
            for name in self.tracker.known(scan):
                self.tracker.observe(scan, name, None)
            return
        changed = self.archive_states.get(scan) != state
        self.archives[scan], self.archive_states[scan] = path, state
        members = archive_members(path) if changed or not self.tracker.known(scan) else None
        if members is not None:
            names = {m.filename for m in members if self.folder.locate(path.parent / m.filename)}
            for name in self.tracker.known(scan) - names:
                self.tracker.observe(scan, name, None)
            sizes = {m.filename: m.file_size for m in members}
            for name in names:
                self.tracker.observe(scan, name, FileState(sizes[name], state.mtime_ns, True, state.age))
            self.tracker.set_scan_info(scan, ScanInfo(focus_stacks=None, status="completed"))
        else:
            for name in self.tracker.known(scan):  # unchanged zip: confirms its members
                previous = self.tracker.state(scan, name)
                self.tracker.observe(scan, name, FileState(previous.size, state.mtime_ns, True, state.age))

    def _scan_folder(self, scan: str) -> Path:
        return self.hot.joinpath(*scan.split("/"))  # "" -> the hot folder itself

    def _recheck(self) -> None:
        for scan, name in self.tracker.to_recheck():
            if scan in self.archives:
                self._take_archive(scan, self.archives[scan])
            else:
                found = Found("frame", scan, name, self._scan_folder(scan) / name)
                self._take(found, writing=None)

    def _report_unplaced(self) -> None:
        for scan, item in self.tracker.take_unplaced():
            log.warning("file.unplaced", scan=scan, file=item.name, reason=item.reason)

    # --- deciding and doing work ---------------------------------------------------------------------------

    def _enqueue_ready(self) -> None:
        for ready in self.tracker.ready():
            if len(self.queue) >= self.settings.workers.queue_size:
                return  # backpressure: it stays ready and is taken when the queue has room
            status = self.store.done(ready.stack, ready.signature)
            if status is not None:
                self.tracker.release(ready.stack, done=ready.signature)
                log.debug("stack.skipped", stack=str(ready.stack), status=status)
                continue
            log.info("stack.ready", stack=str(ready.stack), frames=len(ready.frames), reason=ready.reason,
                     expected=ready.expected)
            try:
                job = self._job(ready)
            except UnsafePathError as exc:
                self.tracker.release(ready.stack, done=ready.signature)
                log.error("stack.refused", stack=str(ready.stack), error=str(exc))
                continue
            self.tracker.claim(ready.stack)
            if job.estimate_bytes > self.pool.budget:
                now = time.time()
                self._record_failure(job, f"needs about {job.estimate_bytes >> 20} MiB, over the memory budget "
                                          f"of {self.pool.budget >> 20} MiB (workers.memory_budget_mb)", now, now)
                continue
            self.queue.append(job)
            log.info("stack.queued", stack=str(ready.stack), estimate_mb=job.estimate_bytes >> 20,
                     queued=len(self.queue))

    def _job(self, ready: ReadyStack) -> Job:
        paths = self.store.paths(ready.stack)
        scan = ready.stack.scan
        if scan in self.archives:
            sources = tuple(FrameSource(name, self.archives[scan], name) for name in ready.frames)
        else:
            sources = tuple(FrameSource(name, self._scan_folder(scan) / name) for name in ready.frames)
        stacking = self.settings.stacking
        width, height, bits = self._frame_size(sources[0])
        pixels = min(width * height, int(stacking.max_megapixels * 1e6))  # oversized frames fail fast anyway
        estimate = estimate_peak_bytes(pixels, 1, bits, stacking)
        spec = JobSpec(
            stack=str(ready.stack),
            sources=sources,
            image=paths.image,
            depthmap=paths.depthmap if stacking.depthmap else None,
            settings=stacking,
            memory_limit_bytes=estimate + estimate // 4,
            threads=max(1, (os.cpu_count() or 1) // self.pool.workers),
            daemon_pid=os.getpid(),
        )
        return Job(spec, estimate, context={"ctx": _Context(ready, time.time())})

    def _frame_size(self, source: FrameSource) -> tuple[int, int, int]:
        try:
            if source.member is None:
                with open(source.path, "rb") as handle:
                    head = handle.read(_HEADER_BYTES)
            else:
                head = source.read_bytes()[:_HEADER_BYTES]
            info = probe_image(head, whole_file=False)
            return info.width, info.height, info.bits
        except (OSError, ProbeError, ValueError):
            return _UNKNOWN_FRAME

    def _start_jobs(self) -> None:
        while self.queue and not self.stopping and self.pool.has_room_for(self.queue[0].estimate_bytes):
            job = self.queue.popleft()
            job.context["started_at"] = time.time()
            self.pool.start(job)
            log.info("stack.started", stack=job.spec.stack, attempt=job.attempt, running=self.pool.running)

    def _finish(self, finished: Finished, *, stopping: bool = False) -> None:
        job = finished.job
        ready: ReadyStack = job.context["ctx"].ready
        started, now = job.context.get("started_at", time.time()), time.time()
        if finished.kind == "ok":
            record = build_record(ready.stack, ready.signature, status="ok", reason=ready.reason,
                                  attempts=job.attempt, started_at=started, finished_at=now,
                                  output=job.spec.image.relative_to(self.results), engine=finished.record)
            if ready.expected is not None and len(ready.frames) != ready.expected:
                record["warnings"].append(f"{len(ready.frames)} frames where {ready.expected} were expected "
                                          f"(complete because: {ready.reason})")
            if self._write(ready, record):
                self.counts["done"] += 1
                log.info("stack.done", stack=job.spec.stack, seconds=round(finished.seconds, 2),
                         output=record["output"], warnings=len(record.get("warnings", [])))
                self._dispose(ready)
        elif finished.kind == "died" and stopping:
            self.tracker.release(ready.stack)  # stopped by us: stacked again at the next start
        elif finished.kind == "died" and job.attempt <= self.settings.workers.retries:
            log.warning("stack.retry", stack=job.spec.stack, error=finished.message, attempt=job.attempt)
            self.queue.appendleft(Job(job.spec, job.estimate_bytes, job.attempt + 1, job.context))
        elif finished.kind == "unwritable":
            self.tracker.release(ready.stack, retry_in=_UNWRITABLE_RETRY)
            log.error("results.unwritable", stack=job.spec.stack, error=finished.message)
        else:
            message = finished.message if finished.kind != "died" else (
                f"{finished.message} ({job.attempt} attempts)")
            self._record_failure(job, message, started, now)

    def _record_failure(self, job: Job, message: str, started: float, now: float) -> None:
        ready: ReadyStack = job.context["ctx"].ready
        if not all(self.folder.look(s.path) is not None for s in job.spec.sources):
            self.tracker.release(ready.stack)  # inputs deleted meanwhile: nothing to record against
            log.warning("stack.vanished", stack=job.spec.stack, error=message)
            return
        record = build_record(ready.stack, ready.signature, status="failed", reason=ready.reason,
                              attempts=job.attempt, started_at=started, finished_at=now, output=None, error=message)
        if self._write(ready, record):
            self.counts["failed"] += 1
            log.error("stack.failed", stack=job.spec.stack, error=message, attempts=job.attempt)

    def _write(self, ready: ReadyStack, record: dict) -> bool:
        try:
            self.store.write_record(ready.stack, record)
        except OSError as exc:
            self.tracker.release(ready.stack, retry_in=_UNWRITABLE_RETRY)
            log.error("results.unwritable", stack=str(ready.stack), error=f"cannot write the record: {exc}")
            return False
        self.tracker.release(ready.stack, done=ready.signature)
        return True

    def _dispose(self, ready: ReadyStack) -> None:
        scan = ready.stack.scan
        if scan in self.archives or self.settings.results.after_success == "keep":
            return  # a scan zip is the original archive of a whole scan: always kept
        folder = self._scan_folder(scan)
        try:
            action = self.store.dispose_inputs(scan, [folder / name for name in ready.frames])
        except OSError as exc:
            log.error("inputs.not_disposed", stack=str(ready.stack), error=str(exc))
            return
        log.info(f"inputs.{action}", stack=str(ready.stack), files=len(ready.frames))

    def _notify(self) -> None:
        status = (f"{self.pool.running} running, {len(self.queue)} queued, {self.counts['done']} done, "
                  f"{self.counts['failed']} failed")
        if status != self._status:
            self._status = status
            self.notifier.status(status)
        if self.notifier.watchdog_due(time.monotonic()):
            self.notifier.watchdog()


def _read_scan_json(path: Path) -> ScanInfo | None:
    try:
        return parse_scan_json(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None

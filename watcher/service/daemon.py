"""The daemon: observer -> tracker -> queue -> executor -> results, in one single-threaded loop.

Only this loop touches the tracker, the queue, the executor and the results folder; watchdog's thread just
queues raw events. The daemon orchestrates; the decisions are made elsewhere: the intake notices files and tells
the tracker (:mod:`~watcher.service.intake`), the tracker decides what is ready, the job builder sizes the work
(:mod:`~watcher.service.jobs`), the executor runs it (:mod:`~watcher.service.executor`), the policy decides what a
finished run comes to (:mod:`~watcher.service.policy`), the placement says where outputs go
(:mod:`~watcher.service.placement`), the store says what is done and writes records
(:mod:`~watcher.service.records`), inputs are disposed of (:mod:`~watcher.service.inputs`), and the lock says
who owns the results folder (:mod:`~watcher.service.lock`).

Each pass is short (never blocks for more than a fraction of a second, however much the hot folder keeps), so it
also feeds the systemd watchdog: if the loop hangs, the pings stop and systemd restarts the service.
"""

from __future__ import annotations

import collections
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import structlog

from watcher.config import Settings
from watcher.record import Record, UnreadableRecord, record_from
from watcher.report import paths as report_paths
from watcher.report.build import PendingStack
from watcher.report.refresher import ReportRefresher
from watcher.service.executor import Executor, Finished, Job, WorkerId
from watcher.service.heap import return_free_memory
from watcher.service.inputs import InputsChanged, dispose_inputs
from watcher.service.intake import Intake
from watcher.service.jobs import ScanCalibrations, frame_sources, make_job
from watcher.service.lock import ResultsLock
from watcher.service.naming import StackId
from watcher.service.notify import SystemdNotifier
from watcher.service.observer import start_watching
from watcher.service.placement import UnsafeFolder, UnsafePathError
from watcher.service.policy import Verdict, decide
from watcher.service.pool import make_executor
from watcher.service.records import RecordStore, build_record
from watcher.service.status import report_pending
from watcher.service.tracker import ReadyStack, StackTracker
from watcher.stacking.probe import is_raw_name

log = structlog.get_logger("focus-watcher")

_TICK = 0.2  # s: longest wait of one loop pass
# s of one pass spent at most on each of: walking the hot folder, looking at settling files, deciding ready
# stacks. A rescan of 100 000 kept frames, or a start-up with 30 000 stacks to check, spreads over passes.
_WALK_BUDGET = _RECHECK_BUDGET = _DECIDE_BUDGET = 0.05
# Waits that are expected in normal operation (a frame being replaced, a share that blips) are warnings; the rest
# (results that cannot be written) need someone to look.
_WARNINGS = ("inputs.unavailable", "stack.vanished")
_UPLOAD_GAP = ("no image in stacked/: OpenScan3's cloud upload takes only stacked/ once a scan has results there, "
               "so this position will be missing from it (results.on_failure = \"sharpest_frame\" puts the "
               "sharpest frame there instead)")


@dataclass(frozen=True)
class _Context:
    ready: ReadyStack
    queued_at: float


class Daemon:
    """Watches ``settings.hot_folder`` and stacks every stack as it completes (or, ``once``, what is complete).

    Raises :class:`~watcher.service.lock.ResultsBusy` if another daemon owns the results folder.
    """

    def __init__(self, settings: Settings, *, once: bool = False, notifier: SystemdNotifier | None = None,
                 executor: Executor | None = None) -> None:
        self.settings = settings
        self.once = once
        self._told_awaiting_timeout = False  # once: "waiting for the stack timeout" is logged the first time only
        self.notifier = notifier or SystemdNotifier()
        self.hot = settings.hot_folder.resolve()
        self.results = settings.results_folder.resolve()
        self.hot.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self.lock = ResultsLock(self.results).acquire()  # first: a second daemon must touch nothing
        try:
            self.pool = executor or make_executor(settings)
        except BaseException:
            self.lock.release()
            raise
        self.store = RecordStore.of(settings, self.results)
        self.placement = self.store.placement
        self.tracker = StackTracker(settings.naming, settings.completeness)
        self.intake = Intake(self.hot, settings, self.tracker)
        self.queue: collections.deque[Job] = collections.deque()
        self.outputs: dict[StackId, Record] = {}  # done stacks with outputs: checked after each walk
        self._outputs_to_check: Iterator[StackId] = iter(())
        self.counts = collections.Counter()
        self.calibrations = ScanCalibrations(settings.stacking.reuse_alignment == "scan")
        self.reporter = ReportRefresher(self.results, settings.results.layout)
        self.stopping = False
        self.passes = 0
        self.longest_pass_cpu = 0.0  # s of the main thread's CPU in its busiest pass: does any pass do too much?
        self._status = ""
        self.observer = None  # watchdog's observer, once started
        self.gave_up: str | None = None  # once: why it stopped before the work was done

    # --- lifecycle -----------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, ``once``, until idle, or until it gives up on an executor that cannot run
        anything). Returns the exit status: 1 if ``once`` left work failed or unfinished, else 0."""
        try:
            self.start()
            while not self.stopping:
                cpu = time.thread_time()
                self.step()
                self.passes += 1
                self.longest_pass_cpu = max(self.longest_pass_cpu, time.thread_time() - cpu)
                if self.once and (self._idle() or self._gives_up()):
                    break
            return self.shutdown()
        finally:
            self.lock.release()

    def start(self) -> None:
        """Clean up after a crash, start watching, begin the first walk of the hot folder (it goes on in slices of
        the passes that follow, however many files the hot folder keeps) and tell systemd we are ready."""
        tidied = self.store.tidy()
        log.info("daemon.start", hot=str(self.hot), results=str(self.results),
                 executor=self.settings.workers.executor, workers=self.pool.workers,
                 memory_budget_mb=self.settings.workers.memory_budget_mb, once=self.once,
                 stale_temp_files_removed=tidied.temp_files_removed, records_moved=tidied.records_moved,
                 record_folders_forgotten=tidied.record_folders_forgotten)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        if not self.once:
            self.observer = start_watching(self.hot, self.settings.observer.mode,
                                           self.settings.observer.poll_interval_seconds, self.intake.events)
        self.intake.start_walk()
        self.reporter.start(self._unfinished())
        self.notifier.ready(f"watching {self.hot}")
        log.info("daemon.ready", observer=self.settings.observer.mode if self.observer else "none")

    def step(self, wait: float = _TICK) -> None:
        """One pass of the loop: take events and finished stacks, decide, start work. Waits at most ``wait`` s."""
        self.intake.drain_events(wait if not self.pool.running else 0.0)
        self._forget_removed(self.intake.take_removed())
        for finished in self.pool.collect(timeout=0.0 if self.intake.events.qsize() else wait / 2):
            self._finish(finished)
        if not self.intake.walking and time.monotonic() >= self.intake.next_walk:
            self.intake.start_walk()
        if self.intake.continue_walk(_WALK_BUDGET):
            self._outputs_to_check = iter(list(self.outputs))
            if not self.queue and not self.pool.running:  # idle after a walk: what the loop freed goes back
                return_free_memory()
        self._check_outputs(_WALK_BUDGET)
        self.intake.recheck(_RECHECK_BUDGET)
        self.intake.report_unplaced()
        for stack in self.tracker.take_dropped():  # its files are gone: its result is no longer ours to watch
            self.outputs.pop(stack, None)
        self._enqueue_ready()
        self._start_jobs()
        self._notify()

    def _stop(self, signum: int, _frame) -> None:
        first, self.stopping = not self.stopping, True  # flag first: a second signal may interrupt the log call
        if first:
            log.info("daemon.stopping", signal=signal.Signals(signum).name, running=self.pool.running,
                     queued=len(self.queue))

    def shutdown(self) -> int:
        """Stop watching, let running stacks finish (up to workers.stop_grace_seconds), log, return the status."""
        self.notifier.stopping(f"finishing {self.pool.running} running stacks")
        observer = self.observer
        if observer is not None:
            observer.stop()
        for job in self.queue:
            self.tracker.release(job.context["ctx"].ready.stack)
        self.queue.clear()
        for finished in self.pool.shutdown(self.settings.workers.stop_grace_seconds):
            self._finish(finished, stopping=True)
        if observer is not None:
            observer.join(timeout=5)
        waiting = self.tracker.waiting()
        self.reporter.stop()
        log.info("daemon.stopped", done=self.counts["done"], failed=self.counts["failed"],
                 pending=self.tracker.pending(), waiting=waiting, passes=self.passes,
                 longest_pass_cpu_ms=round(self.longest_pass_cpu * 1000, 1))
        self.notifier.close()
        return 1 if self.once and (self.counts["failed"] or waiting or self.gave_up) else 0

    def _idle(self) -> bool:
        """For ``once``: nothing running or queued, nothing ready, no file still settling, and no stack that only
        the stack timeout can complete (a folder of finished stacks without a known count: each ``once`` sees its
        files for the first time, so it must wait the timeout out, or it would never stack them)."""
        if (self.queue or self.pool.running or self.tracker.unsettled() or self.intake.walking
                or next(self.tracker.ready(), None) is not None):
            return False
        timing_out = self.tracker.awaiting_timeout()
        if timing_out and not self._told_awaiting_timeout:
            self._told_awaiting_timeout = True
            log.info("once.awaiting_timeout", stacks=len(timing_out), first=str(timing_out[0]),
                     timeout_seconds=self.settings.completeness.stack_timeout_seconds)
        return not timing_out

    def _gives_up(self) -> bool:
        """For ``once``: the executor has been unable to run anything for longer than it waits (the cluster
        unreachable): exit with its reason (:attr:`gave_up`) rather than wait; no stack is marked failed."""
        reason = self.pool.unavailable()
        if reason is not None:
            self.gave_up = f"{reason}: nothing marked failed, the stacks are left for the next run"
            log.error("once.gave_up", error=self.gave_up, queued=len(self.queue), running=self.pool.running)
        return reason is not None

    def _check_outputs(self, budget: float) -> None:
        """A done stack whose result was deleted (by hand, or by OpenScan's "delete photos") is made again; one
        whose scan folder went (a project deleted in OpenScan3) takes its record, kept apart, with it.

        Every result is checked once after each walk of the hot folder, for up to ``budget`` s per pass.
        """
        deadline = time.perf_counter() + budget
        forgotten = []
        for stack in self._outputs_to_check:
            record = self.outputs.get(stack)
            if record is None:
                continue
            done = self.tracker.is_done(stack)  # if not, its inputs are gone or changed: no longer ours to watch
            if not done or not self.store.intact(record):
                del self.outputs[stack]
                if self._forget(stack):
                    forgotten.append((str(stack), self.placement.paths(stack).record))
                if done:
                    self.tracker.undo(stack)  # ready again: made again, and logged as result.missing, when it is taken
            if time.perf_counter() > deadline:
                break
        self._tell_forgotten(forgotten)

    def _forget(self, stack: StackId) -> bool:
        """Remove the record of a stack whose scan folder is gone (see :meth:`RecordStore.forget`)."""
        try:
            return self.store.forget(stack)
        except OSError as exc:  # read-only for now: the next start tidies it
            log.warning("record.not_forgotten", stack=str(stack), error=str(exc))
            return False

    def _forget_removed(self, folders: list[Path]) -> None:
        """The records kept apart (openscan layout) of the stacks below removed folders go with them."""
        forgotten = []
        for folder in folders:
            try:
                forgotten += self.store.forget_folder(folder)
            except OSError as exc:  # read-only for now: the next start tidies it
                log.warning("record.not_forgotten", folder=str(folder), error=str(exc))
        self._tell_forgotten(forgotten)

    def _tell_forgotten(self, forgotten: list[tuple[str, Path]]) -> None:
        """Log each record forgotten (stack, record path) and tell the report, which drops its pages."""
        for stack, _record in forgotten:
            log.info("record.forgotten", stack=stack, reason="its scan folder is gone")
        if forgotten:
            pending = self._unfinished()
            for _stack, record in forgotten:
                self.reporter.written(record, pending)

    # --- deciding and doing work ---------------------------------------------------------------------------

    def _enqueue_ready(self) -> None:
        deadline = time.monotonic() + _DECIDE_BUDGET
        for ready in self.tracker.ready():
            if len(self.queue) >= self.settings.workers.queue_size or time.monotonic() > deadline:
                return  # backpressure: it stays ready and is taken when the queue has room
            try:
                record = self.store.load(ready.stack)
            except UnreadableRecord as exc:
                log.warning("record.unreadable", stack=str(ready.stack), error=str(exc))
                record = None
            if record is not None and self.store.answers(record, ready.signature):
                if self.store.intact(record):
                    log.debug("stack.skipped", stack=str(ready.stack), status=record.status)
                    self._conclude(ready, record)
                    continue
                # Deleted by hand or by OpenScan's "delete photos", while we ran or while we were down.
                log.warning("result.missing", stack=str(ready.stack),
                            outputs=[path for path, _size in record.outputs])
            log.info("stack.ready", stack=str(ready.stack), frames=len(ready.frames), reason=ready.reason,
                     expected=ready.expected)
            job = self._job(ready)
            if job is None:
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

    def _job(self, ready: ReadyStack) -> Job | None:
        try:
            paths = self.placement.prepare(ready.stack, raw=all(is_raw_name(name) for name in ready.frames))
        except UnsafeFolder as exc:
            self._retry_later(ready, "results.unsafe", str(exc))
            return None
        except UnsafePathError as exc:
            self.tracker.release(ready.stack, done=ready.signature)
            log.error("stack.refused", stack=str(ready.stack), error=str(exc))
            return None
        except OSError as exc:
            self._retry_later(ready, "results.unwritable", str(exc))
            return None
        archive = self.intake.archives.get(ready.namespace)
        sources = frame_sources(ready, self.intake.path_of(ready.namespace), archive)
        record = self.placement.paths(ready.stack).record.relative_to(self.results).as_posix()
        thumbnails = (self.results / report_paths.thumbnail(record),
                      self.results / report_paths.depth_thumbnail(record))
        return make_job(ready, sources, paths, self.settings, self.pool.workers, {"ctx": _Context(ready, time.time())},
                        thumbnails=thumbnails)

    def _start_jobs(self) -> None:
        while self.queue and not self.stopping and self.pool.has_room_for(self.queue[0].estimate_bytes):
            job = self.queue.popleft()
            # The scan's calibration as it is now, not as it was when the job was queued: a folder of stacks found
            # at once (a copied scan, ``once``) reuses what its first stack learnt.
            job.spec = replace(job.spec, calibration=self.calibrations.get(job.context["ctx"].ready.stack.scan))
            job.context["started_at"] = time.time()
            self.pool.submit(job)
            log.info("stack.started", stack=job.spec.stack, attempt=job.attempt, running=self.pool.running)

    def _finish(self, finished: Finished, *, stopping: bool = False) -> None:
        """Carry out what :func:`~watcher.service.policy.decide` says about a stack whose run ended."""
        job, outcome = finished.job, finished.outcome
        ready: ReadyStack = job.context["ctx"].ready
        started, now = job.context.get("started_at", time.time()), time.time()
        decision = decide(outcome, job.attempt, self.settings.workers.retries, stopping=stopping)
        match decision.verdict:
            case Verdict.RECORD_OK:
                self._record_success(job, outcome.record, started, now, finished.seconds, outcome.worker)
            case Verdict.RECORD_FAILED:
                self._record_failure(job, decision.message, started, now, outcome.fallback, outcome.worker)
            case Verdict.RETRY:
                log.warning(decision.event, stack=job.spec.stack, error=outcome.message, attempt=job.attempt)
                self.queue.appendleft(Job(job.spec, job.estimate_bytes, job.attempt + 1, job.context))
            case Verdict.WAIT:
                if decision.relook:
                    self.intake.relook(ready)
                self._retry_later(ready, decision.event, outcome.message)
            case Verdict.RELEASE:
                self.tracker.release(ready.stack)

    def _retry_later(self, ready: ReadyStack, event: str, error: str) -> None:
        """Release ``ready`` to be tried again after the tracker's backoff (an error of the environment), and say
        so with ``event``."""
        delay = self.tracker.release(ready.stack, retry=True)
        level = log.warning if event in _WARNINGS else log.error
        level(event, stack=str(ready.stack), error=error, retry_in=delay)

    def _record_success(self, job: Job, engine: dict, started: float, now: float, seconds: float,
                        worker: WorkerId | None) -> None:
        ready: ReadyStack = job.context["ctx"].ready
        warnings = []
        if ready.expected is not None and len(ready.frames) != ready.expected:
            warnings.append(f"{len(ready.frames)} frames where {ready.expected} were expected "
                            f"(complete because: {ready.reason})")
        try:
            written = [path for path in (job.spec.image, job.spec.deep_image, job.spec.depthmap) if path is not None]
            outputs = self.store.output_sizes(written, masks=job.spec.masks)
        except OSError as exc:  # deleted the moment it was written: make it again
            self._retry_later(ready, "results.unwritable", f"result gone: {exc}")
            return
        record = build_record(ready.stack, ready.signature, status="ok", reason=ready.reason, attempts=job.attempt,
                              started_at=started, finished_at=now, outputs=outputs, engine=engine,
                              warnings=warnings)
        _add_worker(record, worker)
        self.calibrations.learn(ready.stack.scan, str(ready.stack), engine)
        if self._write(ready, record):
            self.counts["done"] += 1
            log.info("stack.done", stack=job.spec.stack, seconds=round(seconds, 2), output=record["output"],
                     warnings=len(record["warnings"]))

    def _record_failure(self, job: Job, message: str, started: float, now: float,
                        fallback: dict | None = None, worker: WorkerId | None = None) -> None:
        ready: ReadyStack = job.context["ctx"].ready
        if not all(self.intake.hot_folder.look(s.path) is not None for s in job.spec.sources):
            self._retry_later(ready, "stack.vanished", message)  # inputs deleted meanwhile: nothing to record
            return
        outputs, warnings = [], []
        if fallback is not None:
            try:
                outputs = self.store.output_sizes([job.spec.image])
            except OSError as exc:  # the fallback image deleted the moment it was written: try again
                self._retry_later(ready, "results.unwritable", f"fallback gone: {exc}")
                return
            fallback = {**fallback, "note": "the sharpest single frame, not a stack (results.on_failure)"}
        elif self.settings.results.layout == "openscan":
            warnings.append(_UPLOAD_GAP)
        record = build_record(ready.stack, ready.signature, status="failed", reason=ready.reason,
                              attempts=job.attempt, started_at=started, finished_at=now, outputs=outputs,
                              error=message, warnings=warnings, fallback=fallback)
        _add_worker(record, worker)
        if self._write(ready, record):
            self.counts["failed"] += 1
            log.error("stack.failed", stack=job.spec.stack, error=message, attempts=job.attempt,
                      fallback=fallback["frame"] if fallback else None, upload_gap=bool(warnings),
                      worker=worker.name if worker else None)

    def _write(self, ready: ReadyStack, record: dict) -> bool:
        try:
            self.store.write(ready.stack, record)
        except (OSError, UnsafeFolder) as exc:
            self._retry_later(ready, "results.unwritable", f"cannot write the record: {exc}")
            return False
        self._conclude(ready, record_from(record))
        self.reporter.written(self.placement.paths(ready.stack).record, self._unfinished())
        return True

    def _unfinished(self) -> list[PendingStack]:
        """The stacks still to do, for the report."""
        return report_pending(self.store, self.tracker.unfinished())

    def _conclude(self, ready: ReadyStack, record: Record) -> None:
        """``ready`` is done (``record`` on disk): dispose of its inputs if configured, then release it."""
        if record.status == "ok" and not self._dispose(ready, record):
            self.tracker.release(ready.stack, retry=True)  # the record stands; disposal is tried again
            return
        self.tracker.release(ready.stack, done=ready.signature)
        if record.outputs:
            self.outputs[ready.stack] = record

    def _dispose(self, ready: ReadyStack, record: Record) -> bool:
        """Archive or delete the inputs (``results.after_success``); False if that must be tried again."""
        if self.settings.results.after_success == "keep" or ready.namespace in self.intake.archives:
            return True  # a scan zip is the original archive of a whole scan: always kept
        try:
            action = dispose_inputs(self.settings.results, self.intake.path_of(ready.namespace), ready.namespace,
                                    record.signature)
        except InputsChanged as exc:
            log.warning("inputs.changed", stack=str(ready.stack), error=str(exc))
            self.intake.relook(ready)  # the new frame makes the stack pending again
            return True
        except OSError as exc:
            log.error("inputs.not_disposed", stack=str(ready.stack), error=str(exc))
            return False
        log.info(f"inputs.{action}", stack=str(ready.stack), files=len(ready.frames))
        return True

    def _notify(self) -> None:
        status = (f"{self.pool.running} running, {len(self.queue)} queued, {self.counts['done']} done, "
                  f"{self.counts['failed']} failed")
        if status != self._status:
            self._status = status
            self.notifier.status(status)
        if self.notifier.watchdog_due(time.monotonic()):
            self.notifier.watchdog()


def _add_worker(record: dict, worker: WorkerId | None) -> None:
    """Who ran the stack (``{"host", "name"}``), in its record: ok or failed, wherever it ran."""
    if worker is not None:
        record["worker"] = asdict(worker)

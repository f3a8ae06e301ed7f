"""The local executor, a pool of worker processes on this machine, and :func:`make_executor`, which picks the
executor the settings name (this pool, or the Dask cluster). The contract both implement is
:mod:`~watcher.service.executor`.

The local pool runs one process per stack, forked from a forkserver that has numpy and OpenCV loaded, rather than
a ``ProcessPoolExecutor``: when the OOM killer (or anyone) kills a worker, only that stack is affected -- an
executor would break and fail every pending job -- and each stack starts with fresh memory, so nothing leaks
from one stack into the next over a night.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import signal
import socket
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait

from watcher.config import ConfigError, Settings
from watcher.service.executor import Executor, Finished, Job, JobSpec, Outcome, OutcomeKind, WorkerId

# forkserver_init first: the forkserver ignores the process group's SIGINT/SIGTERM before anything else. numpy.ma:
# numpy imports it lazily, at the first np.percentile of a process -- in a forked worker, that is every stack's first
# (measured: 0.1-0.3 s of CPU per stack, as much as a small stack's whole engine time).
_FORKSERVER_PRELOAD = ["watcher.service.forkserver_init", "watcher.service.worker", "numpy.ma"]


def _run_stack(spec: JobSpec, send: Connection) -> None:
    """A worker's entry point. The worker is forked from the forkserver, which has loaded
    :mod:`watcher.service.worker` (and with it numpy, OpenCV and the pipeline) already: imported here, not at the
    top, so the daemon itself never loads the engine (0.4 s of CPU and 30 MiB resident less per daemon)."""
    from watcher.service.worker import run

    run(spec, send)


def make_executor(settings: Settings) -> Executor:
    """The executor ``settings.workers.executor`` names: this machine's pool, or the Dask cluster."""
    workers = settings.workers
    if workers.executor == "dask":
        try:
            from watcher.service.dask_executor import DaskExecutor
        except ImportError as exc:
            raise ConfigError(f'workers.executor: "dask" needs Dask distributed ({exc}): '
                              'pip install "focus-watcher[dask]"') from None
        return DaskExecutor(settings)
    return WorkerPool(workers.count, workers.memory_budget_mb << 20, workers.stack_timeout_seconds)


@dataclass
class _Running:
    job: Job
    process: multiprocessing.process.BaseProcess
    conn: Connection
    started: float
    outcome: Outcome | None = None


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_FORKSERVER_PRELOAD)
    # Start it now (importing numpy and OpenCV takes seconds on a Pi), not in the main loop at the first stack.
    multiprocessing.forkserver.ensure_running()
    return context


class WorkerPool:
    """The local :class:`Executor`: at most ``workers`` processes, estimated peaks summing to ``budget_bytes``."""

    def __init__(self, workers: int, budget_bytes: int, timeout_seconds: float) -> None:
        self.workers = workers
        self.budget = budget_bytes
        self.timeout = timeout_seconds
        self._context = _context()
        self._running: list[_Running] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def committed_bytes(self) -> int:
        return sum(r.job.estimate_bytes for r in self._running)

    def has_room_for(self, estimate_bytes: int) -> bool:
        """A free worker, and the estimate fits the budget (an idle pool always takes one stack)."""
        if len(self._running) >= self.workers:
            return False
        return not self._running or self.committed_bytes + estimate_bytes <= self.budget

    def submit(self, job: Job) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_run_stack, args=(job.spec, send), name=f"stack {job.spec.stack}")
        process.start()
        send.close()
        self._running.append(_Running(job, process, receive, time.monotonic()))

    def collect(self, timeout: float = 0.0) -> list[Finished]:
        """Finished stacks (waiting up to ``timeout`` s for the first); kills stacks past the timeout."""
        if not self._running:
            if timeout:
                time.sleep(timeout)
            return []
        wait([r.process.sentinel for r in self._running] + [r.conn for r in self._running], timeout)
        finished = []
        now = time.monotonic()
        for running in list(self._running):
            self._receive(running)
            if running.process.is_alive() and now - running.started > self.timeout:
                running.process.kill()
                running.process.join()
                timed_out = Outcome(OutcomeKind.TIMEOUT, f"timed out after {self.timeout:.0f} s")
                finished.append(self._finish(running, timed_out))
            elif not running.process.is_alive():
                running.process.join()
                self._receive(running)
                finished.append(self._result(running))
        return finished

    def shutdown(self, grace_seconds: float) -> list[Finished]:
        """Let running stacks finish for up to ``grace_seconds``, then kill the rest (reported as "died")."""
        finished = []
        deadline = time.monotonic() + grace_seconds
        while self._running and time.monotonic() < deadline:
            finished += self.collect(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
        for running in list(self._running):
            running.process.kill()
            running.process.join()
            finished.append(self._finish(running, Outcome(OutcomeKind.DIED, "stopped: the daemon shut down")))
        return finished

    def unavailable(self) -> str | None:
        """Never: this machine is always there."""
        return None

    def _receive(self, running: _Running) -> None:
        if running.outcome is None and running.conn.poll():
            with contextlib.suppress(EOFError, OSError):
                running.outcome = running.conn.recv()

    def _result(self, running: _Running) -> Finished:
        if running.outcome is not None:
            return self._finish(running, running.outcome)
        code = running.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (likely the kernel's OOM killer)" if -code == signal.SIGKILL else ""
            return self._finish(running, Outcome(OutcomeKind.DIED, f"worker killed by {name}{hint}"))
        return self._finish(running, Outcome(OutcomeKind.DIED, f"worker exited with status {code} without a result"))

    def _finish(self, running: _Running, outcome: Outcome) -> Finished:
        self._running.remove(running)
        running.conn.close()
        if outcome.worker is None:  # killed, timed out, died: the worker said nothing, but it ran there
            outcome = replace(outcome, worker=WorkerId(socket.gethostname(), f"local pid {running.process.pid}"))
        return Finished(running.job, outcome, time.monotonic() - running.started)

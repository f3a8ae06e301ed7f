"""The Dask executor: stacks run as tasks on a Dask distributed cluster, the daemon stays the only decider.

The daemon sees the same :class:`~watcher.service.executor.Executor` as with the local pool: it submits jobs and
collects outcomes. Everything cluster-shaped happens here:

- **Capacity.** At most as many stacks are in flight as the connected workers have threads; each task asks for
  its estimated peak memory as the resource ``memory``, so Dask never runs more on a worker than its memory
  holds, and a 64 MP stack never lands on a 4 GB Pi. Workers may declare theirs (``dask worker ... --resources
  memory=6e9``); a plain ``dask worker`` is given one from its memory limit when it joins
  (:func:`~watcher.service.dask_task.stack_memory`). A stack that no connected worker has the memory for fails
  with a record after ``workers.dask_wait_for_worker_seconds``; with no worker connected at all, it just waits.
- **Frames.** Workers read them by path (``workers.dask_path_map`` maps the daemon's prefixes to theirs), or the
  daemon reads them and ships the bytes (``workers.dask_frames = "ship"``), in a background thread.
- **Results.** A task returns the files it made as bytes; they are written here with the same atomic writer as
  everywhere, after checking that the inputs are still what was stacked -- a result for inputs that changed
  meanwhile is not written (the stack is looked at again and stacked anew).
- **Faults.** A worker that dies mid-stack: Dask runs the task again elsewhere; each run reports its start (event
  topic :data:`~watcher.service.dask_task.TOPIC`), so runs are counted, and past ``workers.retries`` extra runs
  the stack fails with a record. The scheduler down or unreachable: intake pauses (no room), it is logged, a
  background thread reconnects, and the stacks the cluster lost are submitted again -- none is marked failed.

Blocking calls to the cluster (connecting, asking for its workers, fetching results) happen in background
threads; the daemon's loop only reads their snapshots and submits, so it never waits on the network.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError, ThreadPoolExecutor
from concurrent.futures import Future as LocalFuture
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog
from distributed import Client, Future
from distributed.scheduler import KilledWorker

from watcher.atomic import write_atomic
from watcher.config import Settings
from watcher.names import display
from watcher.service.dask_cluster import KEY_PREFIX, Cluster, ClusterConnection
from watcher.service.dask_task import ShippedFrame, TaskResult, stack_task
from watcher.service.executor import Finished, Job, JobSpec, Outcome, OutcomeKind, WorkerId
from watcher.service.inputs import InputState, input_state
from watcher.stacking.sources import FrameError, FrameSource, max_file_bytes

log = structlog.get_logger("focus-watcher")

_FETCH_TIMEOUT = 120.0  # s: fetching a finished stack's result from its worker


@dataclass(eq=False)
class _Task:
    job: Job
    submitted: float  # monotonic: when the daemon submitted it
    key: str | None = None  # the current submission's key; None while it waits for the cluster
    future: Future | None = None
    client: Client | None = None  # the client it went through (a new client, after a loss, knows nothing of it)
    memory: int = 0  # bytes asked for as the "memory" resource
    prepared: LocalFuture | None = None  # "ship": its frames being read
    runs: list[dict] = field(default_factory=list)  # the starts the workers reported, oldest first
    running_since: float | None = None  # monotonic: the current run's start
    unrunnable_since: float | None = None  # monotonic: since when no connected worker has its memory


class DaskExecutor:
    """The :class:`~watcher.service.executor.Executor` that runs stacks on the Dask cluster at
    ``settings.workers.dask_scheduler``."""

    budget = sys.maxsize  # no budget here: each worker's memory resource bounds what it runs

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.workers
        self.max_pixels = int(settings.stacking.max_megapixels * 1e6)
        self._tasks: list[_Task] = []
        self._ended: list[Finished] = []  # ended outside collect(), returned by the next one
        self._wake = threading.Event()  # something came back: a start, a result, a change of the cluster
        self._results: queue.SimpleQueue[tuple[_Task, Future, object]] = queue.SimpleQueue()
        self._background = ThreadPoolExecutor(1, thread_name_prefix="focus-watcher-dask")
        self._unusable_since: float | None = time.monotonic()  # since when no connected worker takes stacks
        self.connection = ClusterConnection(self.settings.dask_scheduler, self._wake)

    # --- the Executor interface ----------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Task slots of the connected cluster (0 while it is unreachable)."""
        cluster = self.connection.connected()
        return cluster.threads if cluster else 0

    @property
    def running(self) -> int:
        return len(self._tasks)

    def has_room_for(self, estimate_bytes: int) -> bool:
        """A free slot on the connected cluster (memory is the scheduler's business: the task's resource)."""
        return len(self._tasks) < self.workers

    def submit(self, job: Job) -> None:
        task = _Task(job, time.monotonic())
        self._tasks.append(task)
        self._dispatch(task, self.connection.connected())

    def collect(self, timeout: float = 0.0) -> list[Finished]:
        if timeout and not self._ended and self.connection.starts.empty() and self._results.empty():
            self._wake.wait(timeout)
        self._wake.clear()
        finished, self._ended = self._ended, []
        now = time.monotonic()
        self._take_starts(now, finished)
        self._take_results(finished)
        cluster = self.connection.connected()
        if cluster is not None and cluster.threads:
            self._unusable_since = None
        elif self._unusable_since is None:
            self._unusable_since = now
        for task in list(self._tasks):
            if task.future is not None and (cluster is None or task.client is not cluster.client):
                if cluster is not None:  # connected again, through a new client: the old one's tasks are gone
                    log.warning("stack.requeued", stack=task.job.spec.stack, reason="the cluster connection was lost")
                    self._unsend(task)
                continue
            if task.future is None:
                self._dispatch(task, cluster)
            else:
                self._check(task, cluster, now, finished)
        finished += self._ended
        self._ended = []
        return finished

    def shutdown(self, grace_seconds: float) -> list[Finished]:
        """Let running stacks finish for up to ``grace_seconds`` (not while the cluster is unreachable: they
        cannot), then cancel the rest (reported as "died": stacked again at the next start)."""
        finished = []
        deadline = time.monotonic() + grace_seconds
        while self._tasks and time.monotonic() < deadline and self.connection.connected() is not None:
            finished += self.collect(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
        for task in list(self._tasks):
            finished.append(self._finish(task, Outcome(OutcomeKind.DIED, "stopped: the daemon shut down"), cancel=True))
        self._background.shutdown(wait=False, cancel_futures=True)
        self.connection.close()
        return finished

    def unavailable(self) -> str | None:
        """The scheduler unreachable, or no worker that takes stacks connected, for longer than
        ``workers.dask_wait_for_worker_seconds`` (as of the last :meth:`collect`)."""
        since, patience = self._unusable_since, self.settings.dask_wait_for_worker_seconds
        if since is None or time.monotonic() - since < patience:
            return None
        address = self.settings.dask_scheduler
        if self.connection.connected() is None:
            return (f"the Dask scheduler at {address} was unreachable for {patience:.0f} s "
                    f"({self.connection.error or 'no answer'})")
        return (f"no worker of the Dask cluster at {address} took stacks for {patience:.0f} s (none connected, "
                "or none can run focus-watcher: cluster.worker_unusable in the log)")

    # --- submitting ----------------------------------------------------------------------------------------

    def _dispatch(self, task: _Task, cluster: Cluster | None) -> None:
        """Submit ``task`` if the cluster is there (for "ship", once its frames are read)."""
        if cluster is None:
            return
        spec = task.job.spec
        if self.settings.dask_frames == "ship":
            if task.prepared is None:
                task.prepared = self._background.submit(self._ship, spec)
                return
            if not task.prepared.done():
                return
            prepared, task.prepared = task.prepared, None
            try:
                sources = prepared.result()
            except Exception as exc:  # noqa: BLE001 - FrameUnavailable, or an OSError of the environment
                self._ended.append(self._finish(task, Outcome(OutcomeKind.UNAVAILABLE, str(exc))))
                return
            shipped = sum(len(source.data) for source in sources)
        else:
            sources, shipped = tuple(self._mapped(source) for source in spec.sources), 0
        task.memory = task.job.estimate_bytes + shipped
        # A key travels as UTF-8 (msgpack): a name that is not UTF-8 goes in as shown, \xNN (status shows it so).
        task.key = f"{KEY_PREFIX}{display(spec.stack)}:{uuid.uuid4().hex[:12]}"
        try:
            future = cluster.client.submit(stack_task, replace(spec, sources=sources), cluster.threads_by_host(),
                                           key=task.key, resources={"memory": task.memory}, pure=False)
        except Exception as exc:  # noqa: BLE001 - the client closing under us: submitted again when it is back
            log.warning("cluster.submit_failed", stack=spec.stack, error=str(exc))
            task.key = None
            return
        task.future, task.client = future, cluster.client
        task.runs, task.running_since, task.unrunnable_since = [], None, None
        future.add_done_callback(lambda done, task=task: self._fetch(task, done))

    def _mapped(self, source: FrameSource) -> FrameSource:
        """``source`` as the workers see it. Without ``seen``: another host may see other mtimes for the same
        file (SMB keeps 100 ns, a local disk 1 ns); the daemon checks the inputs itself before writing."""
        return replace(source, path=worker_path(source.path, self.settings.dask_path_map), seen=None)

    def _ship(self, spec: JobSpec) -> tuple[ShippedFrame, ...]:
        """Read the frames here (background thread) to send them with the task."""
        frames = []
        for source in spec.sources:
            try:
                data, error = source.read_bytes(max_file_bytes(self.max_pixels)), None
            except FrameError as exc:  # bad content: the worker fails the stack as it would have
                data, error = b"", exc.reason
            frames.append(ShippedFrame(source.name, source.path, source.member, None, data=data, error=error))
        return tuple(frames)

    def _fetch(self, task: _Task, future: Future) -> None:
        """Done callback (Dask's callback thread): fetch the result, hand it to the loop."""
        try:
            value = future.result(timeout=_FETCH_TIMEOUT)
        except BaseException as exc:  # noqa: BLE001 - every way a future ends is an answer for the loop
            value = exc
        self._results.put((task, future, value))
        self._wake.set()

    # --- what comes back -----------------------------------------------------------------------------------

    def _take_starts(self, now: float, finished: list[Finished]) -> None:
        while not self.connection.starts.empty():
            start = self.connection.starts.get()
            task = next((t for t in self._tasks if t.key is not None and t.key == start.get("key")), None)
            if task is None:
                continue
            task.runs.append(start)
            task.running_since = now
            stack, run = task.job.spec.stack, len(task.runs)
            log.info("stack.running", stack=stack, worker=start["name"], host=start["host"], pid=start["pid"],
                     attempt=run)
            if run == 1:
                continue
            left = task.runs[-2]
            message = (f"worker {left['name']} on {left['host']} left mid-stack (killed, crashed, or restarted by "
                       "its nanny for going over its memory limit)")
            if run > 1 + self.settings.retries:
                task.job.attempt = run - 1
                finished.append(self._finish(task, Outcome(OutcomeKind.DIED, message, worker=_worker_of(left)),
                                             cancel=True))
            else:
                log.warning("stack.retry", stack=stack, error=message, attempt=run - 1)

    def _take_results(self, finished: list[Finished]) -> None:
        while not self._results.empty():
            task, future, value = self._results.get()
            if task not in self._tasks or task.future is not future:
                continue  # cancelled by us, or resubmitted since
            stack = task.job.spec.stack
            if isinstance(value, TaskResult):
                task.job.attempt = max(1, len(task.runs))
                finished.append(self._finish(task, self._deliver(task.job.spec, value)))
            elif isinstance(value, CancelledError):  # only the connection's loss cancels what we did not
                log.warning("stack.requeued", stack=stack, reason="the cluster lost it", error=str(value))
                self._unsend(task)
            elif isinstance(value, KilledWorker):  # the scheduler's own limit (allowed-failures) came first
                task.job.attempt = max(1, len(task.runs))
                last = getattr(value.last_worker, "address", value.last_worker)
                died = Outcome(OutcomeKind.DIED, f"every worker that ran it died (the last: {last})")
                finished.append(self._finish(task, died))
            elif isinstance(value, TimeoutError):
                log.warning("cluster.fetch_slow", stack=stack, seconds=_FETCH_TIMEOUT)
                future.add_done_callback(lambda done, task=task: self._fetch(task, done))
            else:  # the cluster could not run it at all (e.g. focus-watcher missing on a worker): wait, retry
                error = f"the cluster could not run it: {type(value).__name__}: {value}"
                log.error("cluster.task_error", stack=stack, error=error)
                finished.append(self._finish(task, Outcome(OutcomeKind.UNAVAILABLE, error)))

    def _deliver(self, spec: JobSpec, result: TaskResult) -> Outcome:
        """Write what the task made where the local worker would have, if its inputs are still the same."""
        if not result.outputs:
            return result.outcome
        changed = next((source.name for source in spec.sources if not _unchanged(source)), None)
        if changed is not None:
            return Outcome(OutcomeKind.UNAVAILABLE,
                           f"{changed} changed while the cluster stacked it: its result is not written",
                           worker=result.outcome.worker)
        try:
            for kind, path in spec.outputs().items():
                if kind in result.outputs:
                    write_atomic(path, result.outputs[kind])
        except OSError as exc:
            return Outcome(OutcomeKind.UNWRITABLE, f"cannot write the result: {exc}", worker=result.outcome.worker)
        return result.outcome

    def _check(self, task: _Task, cluster: Cluster, now: float, finished: list[Finished]) -> None:
        """Past its timeout, or unrunnable for want of a worker with its memory for too long: end it."""
        if task.running_since is not None and now - task.running_since > self.settings.stack_timeout_seconds:
            worker = task.runs[-1]["worker"]  # its address
            finished.append(self._finish(task, Outcome(OutcomeKind.TIMEOUT, f"timed out after "
                                                                f"{self.settings.stack_timeout_seconds:.0f} s"),
                                         cancel=True))
            self._background.submit(self._restart_worker, worker)  # its thread is stuck in the stack
            return
        if task.runs or not cluster.workers or cluster.largest_memory >= task.memory:
            task.unrunnable_since = None
            return
        if task.unrunnable_since is None:
            task.unrunnable_since = now
            log.warning("stack.waiting_for_memory", stack=task.job.spec.stack, needs_mb=task.memory >> 20,
                        largest_worker_mb=cluster.largest_memory >> 20)
        elif now - task.unrunnable_since > self.settings.dask_wait_for_worker_seconds:
            largest = cluster.largest_memory
            offer = (f"the largest offers {largest >> 20} MiB" if largest else
                     "none can run focus-watcher (cluster.worker_unusable in the log)")
            message = (f"needs about {task.memory >> 20} MiB, more than any worker of the cluster has: {offer} "
                       f"(a bigger worker: dask worker --memory-limit BYTES, or --resources memory=BYTES); waited "
                       f"{self.settings.dask_wait_for_worker_seconds:.0f} s for one")
            finished.append(self._finish(task, Outcome(OutcomeKind.FAILED, message), cancel=True))

    def _finish(self, task: _Task, outcome: Outcome, *, cancel: bool = False) -> Finished:
        """End ``task`` with ``outcome`` (said to have run on its latest run's worker, unless it says who)."""
        self._tasks.remove(task)
        if outcome.worker is None and task.runs:
            outcome = replace(outcome, worker=_worker_of(task.runs[-1]))
        if cancel and task.future is not None:
            with contextlib.suppress(Exception):  # the connection is gone: the scheduler forgot it anyway
                task.future.cancel()
        if task.prepared is not None:
            task.prepared.cancel()
        return Finished(task.job, outcome, time.monotonic() - task.submitted)

    def _unsend(self, task: _Task) -> None:
        task.key, task.future, task.client, task.prepared = None, None, None, None
        task.runs, task.running_since, task.unrunnable_since = [], None, None

    def _restart_worker(self, address: str) -> None:
        cluster = self.connection.connected()
        if cluster is not None:
            try:
                cluster.client.restart_workers([address], raise_for_error=False)
            except Exception as exc:  # noqa: BLE001 - gone already, or no nanny: nothing more to do
                log.warning("cluster.restart_failed", worker=address, error=str(exc))


def _worker_of(start: dict) -> WorkerId:
    """The worker a start report (:func:`~watcher.service.dask_task.stack_task`) came from."""
    return WorkerId(start["hostname"], start["name"])


def worker_path(path: Path, mapping: dict[str, str]) -> Path:
    """``path`` with the first prefix of ``mapping`` it lies under (whole components only) replaced."""
    for prefix, target in mapping.items():
        source = Path(prefix)
        if path == source or source in path.parents:
            return Path(target) / path.relative_to(source)
    return path


def _unchanged(source: FrameSource) -> bool:
    """The input is still the regular file (or zip) the daemon saw (:func:`~watcher.service.inputs.input_state`)."""
    if source.seen is None:
        return True
    try:
        return input_state(source.path, *source.seen, member=source.member is not None) is InputState.SAME
    except OSError:
        return False

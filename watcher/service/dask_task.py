"""What a Dask cluster worker runs for one stack: :func:`stack_task`, around the shared job function.

It runs :func:`watcher.service.worker.execute`, as a local worker process does, with what differs on another
machine:

- the frames are read where this worker sees them (the daemon maps the paths), or they come with the task as
  bytes (:class:`ShippedFrame`) when the worker cannot see the share;
- the outputs are written into a private scratch folder and returned as bytes: the daemon writes them into the
  results folder (which it alone owns) with the same atomic writer, once it has checked that the inputs are
  still the ones that were stacked;
- the start of each run is reported on the event topic :data:`TOPIC`, so that the daemon knows which worker runs
  which stack and how many runs a stack took (Dask runs a task again elsewhere when its worker dies);
- a worker that declares no memory resource is given one from its memory limit when it joins (:func:`take_stacks`),
  so that a plain ``dask worker`` takes stacks, never more at once than its memory holds;
- OpenCV gets this machine's share of its cores (the result does not depend on it).

This module is imported on the workers (focus-watcher must be installed there, the same version as the daemon's).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import dask
from distributed import Status, Worker, get_worker
from distributed.comm import get_address_host
from distributed.worker_memory import parse_memory_limit

from watcher import __version__
from watcher.names import display
from watcher.service.executor import JobSpec, Outcome
from watcher.service.worker import execute
from watcher.stacking.raw import set_libraw_threads
from watcher.stacking.sources import FrameError, FrameSource

TOPIC = "focus-watcher"
_OFFERED: dict[str, int] = {}  # worker address -> the memory resource take_stacks gave it (in this process)
_SCRATCH = Path("/dev/shm")  # memory-backed where it exists: nothing intermediate goes to a Pi's SD card


@dataclass(frozen=True)
class ShippedFrame(FrameSource):
    """A frame whose bytes the daemon read and sent with the task (``workers.dask_frames = "ship"``).

    ``error`` is the reason the daemon could not use the file (a symlink, too large): reading it raises the same
    :class:`~watcher.stacking.sources.FrameError` the worker would have met, so the stack fails the same way.
    """

    data: bytes = b""
    error: str | None = None

    def read_bytes(self, max_bytes: int) -> bytes:
        if self.error is not None:
            raise FrameError(self.name, self.error)
        if len(self.data) > max_bytes:
            raise FrameError(self.name, f"{len(self.data)} bytes, over the limit of {max_bytes}")
        return self.data

    def read_head(self, size: int) -> bytes:
        if self.error is not None:
            raise FrameError(self.name, self.error)
        return self.data[:size]


@dataclass(frozen=True)
class TaskResult:
    outcome: Outcome
    outputs: dict[str, bytes]  # by kind (JobSpec.outputs): the files the job wrote, as bytes


def stack_task(spec: JobSpec, host_threads: dict[str, int]) -> TaskResult:
    """Stack ``spec`` on this worker. ``host_threads``: task slots per host of the cluster (to size OpenCV)."""
    worker = get_worker()
    host = get_address_host(worker.address)
    name = worker.address if str(worker.name) == worker.address else f"{worker.name} ({worker.address})"
    # (the scheduler adds "worker": this worker's address; events travel as UTF-8, so the stack as shown)
    worker.log_event(TOPIC, {"key": worker.get_current_task(), "stack": display(spec.stack), "name": name,
                             "host": host, "hostname": socket.gethostname(), "pid": os.getpid()})
    threads = max(1, (os.cpu_count() or 1) // max(1, host_threads.get(host, worker.state.nthreads)))
    cv2.setNumThreads(threads)
    set_libraw_threads(threads)
    scratch = _SCRATCH if os.access(_SCRATCH, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="focus-watcher-", dir=scratch) as folder:
        local = spec.relocated(Path(folder))
        outcome = execute(local, worker=name, out_of_memory=f"out of memory on worker {name}")
        outputs = {kind: path.read_bytes() for kind, path in local.outputs().items() if path.is_file()}
    return TaskResult(outcome, outputs)


def worker_facts(dask_worker: Worker) -> dict:
    """What the daemon (and ``doctor``) asks a worker: ``{"version", "memory", "memory_from"}`` -- the
    focus-watcher version it runs, and the bytes of stacks it can hold at once, from :func:`stack_memory`."""
    memory, source = stack_memory(dask_worker)
    return {"version": __version__, "memory": memory, "memory_from": source}


async def take_stacks(dask_worker: Worker) -> dict:
    """Run by the daemon on each worker that joins: a worker that declares no memory resource is given one, what
    :func:`stack_memory` says it can hold, so that stacks are placed on it as on a worker that declares it.
    Returns :func:`worker_facts`."""
    memory, source = stack_memory(dask_worker)
    if source != "resource":
        await dask_worker.set_resources(memory=memory)
        _OFFERED[dask_worker.address] = memory
        if dask_worker.status == Status.running:
            # The scheduler looks again at the tasks no worker could take when a worker joins or resumes, not when
            # one's resources change: pausing and resuming this one makes it offer the waiting stacks to it.
            dask_worker.status = Status.paused
            dask_worker.status = Status.running
    return worker_facts(dask_worker)


def stack_memory(dask_worker: Worker) -> tuple[int, str]:
    """Bytes of stacks ``dask_worker`` can hold at once, and where that figure comes from:

    - ``"resource"``: its "memory" resource (``dask worker --resources memory=BYTES``), as declared;
    - ``"memory limit"``: up to where its nanny would kill it, ``--memory-limit`` times
      ``distributed.worker.memory.terminate`` (0.95): what a plain ``dask worker`` has, its machine's memory
      shared among the worker processes started together (``--nworkers``);
    - ``"machine"``: a worker started with no limit (``--memory-limit 0``) is taken to have what Dask gives a
      worker by default (its share of the machine's memory, or of its cgroup's), times that fraction: "no
      limit" does not mean the machine has more.

    That figure is shared by the stacks the worker runs at once (one per thread): the scheduler starts a
    stack only while the estimates of those running there leave room for it, so a stack is never given a
    worker too small for it, and one as big as a whole worker's memory still runs there, alone.
    """
    declared = dask_worker.state.total_resources.get("memory")
    if declared is not None and declared != _OFFERED.get(dask_worker.address):
        return int(declared), "resource"
    limit, source = dask_worker.memory_manager.memory_limit, "memory limit"
    if not limit:
        limit = parse_memory_limit("auto", dask_worker.state.nthreads, logger=logging.getLogger(__name__))
        source = "machine"
    return int(limit * (dask.config.get("distributed.worker.memory.terminate") or 1.0)), source

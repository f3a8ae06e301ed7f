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
- OpenCV gets this machine's share of its cores (the result does not depend on it).

This module is imported on the workers (focus-watcher must be installed there, the same version as the daemon's).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
from distributed import get_worker
from distributed.comm import get_address_host

from watcher import __version__
from watcher.service.executor import JobSpec, Outcome
from watcher.service.worker import execute
from watcher.stacking.frames import FrameError, FrameSource
from watcher.stacking.raw import set_libraw_threads

TOPIC = "focus-watcher"
_SCRATCH = Path("/dev/shm")  # memory-backed where it exists: nothing intermediate goes to a Pi's SD card


@dataclass(frozen=True)
class ShippedFrame(FrameSource):
    """A frame whose bytes the daemon read and sent with the task (``workers.dask_frames = "ship"``).

    ``error`` is the reason the daemon could not use the file (a symlink, too large): reading it raises the same
    :class:`~watcher.stacking.frames.FrameError` the worker would have met, so the stack fails the same way.
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
    # (the scheduler adds "worker": this worker's address)
    worker.log_event(TOPIC, {"key": worker.get_current_task(), "stack": spec.stack, "name": name, "host": host,
                             "pid": os.getpid()})
    threads = max(1, (os.cpu_count() or 1) // max(1, host_threads.get(host, worker.state.nthreads)))
    cv2.setNumThreads(threads)
    set_libraw_threads(threads)
    scratch = _SCRATCH if os.access(_SCRATCH, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="focus-watcher-", dir=scratch) as folder:
        local = replace(spec, **{kind: Path(folder, kind + path.suffix) for kind, path in spec.outputs().items()})
        outcome = execute(local, worker=name, out_of_memory=f"out of memory on worker {name}")
        outputs = {kind: path.read_bytes() for kind, path in local.outputs().items() if path.is_file()}
    return TaskResult(outcome, outputs)


def worker_version() -> str:
    """The focus-watcher version a worker runs (asked by the daemon when the worker joins)."""
    return __version__

"""What runs a stack, wherever it runs: :func:`execute`, the job function shared by every executor.

:func:`execute` is the only bridge between the daemon and the engine: it calls
:func:`watcher.stacking.pipeline.stack_to_file` with what the :class:`~watcher.service.executor.JobSpec` says and
sorts the result into an :class:`~watcher.service.executor.Outcome`. The local pool runs it in a worker process
(:func:`run`: one stack, under a memory limit, reported back over a pipe); the Dask executor runs it in a task
on a cluster worker (:mod:`watcher.service.dask_task`). So a field added to the job reaches the engine the same
way on both. Imported by the forkserver at start-up, so numpy and OpenCV are loaded once and each worker forks
ready to go.

Errors are sorted by what can fix them:

- the **content** (a truncated, garbage, mismatched or oversized frame, a symlink where a frame was): retrying
  cannot help, the stack fails with a record (``failed``);
- the **environment** while reading (permission denied, an I/O error, a share that blips, a frame replaced or
  removed since it was seen): the stack waits and is tried again (``unavailable``);
- the environment while writing (disk full, read-only): the same (``unwritable``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import threading
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection

import cv2

from watcher.atomic import write_atomic
from watcher.service.executor import JobSpec, Outcome, OutcomeKind, WorkerId
from watcher.stacking.pipeline import StackError, stack_to_file
from watcher.stacking.raw import set_libraw_threads
from watcher.stacking.sharpest import fallback_image, sharpest_frame
from watcher.stacking.sources import FrameError, FrameUnavailable


def run(spec: JobSpec, conn: Connection) -> None:
    """Worker process entry point. (SIGINT and SIGTERM are ignored from birth: see forkserver_init.)"""
    _end_with(spec.daemon_pid)
    limit = _limit_memory(spec.memory_limit_bytes)
    cv2.setNumThreads(spec.threads)
    set_libraw_threads(spec.threads)
    out_of_memory = f"out of memory: the stack needs more than the worker's limit of {limit >> 20} MiB"
    conn.send(execute(spec, worker=f"local pid {os.getpid()}", out_of_memory=out_of_memory))
    conn.close()


def execute(spec: JobSpec, *, worker: str, out_of_memory: str = "out of memory") -> Outcome:
    """Stack ``spec`` in this process: the result (or the fallback image) written to ``spec.image``.

    ``worker`` names this worker in the outcome (beside this machine's host name); ``out_of_memory`` is the
    message for a stack that ran out of memory. OpenCV's thread count is the caller's (it does not change the
    result: the engine is deterministic whatever the thread count).
    """
    _reset_peak_rss()
    try:
        record = stack_to_file(spec.sources, spec.image, spec.settings, deep_output=spec.deep_image,
                               depthmap_output=spec.depthmap,
                               thumbnail_output=spec.thumbnail, depth_thumbnail_output=spec.depth_thumbnail,
                               mask_output=spec.masks[0] if spec.masks else None, calibration=spec.calibration)
        if len(spec.masks) > 1:  # made once, the same bytes under each mesher's name
            mask = spec.masks[0].read_bytes()
            for path in spec.masks[1:]:
                write_atomic(path, mask)
        record["worker_peak_rss_mb"] = _peak_rss_mb()
        outcome = Outcome(OutcomeKind.OK, record=record)
    except FrameUnavailable as exc:
        outcome = Outcome(OutcomeKind.UNAVAILABLE, str(exc))
    except (FrameError, StackError) as exc:
        outcome = _failed(spec, str(exc))
    except MemoryError:
        outcome = _failed(spec, out_of_memory)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1]
        outcome = _failed(spec, out_of_memory if "Insufficient memory" in message else f"OpenCV error: {message}")
    except OSError as exc:  # reading frames raises FrameError or FrameUnavailable, so this is writing the result
        outcome = Outcome(OutcomeKind.UNWRITABLE, f"cannot write the result: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug must fail one stack, not leave it looping
        outcome = _failed(spec, f"internal error: {type(exc).__name__}: {exc} | {traceback.format_exc(limit=-3)}")
    return replace(outcome, worker=WorkerId(socket.gethostname(), worker))


def _failed(spec: JobSpec, message: str) -> Outcome:
    """A failed stack; with ``spec.fallback``, its sharpest readable frame is written where the result goes."""
    if not spec.fallback:
        return Outcome(OutcomeKind.FAILED, message)
    try:
        best = sharpest_frame(spec.sources, spec.settings)
        if best is None:
            return Outcome(OutcomeKind.FAILED, message + " (no frame readable for a fallback image)")
        write_atomic(spec.image, fallback_image(best, spec.settings.output_format, spec.settings.jpeg_quality,
                                                max_pixels=int(spec.settings.max_megapixels * 1e6)))
    except OSError as exc:
        return Outcome(OutcomeKind.UNWRITABLE, f"cannot write the fallback image: {exc}")
    except MemoryError:
        return Outcome(OutcomeKind.FAILED, message + " (out of memory choosing a fallback image)")
    except FrameError as exc:  # readable for its score, yet not whole (a raw frame scored on a half-size develop)
        return Outcome(OutcomeKind.FAILED, message + f" (no fallback image: {exc})")
    return Outcome(OutcomeKind.FAILED, message, fallback={"frame": best.name, "index": best.index})


def _end_with(daemon_pid: int) -> None:
    """Exit at once when the daemon dies, so a ``kill -9``'d daemon leaves no orphan stacking on.

    The worker's parent is the forkserver, not the daemon (and the forkserver lives as long as any worker does),
    so PR_SET_PDEATHSIG cannot tell; a pidfd of the daemon, watched by a thread, can (Linux >= 5.3).
    """
    try:
        pidfd = os.pidfd_open(daemon_pid)
    except ProcessLookupError:
        os._exit(1)
    except (OSError, AttributeError):
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        os._exit(1)  # nothing to clean up: results are written atomically, a temp file is removed at next start

    threading.Thread(target=watch, name="daemon-watch", daemon=True).start()


def _limit_memory(stack_bytes: int) -> int:
    """Cap the data segment at what the process uses now plus ``stack_bytes``; return the cap in bytes.

    RLIMIT_DATA covers heap and private mappings (Linux >= 4.7), so a runaway stack gets a MemoryError and fails
    alone, instead of the kernel's OOM killer picking a victim -- maybe the capture firmware.
    """
    limit = _data_bytes() + stack_bytes
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return limit


def _reset_peak_rss() -> None:
    """Start this process's peak-RSS count afresh (a Dask worker runs many stacks in one process)."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak RSS to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak RSS since :func:`_reset_peak_rss` (VmHWM), in MiB; the process's lifetime peak where that is hidden."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _data_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

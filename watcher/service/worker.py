"""What runs inside a worker process: one stack, under a memory limit, reported back over a pipe.

This is the only bridge between the daemon and the engine: it calls :func:`watcher.stacking.pipeline.stack_to_file`
and sends back the engine's record or a classified error. Imported by the forkserver at start-up, so numpy and
OpenCV are loaded once and each worker forks ready to go.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import cv2

from watcher.config import StackingSettings
from watcher.stacking.frames import FrameError, FrameSource
from watcher.stacking.pipeline import StackError, stack_to_file

@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs (picklable)."""

    stack: str
    sources: tuple[FrameSource, ...]
    image: Path
    depthmap: Path | None
    settings: StackingSettings
    memory_limit_bytes: int  # on top of what the worker process already uses when it starts
    threads: int
    daemon_pid: int  # the worker ends itself when this process dies


# Outcomes sent back: ("ok", record) | ("failed", message) for input problems, which a retry cannot fix |
# ("unwritable", message) when the result could not be written (disk full, read-only): retry later.


def run(spec: JobSpec, conn: Connection) -> None:
    """Worker process entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the daemon's to handle
    _end_with(spec.daemon_pid)
    limit = _limit_memory(spec.memory_limit_bytes)
    out_of_memory = ("failed", f"out of memory: the stack needs more than the worker's limit of {limit >> 20} MiB")
    cv2.setNumThreads(spec.threads)
    try:
        record = stack_to_file(spec.sources, spec.image, spec.settings, depthmap_output=spec.depthmap)
        record["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        outcome = ("ok", record)
    except (FrameError, StackError) as exc:
        outcome = ("failed", str(exc))
    except MemoryError:
        outcome = out_of_memory
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1]
        outcome = out_of_memory if "Insufficient memory" in message else ("failed", f"OpenCV error: {message}")
    except OSError as exc:  # reading frames raises FrameError, so this is writing the result
        outcome = ("unwritable", f"cannot write the result: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug must fail one stack, not leave it looping
        outcome = ("failed", f"internal error: {type(exc).__name__}: {exc} | {traceback.format_exc(limit=-3)}")
    conn.send(outcome)
    conn.close()


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
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ValueError, OSError):
        pass
    return limit


def _data_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

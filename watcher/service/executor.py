"""The executor contract: what the daemon hands to whatever runs stacks, and what comes back.

The daemon only ever *submits* a :class:`Job` (a :class:`JobSpec` and its memory estimate) and *collects* what
finished (a :class:`Finished`, carrying an :class:`Outcome`); :class:`Executor` is that whole interface. Two
executors implement it, each beside this module: the local pool of worker processes
(:mod:`~watcher.service.pool`) and the Dask cluster (:mod:`~watcher.service.dask_executor`); both run
:func:`watcher.service.worker.execute`. This module imports neither, nor the engine: both import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from watcher.config import StackingSettings
    from watcher.stacking.calibration import Calibration
    from watcher.stacking.sources import FrameSource


class OutcomeKind(enum.StrEnum):
    """What a stack's run came to. The worker reports the first four; an executor the last two."""

    OK = "ok"  # the result and its record are written
    FAILED = "failed"  # the content is bad: a retry cannot fix it
    UNAVAILABLE = "unavailable"  # an input could not be read now (environment): wait, try again
    UNWRITABLE = "unwritable"  # the result could not be written (disk full, read-only): wait, try again
    DIED = "died"  # the worker ended without an outcome (killed, crashed, stopped by the daemon)
    TIMEOUT = "timeout"  # it ran past workers.stack_timeout_seconds and was stopped


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to stack one stack (picklable: it crosses into worker processes and to Dask)."""

    stack: str
    sources: tuple[FrameSource, ...]
    image: Path
    depthmap: Path | None
    settings: StackingSettings
    memory_limit_bytes: int  # on top of what the worker process already uses when it starts
    threads: int
    daemon_pid: int  # the worker ends itself when this process dies
    fallback: bool = False  # on failure, place the sharpest readable frame at ``image``
    thumbnail: Path | None = None  # the report's thumbnail of the result (and of the depth map, if one is made)
    depth_thumbnail: Path | None = None
    calibration: Calibration | None = None  # the scan's focus-step transforms, checked and reused
    deep_image: Path | None = None  # a raw stack's 16-bit image beside the (JPEG) image
    masks: tuple[Path, ...] = ()  # the object mask, made once, written under each of these names

    def outputs(self) -> dict[str, Path]:
        """The files this job may write, by kind (``image``, ``deep_image``, ``depthmap``, ``thumbnail``,
        ``depth_thumbnail``, ``mask0``, ``mask1``, ...)."""
        named = {"image": self.image, "deep_image": self.deep_image, "depthmap": self.depthmap,
                 "thumbnail": self.thumbnail, "depth_thumbnail": self.depth_thumbnail,
                 **{f"mask{i}": path for i, path in enumerate(self.masks)}}
        return {kind: path for kind, path in named.items() if path is not None}

    def relocated(self, folder: Path) -> JobSpec:
        """This job with each output in ``folder``, named after its kind (a cluster worker's scratch space)."""
        local = {kind: Path(folder, kind + path.suffix) for kind, path in self.outputs().items()}
        fields = {kind: path for kind, path in local.items() if not kind.startswith("mask")}
        return replace(self, **fields, masks=tuple(local[f"mask{i}"] for i in range(len(self.masks))))


@dataclass(frozen=True)
class WorkerId:
    """Who ran a stack, as its record says (``worker``): the machine, and the worker on it."""

    host: str  # the machine's host name
    name: str  # "local pid 1234", or the Dask worker's name and address


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    message: str | None = None  # what went wrong, for every kind but OK
    record: dict | None = None  # OK: the engine's record
    fallback: dict | None = None  # FAILED with a fallback image: {"frame": name, "index": position}
    worker: WorkerId | None = None  # who ran it; None if no worker did (never placed, stopped before it started)


@dataclass
class Job:
    spec: JobSpec
    estimate_bytes: int  # the stack's estimated peak memory
    attempt: int = 1
    context: dict = field(default_factory=dict)  # the daemon's bookkeeping, returned untouched


@dataclass
class Finished:
    job: Job
    outcome: Outcome
    seconds: float


class Executor(Protocol):
    """What runs stacks, as the daemon sees it."""

    workers: int  # stacks that may run at once
    budget: int  # bytes: the estimates of the running stacks sum to at most this (one stack always fits)

    @property
    def running(self) -> int:
        """Stacks submitted and not yet collected."""

    def has_room_for(self, estimate_bytes: int) -> bool:
        """Whether a stack of this estimate may be submitted now."""

    def submit(self, job: Job) -> None:
        """Start ``job``; its outcome comes back from :meth:`collect`."""

    def collect(self, timeout: float = 0.0) -> list[Finished]:
        """Jobs that finished, waiting up to ``timeout`` s for the first."""

    def shutdown(self, grace_seconds: float) -> list[Finished]:
        """Let running jobs finish for up to ``grace_seconds``, then stop the rest (outcome ``DIED``)."""

    def unavailable(self) -> str | None:
        """Why no stack has been able to run for longer than this executor waits (a cluster unreachable, or
        without a worker that takes stacks); None while stacks can run, or may soon. ``once`` gives up on it."""

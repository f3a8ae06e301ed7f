"""From a ready stack to a job for the executor: where its frames are, where its result goes, what it may cost.

The memory estimate comes from the first frame's header alone (:func:`~watcher.stacking.sources.read_header`:
a few hundred KiB read, nothing decoded or inflated), so the daemon's loop never holds a frame.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.config import Settings
from watcher.service.executor import Job, JobSpec
from watcher.service.placement import StackPaths
from watcher.service.tracker import ReadyStack
from watcher.stacking.formats import SUFFIXES
from watcher.stacking.peak_memory import estimate_peak_bytes
from watcher.stacking.probe import is_raw_name
from watcher.stacking.sources import FrameError, FrameSource, FrameUnavailable, read_header

if TYPE_CHECKING:
    from watcher.stacking.calibration import Calibration

# The estimate used when the first frame's header cannot be read: 20 MP; for raw files (CR3 and RAF keep their size
# where only LibRaw finds it) a 24 MP 14-bit camera raw.
_UNKNOWN_FRAME = (5472, 3648, 8)
_UNKNOWN_RAW_FRAME = (6000, 4000, 14)
_CALIBRATED_SCANS = 64  # scans whose calibration is kept (a night has a few; rigs run one at a time)


def frame_sources(ready: ReadyStack, folder: Path, archive: Path | None) -> tuple[FrameSource, ...]:
    """The stack's frames as they were seen: files in ``folder``, or members of the zip ``archive``."""
    if archive is not None:
        return tuple(FrameSource(name, archive, name, (size, mtime)) for name, size, mtime in ready.signature)
    return tuple(FrameSource(name, folder / name, None, (size, mtime)) for name, size, mtime in ready.signature)


def make_job(ready: ReadyStack, sources: tuple[FrameSource, ...], paths: StackPaths, settings: Settings,
             workers: int, context: dict, *, thumbnails: tuple[Path, Path] | None = None) -> Job:
    """The job for ``ready``: its spec, and its estimated peak memory (the worker's memory limit is that + 25 %).

    ``thumbnails``: where the report's thumbnails of the result and of its depth map go. The scan's calibration
    is added when the job starts (by the daemon), not here: a stack queued behind its scan's
    first one should reuse what that one learns. The result is written in the format its path says (a stack of
    raw frames may have another than ``stacking.output_format``: :meth:`~watcher.service.placement.Placement.paths`).
    """
    stacking = settings.stacking.model_copy(update={"output_format": SUFFIXES[paths.image.suffix.lower()]})
    raw = is_raw_name(sources[0].name)
    try:
        info = read_header(sources[0])
        width, height, bits = info.width, info.height, info.bits
    except (FrameError, FrameUnavailable):
        width, height, bits = _UNKNOWN_RAW_FRAME if raw else _UNKNOWN_FRAME  # the worker will say what is wrong
    pixels = min(width * height, int(stacking.max_megapixels * 1e6))  # oversized frames fail fast anyway
    estimate = estimate_peak_bytes(pixels, 1, bits, stacking, raw=raw)
    spec = JobSpec(
        stack=str(ready.stack),
        sources=sources,
        image=paths.image,
        deep_image=paths.deep_image,
        depthmap=paths.depthmap if stacking.depthmap else None,
        settings=stacking,
        memory_limit_bytes=estimate + estimate // 4,
        threads=max(1, (os.cpu_count() or 1) // max(1, workers)),  # (a cluster not connected yet has 0)
        daemon_pid=os.getpid(),
        fallback=settings.results.on_failure == "sharpest_frame",
        thumbnail=thumbnails[0] if thumbnails else None,
        depth_thumbnail=thumbnails[1] if thumbnails and stacking.depthmap else None,
        masks=paths.masks,
    )
    return Job(spec, estimate, context=context)


class ScanCalibrations:
    """The latest focus-step transforms of each scan, for its next stacks (``stacking.reuse_alignment = "scan"``).

    Kept in memory only: after a restart the first stack of each scan measures them again. A stack whose record
    has transforms for every frame (any stack that was aligned) becomes its scan's calibration, so a bumped rig
    (whose next stack re-estimated the frames that failed the check) is followed from then on.
    """

    def __init__(self, enabled: bool, keep: int = _CALIBRATED_SCANS) -> None:
        self.enabled = enabled
        self.keep = keep
        self._by_scan: collections.OrderedDict[str, Calibration] = collections.OrderedDict()

    def get(self, scan: str) -> Calibration | None:
        return self._by_scan.get(scan) if self.enabled else None

    def learn(self, scan: str, stack: str, engine: dict) -> None:
        """Take the transforms of ``stack``'s engine record as its scan's calibration."""
        if not self.enabled:
            return
        from watcher.stacking.calibration import Calibration  # numpy: loaded with the first stack that aligned

        calibration = Calibration.from_record(engine, stack)
        if calibration is None:
            return
        self._by_scan[scan] = calibration
        self._by_scan.move_to_end(scan)
        while len(self._by_scan) > self.keep:  # memory must not grow with the nights: the oldest scans go
            self._by_scan.popitem(last=False)

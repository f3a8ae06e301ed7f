"""What the report shows, taken from the records: one :class:`StackEntry` per stack, one :class:`ScanSummary` per scan.

An entry is the little of a record that a scan page and the index need (status, reason, thumbnail, times, the
per-frame shares); it is cached, so a scan page is re-rendered without re-reading its hundreds of records.
Paths in entries are POSIX paths relative to the results folder; text from records goes through :func:`redact`,
so no absolute path of the machine reaches a page.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import PurePosixPath

from watcher.focus_range import Advice, FrameMetrics, frame_metrics, scan_advice, stack_advice
from watcher.layout import DEPTH_SUFFIX as DEPTH_SUFFIX  # re-exported: where a stack's depth map is
from watcher.record import Record, parse_time
from watcher.report.paths import thumbnail

FAILURES_ON_INDEX = 3  # per scan; the scan page lists them all
_EARLIEST = datetime.min.replace(tzinfo=UTC)

# An absolute path: a "/" not preceded by a word character, a dot, a colon or a slash (so "a/b", "1/2" and URLs
# stay), then one or more folders. Only the last component is kept: "/var/lib/x/scan01_12.jpg" -> ".../scan01_12.jpg".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"()<>|,;:]+/)+")


def redact(text: str) -> str:
    """``text`` with every absolute path shortened to ``…/<last component>``."""
    return _ABSOLUTE_PATH.sub("…/", text)


@dataclass
class StackEntry:
    """One stack as the scan page shows it.

    ``record`` is the record file's path relative to the results folder, and the entry's identity; ``status`` is
    ``ok``, ``failed`` or ``pending`` (no record yet, or being stacked again); ``stamp`` the record file's
    (mtime_ns, size) when it was read.
    """

    record: str
    name: str
    status: str
    stamp: tuple[int, int] = (0, 0)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    image: str | None = None
    thumbnail: str | None = None
    width: int | None = None
    height: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    shares: list[float] | None = None
    changes: list[float | None] | None = None

    @property
    def stem(self) -> str:
        return PurePosixPath(self.record).stem

    def metrics(self) -> FrameMetrics | None:
        if self.shares is None or self.changes is None:
            return None
        return FrameMetrics(tuple(self.shares), tuple(self.changes))

    @functools.cached_property
    def advice(self) -> list[Advice]:
        """This stack's focus-range advice (computed once: a scan page asks for it several times)."""
        metrics = self.metrics()
        return stack_advice(metrics) if metrics is not None else []

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping) -> StackEntry:
        return cls(**{**data, "stamp": tuple(data["stamp"])})


def entry_from_record(record: Mapping, checked: Record, path: str, stamp: tuple[int, int], exists) -> StackEntry:
    """The entry of a record read from ``path`` (relative to the results folder); ``checked`` is what
    :func:`watcher.record.record_from` made of it.

    ``exists(relative_path) -> bool`` says whether a file is there (the caller answers from a folder listing it
    already has). The result is looked up where the record says (its first output, relative to the results
    folder), then beside the record; the thumbnail in the report's folder (:func:`paths.thumbnail`).
    """
    ok = checked.status == "ok"
    folder = PurePosixPath(path).parent
    stem = PurePosixPath(path).stem
    image = find_output(checked.outputs[0][0] if checked.outputs else None, folder, None, exists) if ok else None
    small = thumbnail(path)
    metrics = frame_metrics(record.get("frames") or []) if ok else None
    warnings = record.get("warnings")
    return StackEntry(
        record=path,
        name=str(record.get("name") or stem),
        status=checked.status,
        stamp=stamp,
        error=redact(checked.error) if checked.error else None,
        warnings=[redact(str(w)) for w in warnings] if isinstance(warnings, list) else [],
        image=image,
        thumbnail=small if ok and exists(small) else None,
        width=_int(record.get("width")),
        height=_int(record.get("height")),
        started_at=_time(record.get("started_at")),
        finished_at=_time(checked.finished_at),
        seconds=_float(record.get("duration_seconds")),
        shares=[round(share, 5) for share in metrics.shares] if metrics else None,
        changes=[None if change is None else round(change, 5) for change in metrics.changes] if metrics else None,
    )


def find_output(value: object, folder: PurePosixPath, usual_name: str | None, exists) -> str | None:
    """Where an output file is, relative to the results folder, or None.

    Tried in order: ``value`` as a path relative to the results folder; its file name beside the record (in
    ``folder``); ``usual_name`` beside the record. Absolute paths and paths climbing out are not trusted.
    """
    candidates = []
    if isinstance(value, str) and value:
        path = PurePosixPath(value)
        if not path.is_absolute() and ".." not in path.parts:
            candidates.append(str(path))
        candidates.append(str(folder / path.name))
    if usual_name:
        candidates.append(str(folder / usual_name))
    return next((candidate for candidate in candidates if exists(candidate)), None)


@dataclass
class ScanSummary:
    """One scan as the index shows it."""

    key: str  # the scan's folder relative to the results folder ("" for the top folder)
    ok: int = 0
    failed: int = 0
    pending: int = 0
    warned: int = 0  # ok stacks with warnings, or focus-range advice of their own (see :func:`notes`)
    started_at: str | None = None
    finished_at: str | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (name, reason, record) of the first few
    advice: list[str] = field(default_factory=list)
    thumbnail: str | None = None
    thumbnail_size: tuple[int, int] | None = None

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.pending

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> ScanSummary:
        summary = cls(**data)
        summary.failures = [tuple(item) for item in summary.failures]
        summary.thumbnail_size = tuple(summary.thumbnail_size) if summary.thumbnail_size else None
        return summary


def summarize(key: str, entries: Sequence[StackEntry], scan_level: Sequence[Advice]) -> ScanSummary:
    """The index's view of a scan: counts, time span, its first failures, its focus-range advice (``scan_level``,
    from :func:`scan_advice_of`), a thumbnail."""
    summary = ScanSummary(key)
    starts, ends = [], []
    for entry in entries:
        setattr(summary, entry.status, getattr(summary, entry.status) + 1)
        if entry.status == "ok" and notes(entry, scan_level):  # a failed stack counts as failed only
            summary.warned += 1
        if entry.started_at:
            starts.append(entry.started_at)
        if entry.finished_at:
            ends.append(entry.finished_at)
    summary.started_at = min(starts, key=time_key, default=None)
    summary.finished_at = max(ends, key=time_key, default=None)
    failed = [entry for entry in entries if entry.status == "failed"]
    summary.failures = [(entry.name, entry.error or "", entry.record) for entry in failed[:FAILURES_ON_INDEX]]
    summary.advice = [advice.message for advice in scan_level]
    shown = next((entry for entry in entries if entry.status == "ok" and entry.thumbnail), None)
    if shown is not None:
        summary.thumbnail = shown.thumbnail
        summary.thumbnail_size = (shown.width, shown.height) if shown.width and shown.height else None
    return summary


def scan_advice_of(entries: Sequence[StackEntry]) -> list[Advice]:
    return scan_advice([metrics for entry in entries if (metrics := entry.metrics()) is not None])


def notes(entry: StackEntry, scan_level: Sequence[Advice]) -> int:
    """How many things to look at in one stack: its warnings, and focus-range advice that is its own (what holds
    at many positions is said once, on the scan, not on every tile)."""
    said = {(advice.kind, advice.frames) for advice in scan_level}
    return len(entry.warnings) + sum(1 for advice in entry.advice if (advice.kind, advice.frames) not in said)


def median_seconds(entries: Sequence[StackEntry]) -> float | None:
    seconds = [entry.seconds for entry in entries if entry.status == "ok" and entry.seconds is not None]
    return statistics.median(seconds) if seconds else None


def time_key(text: str | None) -> datetime:
    """Sort key of a record's ISO time (:func:`watcher.record.parse_time`); missing or unreadable ones first."""
    return parse_time(text) or _EARLIEST


def _time(value: object) -> str | None:
    """A time the entry keeps: only one that reads as a time, so every page can show it."""
    return value if isinstance(value, str) and parse_time(value) is not None else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

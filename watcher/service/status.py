"""`focus-watcher status`: what the results folder says, and what in the hot folder is still to do.

It reads only, so it works beside a running daemon. It counts as the daemon decides: the same naming, the same
input signature (the tracker's), and "done" meaning a record for the current inputs whose outputs are still there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.config import Settings
from watcher.service.archive import ArchiveRefused
from watcher.service.observer import HotFolder, excluded_results
from watcher.service.results import ResultStore, UnreadableRecord
from watcher.service.tracker import FileState, StackTracker


@dataclass
class Summary:
    done: int = 0  # ok records whose outputs are intact
    failed: int = 0
    pending: int = 0  # stacks in the hot folder without a record for their current inputs (or whose result is gone)
    unplaced: int = 0
    last_errors: list[tuple[str, str, str]] = field(default_factory=list)  # (finished_at, stack, error)
    cluster: dict | None = None  # executor "dask": the cluster's workers and what they run (describe_cluster)


def summarize(settings: Settings, errors: int = 5) -> Summary:
    """Count done/failed records and pending stacks; the ``errors`` most recent failures."""
    store = ResultStore(settings.results_folder, settings.results, settings.stacking.output_format)
    summary = Summary()
    failures = []
    for record in store.records():
        if not store.intact(record):
            continue  # its result was deleted: not done (pending, if its inputs are still there)
        if record.status == "ok":
            summary.done += 1
        else:
            summary.failed += 1
            failures.append((record.finished_at, record.stack, record.error or ""))
    summary.last_errors = sorted(failures, reverse=True)[:errors]
    if settings.workers.executor == "dask":
        summary.cluster = _cluster(settings.workers.dask_scheduler)
    if not settings.hot_folder.is_dir():
        return summary
    folder = HotFolder(settings.hot_folder, settings.naming.extensions, exclude=excluded_results(settings))
    tracker = StackTracker(settings.naming, settings.completeness)
    for found in folder.walk():
        if found.kind == "frame":
            tracker.observe(found.scan, found.name, folder.look(found.path))
        elif found.kind == "archive":
            state = folder.look(found.path)
            try:
                members = folder.archive_frames(found.path) or {}
            except (ArchiveRefused, OSError):
                members = {}
            for name, size in members.items():
                tracker.observe(found.scan, name, FileState(size, state.mtime_ns if state else 0, True))
    summary.unplaced = sum(1 for _scan, item in tracker.take_unplaced() if not item.quiet)
    for stack, signature in tracker.stacks():
        try:
            record = store.done(stack, signature)
        except UnreadableRecord:
            record = None
        summary.pending += record is None
    return summary


def _cluster(address: str) -> dict:
    try:
        from watcher.service.dask_cluster import describe_cluster
    except ImportError as exc:
        return {"scheduler": address, "error": f'Dask is not installed ({exc}): pip install "focus-watcher[dask]"',
                "workers": []}
    return describe_cluster(address)

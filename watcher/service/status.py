"""`focus-watcher status`: what the results folder says, and what in the hot folder is still to do.

It reads only, so it works beside a running daemon. It counts as the daemon decides: the same naming, the same
input signature (the tracker's), and "done" meaning a record for the current inputs whose outputs are still there.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from watcher.config import Settings
from watcher.names import display
from watcher.record import UnreadableRecord, parse_time
from watcher.report.build import PendingStack
from watcher.service.intake import Intake
from watcher.service.naming import ScanInfo, StackId
from watcher.service.placement import UnsafePathError
from watcher.service.records import RecordStore
from watcher.service.tracker import StackTracker

_RATE_WINDOW = 10  # the latest records of a scan its stacking rate is measured over


@dataclass
class ScanProgress:
    """A scan with stacks still to do (or still capturing): how far it is, and when it should be all stacked."""

    scan: str  # as shown (watcher.names.display), as in the records
    stacked: int  # records (ok or failed) of its stacks
    pending: int  # stacks in the hot folder still to do
    positions: int | None  # how many it will have (OpenScan3's scan.json), if known
    status: str | None  # the scan's status in scan.json, if any
    per_minute: float | None  # stacks finished per minute lately
    eta: str | None  # when its last stack should be done (local ISO time), if a rate is known


@dataclass
class Summary:
    done: int = 0  # ok records whose outputs are intact
    failed: int = 0
    pending: int = 0  # stacks in the hot folder without a record for their current inputs (or whose result is gone)
    unplaced: int = 0
    last_errors: list[tuple[str, str, str]] = field(default_factory=list)  # (finished_at, stack, error)
    scans: list[ScanProgress] = field(default_factory=list)  # scans in progress
    cluster: dict | None = None  # executor "dask": the cluster's workers and what they run (describe_cluster)


def summarize(settings: Settings, errors: int = 5) -> Summary:
    """Count done/failed records and pending stacks; the ``errors`` most recent failures."""
    store = RecordStore.of(settings)
    summary = Summary()
    failures = []
    finished: dict[str, list[str]] = {}  # scan -> finished_at of its records
    for record in store.records():
        if not store.intact(record):
            continue  # its result was deleted: not done (pending, if its inputs are still there)
        finished.setdefault(record.stack.rpartition("/")[0], []).append(record.finished_at)
        if record.status == "ok":
            summary.done += 1
        else:
            summary.failed += 1
            failures.append((record.finished_at, record.stack, record.error or ""))
    summary.last_errors = sorted(failures, reverse=True)[:errors]
    if settings.workers.executor == "dask":
        summary.cluster = _cluster(settings.workers.dask_scheduler)
    pending, summary.unplaced, infos = _hot_folder(settings, store)
    summary.pending = len(pending)
    # By the scan's name as shown: records hold no other (watcher.names), and the summary is printed or JSON.
    open_by_scan = collections.Counter(display(stack.scan) for stack in pending)
    infos = {display(scan): info for scan, info in infos.items()}
    for scan in sorted(set(open_by_scan) | {s for s, info in infos.items() if info and not info.ended}):
        summary.scans.append(progress(scan, finished.get(scan, []), open_by_scan[scan], infos.get(scan)))
    return summary


def progress(scan: str, finished: list[str], pending: int, info: ScanInfo | None,
             now: datetime | None = None) -> ScanProgress:
    """How far ``scan`` is: ``finished`` are its records' finish times (ISO), ``pending`` its stacks to do."""
    now = now or datetime.now().astimezone()
    stacked, positions = len(finished), info.positions if info else None
    remaining = max(positions - stacked, pending) if positions is not None else pending
    times = sorted(t for t in (parse_time(text) for text in finished) if t is not None)[-_RATE_WINDOW:]
    rate = None
    if len(times) >= 2 and times[-1] > times[0]:
        rate = (len(times) - 1) / (times[-1] - times[0]).total_seconds()
    eta = None
    if rate and remaining:
        eta = (now + timedelta(seconds=remaining / rate)).isoformat(timespec="minutes")
    return ScanProgress(scan, stacked, pending, positions, info.status if info else None,
                        round(rate * 60, 2) if rate else None, eta)


def pending_stacks(settings: Settings, store: RecordStore) -> tuple[list[StackId], int]:
    """The stacks in the hot folder that are not done with their current inputs (or whose result is gone), and
    the number of files no stack can take -- as the daemon would see them (for ``status`` and the report)."""
    pending, unplaced, _infos = _hot_folder(settings, store)
    return pending, unplaced


def _hot_folder(settings: Settings, store: RecordStore) -> tuple[list[StackId], int, dict[str, ScanInfo | None]]:
    """One walk of the hot folder, fed to a tracker exactly as the daemon feeds its own (its intake)."""
    if not settings.hot_folder.is_dir():
        return [], 0, {}
    tracker = StackTracker(settings.naming, settings.completeness)
    intake = Intake(settings.hot_folder, settings, tracker)
    intake.start_walk()
    intake.continue_walk(None)
    unplaced = sum(1 for _scan, item in tracker.take_unplaced() if not item.quiet)
    pending = []
    for stack, signature in tracker.stacks():
        try:
            record = store.done(stack, signature)
        except UnreadableRecord:
            record = None
        if record is None:
            pending.append(stack)
    return pending, unplaced, {scan: tracker.scan_info(scan) for scan in tracker.scans()}


def report_pending(store: RecordStore, stacks: Iterable[StackId]) -> list[PendingStack]:
    """``stacks`` as the report shows the stacks still to do (one with an unsafe id is never stacked: not shown)."""
    pending = []
    for stack in stacks:
        try:
            pending.append(PendingStack(store.placement.paths(stack).record, stack.stack))
        except UnsafePathError:
            continue
    return pending


def _cluster(address: str) -> dict:
    try:
        from watcher.service.dask_cluster import describe_cluster
    except ImportError as exc:
        return {"scheduler": address, "error": f'Dask is not installed ({exc}): pip install "focus-watcher[dask]"',
                "workers": []}
    return describe_cluster(address)

"""`focus-watcher status`: what the results folder says, and what in the hot folder is still to do."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from watcher.config import Settings
from watcher.service.naming import StackId, group_files
from watcher.service.observer import HotFolder, archive_members, excluded_results
from watcher.service.results import ResultStore, signature_of


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    pending: int = 0  # stacks in the hot folder without a record for their current inputs
    unplaced: int = 0
    last_errors: list[tuple[str, str, str]] = field(default_factory=list)  # (finished_at, stack, error)


def summarize(settings: Settings, errors: int = 5) -> Summary:
    """Count done/failed records and pending stacks; the ``errors`` most recent failures."""
    store = ResultStore(settings.results_folder, settings.results, settings.stacking.output_format)
    summary = Summary()
    failures = []
    records = {}
    for record in store.records():
        records[record["stack"]] = record
        if record["status"] == "ok":
            summary.done += 1
        elif record["status"] == "failed":
            summary.failed += 1
            failures.append((record.get("finished_at", ""), record["stack"], record.get("error") or ""))
    summary.last_errors = sorted(failures, reverse=True)[:errors]
    pending, summary.unplaced = pending_stacks(settings, records)
    summary.pending = len(pending)
    return summary


def pending_stacks(settings: Settings, records: dict[str, dict]) -> tuple[list[StackId], int]:
    """The stacks in the hot folder without a record for their current inputs, and the number of unplaced files.

    ``records`` maps stack ids (``str(StackId)``) to their records.
    """
    if not settings.hot_folder.is_dir():
        return [], 0
    folder = HotFolder(settings.hot_folder, settings.naming.extensions, exclude=excluded_results(settings))
    names: dict[str, dict[str, tuple[int, int]]] = collections.defaultdict(dict)
    for found in folder.walk():
        if found.kind == "frame":
            state = folder.look(found.path)
            if state is not None:
                names[found.scan][found.name] = (state.size, state.mtime_ns)
        elif found.kind == "archive":
            state = folder.look(found.path)
            for member in archive_members(found.path) or []:
                names[found.scan][member.filename] = (member.file_size, state.mtime_ns if state else 0)
    pending, unplaced = [], 0
    for scan, files in names.items():
        stacks, misfits = group_files(scan, files, settings.naming)
        unplaced += len(misfits)
        for stack, frames in stacks.items():
            record = records.get(str(stack))
            current = tuple((name, *files[name]) for name in frames)
            if record is None or signature_of(record) != current:
                pending.append(stack)
    return pending, unplaced

"""Building the report incrementally: re-render only what the records that changed touch.

The state lives beside the pages, in the results folder, so a restart, the ``report`` command and the daemon
share it, and deleting ``.focus-watcher/report/`` simply rebuilds everything:

- ``.focus-watcher/report/<scan>/.stacks.json``: the scan's entries (see :mod:`watcher.report.model`), each with
  the record file's (mtime_ns, size) when read and the neighbours its page links to, and the scan's pending stacks;
- ``.focus-watcher/report/.index.json``: one summary per scan, from which ``index.html`` is drawn without opening
  any scan.

A record whose (mtime_ns, size) still matches is not read again. A scan is re-rendered when one of its records
appeared, changed or went, or its pending stacks changed; a stack page when its record changed or its previous
or next position did. Records are the truth: a lost or stale state file costs time, never correctness. A record
counts as a stack only if the daemon would take it as one (:func:`watcher.record.record_from`).

One page never holds up the others: a page that cannot be drawn (a record with data it cannot show, a name the
file system refuses) is skipped and named with its reason in :attr:`RefreshStats.failures`, and its scan is
visited again by every refresh (``retry`` in ``report/.index.json``) until the page is drawn. A full, read-only
or failing disk is no page's fault: it fails the whole refresh (``OSError``), which is tried again later.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from watcher import __version__, focus_range
from watcher.atomic import is_temp_name, write_atomic
from watcher.layout import records_root
from watcher.names import display, natural_key
from watcher.record import MAX_RECORD_BYTES, Record, UnreadableRecord, load_json, record_from
from watcher.report.model import ScanSummary, StackEntry, entry_from_record, scan_advice_of, summarize
from watcher.report.pages import render_index, render_scan
from watcher.report.paths import INDEX, REPORT_FOLDER, folder_key, scan_folder, scan_key, scan_page, stack_page
from watcher.report.stack_page import render_stack
from watcher.untrusted import UnsafeFile, read_regular


def _drawing_code_digest() -> str:
    """Digest of the code that draws the pages: when it changes (an upgrade, a fix), every page is redrawn."""
    digest = hashlib.sha256(__version__.encode())
    for source in [*sorted(Path(__file__).parent.glob("*.py")), Path(focus_range.__file__)]:
        with contextlib.suppress(OSError):  # installed without sources: the version alone decides
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


FORMAT = _drawing_code_digest()  # state and pages of another format are redrawn
SCAN_STATE = ".stacks.json"  # in each scan's page folder
INDEX_STATE = f"{REPORT_FOLDER}/.index.json"
# A page that cannot be written for one of these is not at fault: the whole refresh is tried again later.
_ENVIRONMENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


@dataclass(frozen=True)
class PendingStack:
    """A stack still to do (waiting, queued or running): where its record will be, and its name."""

    record: Path
    name: str


@dataclass
class RefreshStats:
    """What one refresh did; ``seconds`` is its wall time."""

    scans: int = 0  # in the report after the refresh
    stacks: int = 0
    scans_rendered: int = 0
    stack_pages: int = 0
    records_read: int = 0
    pages_removed: int = 0
    index_rendered: bool = False
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # page -> why it could not be drawn (see Report)


@dataclass
class _Listing:
    """One folder's record files (name -> (mtime_ns, size)) and the names of all its files."""

    records: dict[str, tuple[int, int]]
    names: set[str]


class Report:
    """The report of one results folder.

    ``layout`` is the results layout (``mirror`` or ``openscan``): it says where the records are
    (:func:`watcher.layout.records_root`); with ``openscan`` that is focus-watcher's own folder, so none of
    OpenScan3's files in the projects folder is listed.
    Not thread-safe: call it from one thread at a time (several processes are fine: every write is atomic, and
    a state file that lags behind only costs a re-render).
    """

    def __init__(self, results: Path, layout: str = "mirror") -> None:
        self.root = Path(os.path.abspath(results))
        self.layout = layout
        self._listings: dict[str, _Listing] = {}

    # --- the two entry points ------------------------------------------------------------------------------

    def rebuild(self, pending: Iterable[PendingStack] = ()) -> RefreshStats:
        """Walk the whole results folder and bring every page up to date (the ``report`` command; daemon start)."""
        started = time.perf_counter()
        listings = self._walk()
        return self._update(listings, self._by_scan(pending), complete=True, started=started)

    def refresh(self, changed: Iterable[Path], pending: Iterable[PendingStack] | None = None) -> RefreshStats:
        """Update the pages after records were written (or removed) at the paths ``changed``.

        Only the folders of ``changed`` are listed, so the cost follows the scans touched, not the size of the
        results folder. ``pending``, when given, is the complete set of stacks still to do; scans whose
        pending stacks changed are re-rendered too. None keeps the pending stacks shown before.
        """
        started = time.perf_counter()
        folders = {rel.parent for path in changed if (rel := self._relative(path)) is not None}
        listings = {str(folder): self._list(folder) for folder in folders}
        return self._update(listings, None if pending is None else self._by_scan(pending), complete=False,
                            started=started)

    # --- finding records -----------------------------------------------------------------------------------

    def _relative(self, path: Path) -> PurePosixPath | None:
        path = Path(os.path.abspath(self.root / path))
        try:
            return PurePosixPath(path.relative_to(self.root).as_posix())
        except ValueError:
            return None

    def _walk(self) -> dict[str, _Listing]:
        listings = {}
        for folder, dirs, _files in os.walk(self.root / records_root(self.layout)):
            relative = PurePosixPath(Path(folder).relative_to(self.root).as_posix())
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            listing = self._list(relative)
            if listing.records:
                listings[str(relative)] = listing
        return listings

    def _list(self, folder: PurePosixPath) -> _Listing:
        records, names = {}, set()
        try:
            with os.scandir(self.root / folder) as entries:
                for entry in entries:
                    if is_temp_name(entry.name) or not entry.is_file(follow_symlinks=False):
                        continue
                    names.add(entry.name)
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        info = entry.stat(follow_symlinks=False)
                        records[entry.name] = (info.st_mtime_ns, info.st_size)
        except OSError:  # gone, or not a folder: no records there
            pass
        listing = _Listing(records, names)
        self._listings[str(folder)] = listing
        return listing

    def _exists(self, relative: str) -> bool:
        """Whether an output file is there, from the folder listings at hand where possible."""
        path = PurePosixPath(relative)
        listing = self._listings.get(str(path.parent))
        if listing is not None:
            return path.name in listing.names
        return (self.root / relative).is_file()

    def _by_scan(self, pending: Iterable[PendingStack]) -> dict[str, dict[str, str]]:
        by_scan: dict[str, dict[str, str]] = defaultdict(dict)
        for stack in pending:
            relative = self._relative(stack.record)
            if relative is not None:
                by_scan[scan_key(str(relative))][str(relative)] = stack.name
        return by_scan

    # --- updating ------------------------------------------------------------------------------------------

    def _update(self, listings: dict[str, _Listing], pending: dict[str, dict[str, str]] | None, *, complete: bool,
                started: float) -> RefreshStats:
        stats = RefreshStats()
        index = self._load(INDEX_STATE)
        summaries = {key: ScanSummary.from_json(data) for key, data in index.get("scans", {}).items()}
        known_pending = {key: dict(items) for key, items in index.get("pending", {}).items()}
        retry = {key: list(folders) for key, folders in index.get("retry", {}).items()}
        for folder in {folder for folders in retry.values() for folder in folders} - set(listings):
            listings[folder] = self._list(PurePosixPath(folder))  # a scan with a page not drawn: try it again
        folders_of: dict[str, dict[str, _Listing]] = defaultdict(dict)
        for folder, listing in listings.items():
            folders_of[folder_key(folder)][folder] = listing
        wanted_pending = known_pending if pending is None else pending
        keys = set(folders_of) | {key for key in set(wanted_pending) | set(known_pending)
                                  if wanted_pending.get(key, {}) != known_pending.get(key, {})}
        keys |= set(retry)
        if complete:
            keys |= set(summaries)
        for key in sorted(keys):
            failed_before = len(stats.failures)
            summary = self._attempt(scan_page(key), functools.partial(
                self._update_scan, key, folders_of.get(key, {}), wanted_pending.get(key, {}), complete, stats,
                summaries.get(key)), stats)
            if summary is _FAILED:  # shown as it was
                summary = summaries.get(key)
            retry.pop(key, None)
            if len(stats.failures) > failed_before:
                retry[key] = sorted(folders_of.get(key, {}))
            if summary is None:
                summaries.pop(key, None)
            else:
                summaries[key] = summary
        self._listings.clear()
        stats.scans, stats.stacks = len(summaries), sum(summary.total for summary in summaries.values())
        if (stats.scans_rendered or stats.pages_removed or not (self.root / INDEX).exists()
                or not index.get("drawn", True) or retry != index.get("retry", {})):
            drawn = self._draw(INDEX, lambda: render_index(list(summaries.values())), stats)
            stats.index_rendered = drawn
            self._save(INDEX_STATE, {"scans": {key: s.to_json() for key, s in summaries.items()},
                                     "pending": {key: items for key, items in wanted_pending.items() if items},
                                     "retry": retry, "drawn": drawn})
        stats.seconds = time.perf_counter() - started
        return stats

    def _update_scan(self, key: str, listings: dict[str, _Listing], pending: dict[str, str], complete: bool,
                     stats: RefreshStats, summary: ScanSummary | None) -> ScanSummary | None:
        """Bring one scan's pages up to date; returns its summary (``summary`` if nothing changed), or None when
        it has no stacks left. A page that cannot be drawn is put in ``stats.failures`` and left out of the saved
        state, so that the next visit draws it again."""
        state_path = f"{scan_folder(key)}/{SCAN_STATE}"
        state = self._load(state_path)
        entries = {rel: StackEntry.from_json(data) for rel, data in state.get("entries", {}).items()}
        linked = {rel: tuple(pair) for rel, pair in state.get("neighbours", {}).items()}
        records: dict[str, Mapping] = {}
        for rel in list(entries):
            folder = str(PurePosixPath(rel).parent)
            if (folder in listings or complete) and PurePosixPath(rel).name not in listings.get(folder, _EMPTY).records:
                del entries[rel]  # its record went
        for folder, listing in listings.items():
            for name, stamp in listing.records.items():
                rel = f"{folder}/{name}" if folder != "." else name
                if rel in entries and entries[rel].stamp == stamp:
                    continue
                entries.pop(rel, None)
                read = self._read(rel, stats)
                if read is None:
                    continue
                record, checked = read
                entry = self._attempt(stack_page(rel), functools.partial(
                    entry_from_record, record, checked, rel, stamp, self._exists), stats)
                if entry is not _FAILED:  # else not shown, and read again at the next visit
                    entries[rel], records[rel] = entry, record
        unchanged = (state and not records and set(entries) == set(linked) and pending == state.get("pending", {})
                     and state.get("drawn", True))
        if unchanged and summary is not None and (self.root / scan_page(key)).exists():
            return summary
        order = sorted(entries.values(), key=lambda e: (natural_key(e.name), e.record))
        chain = [None, *(e.record for e in order), None]
        neighbours = {rel: (chain[i], chain[i + 2]) for i, rel in enumerate(chain[1:-1])}
        for rel in sorted(set(linked) - set(entries)):
            stats.pages_removed += self._remove(stack_page(rel))
        drawn_neighbours = {}
        for rel, pair in neighbours.items():
            if rel not in records and linked.get(rel) == pair:
                drawn_neighbours[rel] = pair
                continue
            read = (records[rel], None) if rel in records else self._read(rel, stats)
            if read is None:  # gone since it was listed
                continue
            near = tuple(entries[other] if other else None for other in pair)
            if self._draw(stack_page(rel), functools.partial(render_stack, read[0], entries[rel], near, self._exists),
                          stats):
                drawn_neighbours[rel] = pair
                stats.stack_pages += 1
        shown = _with_pending(order, pending)
        if not shown:
            stats.pages_removed += self._remove(scan_page(key)) + self._remove(state_path)
            self._prune(scan_folder(key))
            return None
        scan_level = scan_advice_of(shown)
        drawn = self._draw(scan_page(key), lambda: render_scan(key, shown, scan_level), stats)
        stats.scans_rendered += drawn
        self._save(state_path, {"entries": {rel: e.to_json() for rel, e in entries.items()},
                                "neighbours": drawn_neighbours, "pending": pending, "drawn": drawn})
        return summarize(key, shown, scan_level)

    # --- files ---------------------------------------------------------------------------------------------

    def _read(self, rel: str, stats: RefreshStats) -> tuple[dict, Record] | None:
        """A record file's JSON and its check (:func:`watcher.record.record_from`); None if it is not a record."""
        try:
            data, _info = read_regular(self.root / rel, max_bytes=MAX_RECORD_BYTES)
            record = load_json(data)
            checked = record_from(record)
        except (OSError, UnsafeFile, UnreadableRecord):
            return None
        stats.records_read += 1
        return record, checked

    def _draw(self, page: str, render: Callable[[], str], stats: RefreshStats) -> bool:
        """Write ``page`` (relative to the results folder) as ``render`` draws it; False if it could not be drawn."""
        return self._attempt(page, lambda: write_atomic(self.root / page, render().encode()), stats) is not _FAILED

    @staticmethod
    def _attempt(page: str, work: Callable, stats: RefreshStats):
        """``work()``, or :data:`_FAILED` when it fails for a reason of its own (bad data in a record, a name too
        long for the file system): then ``stats.failures[page]`` says why. A full, read-only or failing disk is
        not one page's fault: that ``OSError`` is raised, and the whole refresh is tried again later."""
        try:
            return work()
        except OSError as exc:
            if exc.errno in _ENVIRONMENT:
                raise
            stats.failures[page] = _reason(exc)
        except Exception as exc:  # noqa: BLE001 - one page must never keep the others from being drawn
            stats.failures[page] = _reason(exc)
        return _FAILED

    def _load(self, rel: str) -> dict:
        """A state file; empty when missing, unreadable or of another format (then everything is re-rendered)."""
        try:
            data = json.loads((self.root / rel).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("format") == FORMAT else {}

    def _save(self, rel: str, data: dict) -> None:
        write_atomic(self.root / rel, json.dumps({"format": FORMAT, **data}, separators=(",", ":")).encode())

    def _remove(self, rel: str) -> int:
        try:
            (self.root / rel).unlink()
        except FileNotFoundError:
            return 0
        return 1

    def _prune(self, folder: str) -> None:
        """Remove a scan's page folder, and its parents up to the report's folder, once they are empty."""
        path, top = PurePosixPath(folder), PurePosixPath(REPORT_FOLDER)
        while top in path.parents:
            try:
                (self.root / path).rmdir()
            except OSError:  # not empty (another scan's pages), or gone
                return
            path = path.parent


_EMPTY = _Listing({}, set())
_FAILED = object()  # what Report._attempt returns for work that failed


def _reason(exc: Exception) -> str:
    """Why a page could not be drawn, the same each time it fails the same way (an ``OSError`` without its file
    name: a temp file's name differs at every attempt)."""
    if isinstance(exc, OSError) and exc.strerror:
        return display(f"{type(exc).__name__}: {exc.strerror}")
    return display(f"{type(exc).__name__}: {exc}")


def _with_pending(order: list[StackEntry], pending: dict[str, str]) -> list[StackEntry]:
    """The scan's stacks as shown: pending ones marked (a stack stacked again keeps its last page) or added."""
    shown = [replace(entry, status="pending") if entry.record in pending else entry for entry in order]
    known = {entry.record for entry in order}
    shown += [StackEntry(record=rel, name=name, status="pending") for rel, name in pending.items() if rel not in known]
    return sorted(shown, key=lambda e: (natural_key(e.name), e.record))

"""Noticing files: events, walks of the hot folder, and second looks, turned into what the tracker is told.

The daemon's loop asks this to take the queued events, to go on walking the hot folder for a slice of a pass,
and to look again at files whose quiet period is over; each call is bounded, so a hot folder that keeps 100 000
frames or a zip of 1 000 members never holds a pass for long. Nothing here decides anything (the tracker does)
or touches the results folder (the daemon does).
"""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from watcher.config import Settings
from watcher.service.archive import ArchiveRefused
from watcher.service.naming import ScanInfo
from watcher.service.observer import SCAN_JSON, Event, Found, HotFolder, excluded_results
from watcher.service.tracker import FileState, ReadyStack, StackTracker

log = structlog.get_logger("focus-watcher")


class _Walk:
    """A walk of the hot folder under way: the files still to come, and what it found so far."""

    def __init__(self, files: Iterator[Found], clock: float) -> None:
        self.files = files
        self.seen: dict[str, set] = collections.defaultdict(set)  # kind -> scans, or (scan, name) of frames
        self.started = time.monotonic()
        self.clock = clock  # the tracker's clock when it began: what it finds counts as found together


class Intake:
    """What the daemon sees of the hot folder, fed to ``tracker``."""

    def __init__(self, hot: Path, settings: Settings, tracker: StackTracker) -> None:
        self.hot = hot
        self.settings = settings
        self.tracker = tracker
        self.hot_folder = HotFolder(hot, settings.naming.extensions, exclude=excluded_results(settings))
        self.events: queue.Queue[Event] = queue.Queue()  # filled by watchdog's thread
        self.archives: dict[str, Path] = {}  # zip scan -> zip path
        self._archive_states: dict[str, FileState] = {}
        self._refused: set[str] = set()  # zip scans refused (logged once)
        self._walk: _Walk | None = None
        self._removed: list[Path] = []  # folders removed since take_removed() last looked
        self.next_walk = 0.0  # time.monotonic() of the next periodic walk

    @property
    def walking(self) -> bool:
        return self._walk is not None

    def path_of(self, namespace: str) -> Path:
        """The folder of a scan namespace ("" is the hot folder itself)."""
        return self.hot.joinpath(*namespace.split("/"))

    # --- walks ---------------------------------------------------------------------------------------------

    def start_walk(self) -> None:
        """Begin a walk of the whole hot folder (a walk under way starts over)."""
        self._walk = _Walk(self.hot_folder.walk(), self.tracker.clock())

    def continue_walk(self, budget: float | None) -> bool:
        """Go on walking for up to ``budget`` s (None: to the end); True when the walk ended in this call.

        A walk finds the files events missed (at start-up, after an inotify overflow, on network shares); at its
        end, files, zips and scan.json files that vanished are forgotten. Files created while a walk is under way
        may be missed by it (events report them), so a known file that was not walked is looked at once more
        before it is forgotten.
        """
        walk = self._walk
        if walk is None:
            return False
        deadline = None if budget is None else time.perf_counter() + budget
        for found in walk.files:
            self.take(found, writing=None, found_together=walk.clock)
            walk.seen[found.kind].add(found.scan if found.kind != "frame" else (found.scan, found.name))
            if deadline is not None and time.perf_counter() > deadline:
                return False
        self._walk = None
        for scan in self.tracker.scans():
            if scan in self.archives:
                if scan not in walk.seen["archive"] and self.hot_folder.look(self.archives[scan]) is None:
                    self._forget_archive(scan)
                continue
            for name in self.tracker.known(scan):
                if (scan, name) not in walk.seen["frame"]:
                    path = self.path_of(scan) / name
                    self.tracker.observe(scan, name, self.hot_folder.look(path, self.tracker.state(scan, name)))
            scan_json = self.path_of(scan) / SCAN_JSON
            if (scan not in walk.seen["scan_json"] and self.tracker.scan_info(scan) is not None
                    and not scan_json.exists()):
                self.tracker.set_scan_info(scan, None)
        self.next_walk = time.monotonic() + self.settings.observer.rescan_seconds
        log.debug("scan.rescanned", seconds=round(time.monotonic() - walk.started, 3),
                  scans=len(self.tracker.scans()))
        return True

    # --- events --------------------------------------------------------------------------------------------

    def drain_events(self, timeout: float) -> None:
        """Take every queued event, waiting up to ``timeout`` s for the first."""
        inotify = self.settings.observer.mode == "inotify"
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return
        walk_all = None
        while True:
            if event.kind == "overflow":
                walk_all = "the kernel dropped file events (inotify queue overflow)"
            elif event.is_directory and event.kind == "deleted":
                walk_all = walk_all or "a folder was removed"
                self._removed.append(event.path)
            elif event.is_directory:
                if event.kind == "created" and event.path.is_dir() and not event.path.is_symlink():
                    for found in self.hot_folder.walk(below=event.path):
                        self.take(found, writing=None)
            else:
                found = self.hot_folder.locate(event.path)
                if found is not None:
                    # Open/close tracking only where events are precise (inotify); polling reports plain changes.
                    writing = {"modified": True, "closed": False}.get(event.kind) if inotify else None
                    self.take(found, writing=writing)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        if walk_all:
            if walk_all.startswith("the kernel"):
                log.warning("observer.overflow", reason=walk_all)
            log.info("observer.rescan", reason=walk_all)
            self.start_walk()

    def take_removed(self) -> list[Path]:
        """The folders removed (or moved away) since the last call, as events reported them."""
        removed, self._removed = self._removed, []
        return removed

    # --- looks ---------------------------------------------------------------------------------------------

    def take(self, found: Found, writing: bool | None, found_together: float | None = None) -> None:
        if found.kind == "frame":
            previous = self.tracker.state(found.scan, found.name)
            state = self.hot_folder.look(found.path, previous, found.info)
            self.tracker.observe(found.scan, found.name, state, writing=writing, found_together=found_together)
        elif found.kind == "scan_json":
            self.tracker.set_scan_info(found.scan, self.hot_folder.scan_info(found.path))
        else:
            self._take_archive(found.scan, found.path, found_together)

    def recheck(self, budget: float) -> None:
        """Look again at the files whose quiet period is over, for up to ``budget`` s (the rest stay due)."""
        zips = set()
        deadline = time.perf_counter() + budget
        for scan, name in self.tracker.to_recheck():
            if scan in self.archives:
                zips.add(scan)  # once per zip and pass, however many members are due
            else:
                self.take(Found("frame", scan, name, self.path_of(scan) / name), writing=None)
            if time.perf_counter() > deadline:
                break
        for scan in zips:
            self._take_archive(scan, self.archives[scan])

    def relook(self, ready: ReadyStack) -> None:
        """Look again at a stack's files now (an input was reported changed or unreadable)."""
        if ready.namespace in self.archives:
            self._take_archive(ready.namespace, self.archives[ready.namespace])
            return
        for name in ready.frames:
            self.take(Found("frame", ready.namespace, name, self.path_of(ready.namespace) / name), writing=None)

    def report_unplaced(self) -> None:
        for scan, item in self.tracker.take_unplaced():
            if item.quiet:
                log.debug("file.ignored", scan=scan, file=item.name, reason=item.reason)
            else:
                log.warning("file.unplaced", scan=scan, file=item.name, reason=item.reason)

    def _take_archive(self, scan: str, path: Path, found_together: float | None = None) -> None:
        """An OpenScan2 scan zip is a whole scan: its members are its frames. Its directory is read only when the
        zip changed; an unchanged zip just confirms the members already known."""
        previous = self._archive_states.get(scan)
        state = self.hot_folder.look(path, previous)
        if state is None:
            self._forget_archive(scan)
            return
        self.archives[scan] = path
        known = self.tracker.known(scan)
        if state is previous and known:
            for name in known:
                self.tracker.observe(scan, name, self.tracker.state(scan, name))
            return
        self._archive_states[scan] = state
        try:
            members = self.hot_folder.archive_frames(path) or {}
        except ArchiveRefused as exc:
            if scan not in self._refused:
                self._refused.add(scan)
                log.error("archive.refused", scan=scan, error=str(exc))
            members = {}
        except OSError:
            members = {}  # unreadable now: looked at again when it changes, or at the next walk
        for name in known - members.keys():
            self.tracker.observe(scan, name, None)
        for name, size in members.items():
            self.tracker.observe(scan, name, FileState(size, state.mtime_ns, True), found_together=found_together)
        if members:
            self.tracker.set_scan_info(scan, ScanInfo(focus_stacks=None, status="completed"))

    def _forget_archive(self, scan: str) -> None:
        self.archives.pop(scan, None)
        self._archive_states.pop(scan, None)
        self._refused.discard(scan)
        for name in self.tracker.known(scan):
            self.tracker.observe(scan, name, None)
        self.tracker.set_scan_info(scan, None)

"""Noticing files: watchdog events, a full walk of the hot folder, and one cheap look at a file.

Nothing here decides anything. Event handlers run on watchdog's thread and only put raw paths on a queue; the
daemon's loop turns them into looks (:meth:`HotFolder.look`) and tells the tracker. A walk of the whole folder at
start-up and every ``rescan_seconds`` covers what events miss: files already there, inotify queue overflows
(dropped silently), and network shares, where writes from other hosts raise no events.

What is trusted: only regular files and folders *inside* the hot folder. Symlinks (to files or folders) are
never followed, so nothing outside the hot folder is read; hidden folders, OpenScan's ``metadata`` and
``stacked`` folders, and the results folder (when it lies inside, as with the mirror layout) are skipped. Every
read opens the file first and checks what was opened (:mod:`watcher.untrusted`): a FIFO or a link to
``/dev/zero`` put where a frame or a scan.json was neither blocks the loop nor fills its memory.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserverVFS

from watcher.config import Settings
from watcher.layout import OPENSCAN_FOLDER
from watcher.masks import FOLDER as MASKS_FOLDER
from watcher.service.archive import list_members
from watcher.service.naming import ScanInfo, is_candidate, is_scan_archive, parse_scan_json
from watcher.service.tracker import FileState
from watcher.stacking.probe import file_is_whole
from watcher.untrusted import UnsafeFile, open_regular, read_regular

SCAN_JSON = "scan.json"
_SKIPPED_FOLDERS = {OPENSCAN_FOLDER, MASKS_FOLDER, "metadata"}
_MAX_SCAN_JSON_BYTES = 1 << 20  # OpenScan3's scan.json is a few KiB


@dataclass(frozen=True)
class Found:
    """A file the walk or an event pointed at, placed in its scan namespace."""

    kind: str  # "frame" | "archive" | "scan_json"
    scan: str  # POSIX path of its folder relative to the hot folder ("" at the top); for an archive, its own path
    name: str
    path: Path
    info: os.stat_result | None = None  # the walk's lstat of it (saves a second one)


class HotFolder:
    """The watched folder: what counts as a frame, where it belongs, and a look at it.

    The walk works on strings and ``os.scandir`` entries, not ``Path`` arithmetic: it runs over every file the hot
    folder keeps (100 000 and more), at start-up and at every rescan.
    """

    def __init__(self, root: Path, extensions: tuple[str, ...], exclude: Path | None = None) -> None:
        self.root = root.resolve()
        self.extensions = frozenset(extensions)
        self.exclude = str(exclude.resolve()) if exclude is not None else None
        self._root = str(self.root)

    def walk(self, below: Path | None = None) -> Iterator[Found]:
        """Every frame, scan archive and scan.json under the hot folder (or under ``below``), symlinks skipped.

        Folders are visited in name order, one ``scandir`` each; the generator may be left between any two files.
        """
        start = str(below) if below is not None else self._root
        scan = self._scan_of(start)
        if scan is None:
            return
        todo = [(start, scan)]
        while todo:
            folder, scan = todo.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError:
                continue  # gone, or not readable now: the next walk tries again
            subfolders = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if self._walkable_name(entry.name) and not self._excluded(entry.path):
                        subfolders.append((entry.path, f"{scan}/{entry.name}" if scan else entry.name))
                elif entry.is_file(follow_symlinks=False):
                    found = self._classify(scan, entry.name, entry.path)
                    if found is not None:
                        try:
                            info = entry.stat(follow_symlinks=False)
                            yield Found(found.kind, found.scan, found.name, found.path, info)
                        except OSError:
                            continue  # gone between the listing and the stat
            todo.extend(reversed(subfolders))

    def locate(self, path: Path) -> Found | None:
        """Classify ``path`` (absolute, inside the hot folder), or None if it is none of our business."""
        folder, name = os.path.split(str(path))
        scan = self._scan_of(folder)
        return None if scan is None else self._classify(scan, name, str(path))

    def _scan_of(self, folder: str) -> str | None:
        """The scan namespace of an absolute folder path, or None if it is not one we walk."""
        if folder == self._root:
            return ""
        if not folder.startswith(self._root + "/") or self._excluded(folder):
            return None
        relative = folder[len(self._root) + 1:]
        return relative if all(self._walkable_name(part) for part in relative.split("/")) else None

    def _classify(self, scan: str, name: str, path: str) -> Found | None:
        if name == SCAN_JSON:
            return Found("scan_json", scan, name, Path(path))
        if is_scan_archive(name):
            return Found("archive", f"{scan}/{name}" if scan else name, name, Path(path))
        if is_candidate(name, self.extensions):
            return Found("frame", scan, name, Path(path))
        return None

    def look(self, path: Path, previous: FileState | None = None,
             info: os.stat_result | None = None) -> FileState | None:
        """Size, mtime and whether a regular file is whole by its format; None if it is gone or is not a regular
        file.

        The file is read (its tail, or a raw file's structure) only when its size or mtime differ from
        ``previous`` (or it was not whole): a rescan of thousands of unchanged frames then costs one ``lstat``
        each, not a read from the SD card. A file that cannot be read now (no permission yet) counts as not whole.
        ``info``: an lstat of ``path`` made a moment ago (by the walk).
        """
        try:
            info = info or os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        if previous is not None and previous.complete and (previous.size, previous.mtime_ns) == (
                info.st_size, info.st_mtime_ns):
            return previous
        try:
            complete, info = _is_whole(path)
        except UnsafeFile:
            return None  # swapped for a link or a FIFO since the lstat
        except FileNotFoundError:
            return None
        except OSError:
            complete = False
        return FileState(size=info.st_size, mtime_ns=info.st_mtime_ns, complete=complete)

    def archive_frames(self, path: Path) -> dict[str, int] | None:
        """The frames a scan zip holds (member name -> claimed size), or None while it is not a readable zip.

        Raises :class:`~watcher.service.archive.ArchiveRefused` for a zip that claims too much, ``OSError`` when
        it cannot be read now.
        """
        listing = list_members(path)
        if listing is None:
            return None
        return {name: size for name, size in listing.members.items() if self.locate(path.parent / name)}

    @staticmethod
    def scan_info(path: Path) -> ScanInfo | None:
        """What an OpenScan3 scan.json says; None if it is unreadable, not a regular file, or over 1 MiB."""
        try:
            data, _info = read_regular(path, max_bytes=_MAX_SCAN_JSON_BYTES)
        except (OSError, UnsafeFile):
            return None
        return parse_scan_json(data.decode("utf-8", errors="replace"))

    @staticmethod
    def _walkable_name(name: str) -> bool:
        return not name.startswith(".") and name not in _SKIPPED_FOLDERS

    def _excluded(self, path: str) -> bool:
        return self.exclude is not None and (path == self.exclude or path.startswith(self.exclude + "/"))


def excluded_results(settings: Settings) -> Path | None:
    """The results folder, kept out of the walk -- except with the openscan layout, where results live in the
    scans' own ``stacked`` folders (always skipped) and the results folder may be the hot folder itself."""
    return None if settings.results.layout == "openscan" else settings.results_folder


def _is_whole(path: Path) -> tuple[bool, os.stat_result]:
    """Whether the file is whole by its format (:func:`~watcher.stacking.probe.file_is_whole`), and the fstat of
    what was read."""
    with open_regular(path) as (handle, info):
        return file_is_whole(path.name, handle.fileno(), info.st_size), info


@dataclass(frozen=True)
class Event:
    kind: str  # "created" | "modified" | "closed" | "deleted" | "overflow"
    path: Path
    is_directory: bool


class _Forward(FileSystemEventHandler):
    """Runs on watchdog's thread: only queues the raw event (never does work there)."""

    def __init__(self, events: queue.Queue[Event]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind == "moved":
            self.events.put(Event("deleted", Path(os.fsdecode(event.src_path)), event.is_directory))
            self.events.put(Event("created", Path(os.fsdecode(event.dest_path)), event.is_directory))
        elif kind in ("created", "modified", "closed", "deleted"):
            self.events.put(Event(kind, Path(os.fsdecode(event.src_path)), event.is_directory))
        elif kind == "attrib":  # e.g. `touch`: a new mtime is a change of the file, not a write in progress
            self.events.put(Event("created", Path(os.fsdecode(event.src_path)), event.is_directory))


class _OverflowAlarm(logging.Handler):
    """watchdog only *logs* that the kernel dropped events (inotify queue overflow): turn that into an event, so
    the daemon walks the folder at once instead of at the next periodic rescan."""

    def __init__(self, root: Path, events: queue.Queue[Event]) -> None:
        super().__init__(logging.WARNING)
        self.root = root
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.events.put(Event("overflow", self.root, True))


def start_watching(root: Path, mode: str, poll_interval: float, events: queue.Queue[Event]):
    """Start a recursive watchdog observer (inotify, or polling for network shares) feeding ``events``."""
    watchdog_log = logging.getLogger("watchdog.observers")
    for handler in [h for h in watchdog_log.handlers if isinstance(h, _OverflowAlarm)]:
        watchdog_log.removeHandler(handler)
    watchdog_log.addHandler(_OverflowAlarm(root, events))
    if mode == "polling":
        # lstat: a symlinked folder is seen as a link, not walked into (it may point anywhere, even "/").
        observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=poll_interval)
    else:
        # A folder created inside a watched one gets its watch twice (from its own creation event and from the
        # walk of its parent's); watchdog then warns that its callback "will be Overwritten", by the very same
        # callback, which is harmless (said in review of gorakhargosh/watchdog#1278). Nothing to act on, and it
        # would be the one line of the daemon's stderr, the journal, that is not JSON.
        warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch",
                                category=RuntimeWarning)
        observer = Observer()
    observer.schedule(_Forward(events), str(root), recursive=True)
    observer.daemon = True
    observer.start()
    return observer

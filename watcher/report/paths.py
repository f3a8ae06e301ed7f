"""Where the report's pages live, relative to the results folder (one home for the report's layout).

    index.html                                               all scans
    .focus-watcher/report/<scan folder>/index.html           one scan: a grid of its positions
    .focus-watcher/report/<scan folder>/<stack>.html         one stack
    .focus-watcher/report/<scan folder>/<stack>.thumb.jpg    its thumbnail, and <stack>.depth.thumb.png its depth map's

Pages and thumbnails sit apart from the results, in focus-watcher's own folder (:mod:`watcher.layout`), so a
photogrammetry import of a results folder, or OpenScan3's upload or ZIP download of a project, never meets them,
whatever the projects are called. A scan's folder is its path in the results folder (:func:`folder_key`). All
paths here are POSIX and relative to the results folder.
"""

from __future__ import annotations

import posixpath

from watcher.layout import INDEX as INDEX  # the report's entry point, as the layout places it (re-exported)
from watcher.layout import REPORT_FOLDER, scan_of_records


def scan_key(record: str) -> str:
    """The scan a record belongs to (see :func:`folder_key`)."""
    return folder_key(posixpath.dirname(record))


def folder_key(folder: str) -> str:
    """The scan whose records are in ``folder`` ("" at the top; see :func:`watcher.layout.scan_of_records`)."""
    return scan_of_records(folder)


def scan_folder(key: str) -> str:
    """Folder of a scan's pages."""
    return f"{REPORT_FOLDER}/{key}" if key else REPORT_FOLDER


def scan_page(key: str) -> str:
    return f"{scan_folder(key)}/{INDEX}"


def stack_page(record: str) -> str:
    """Page of the stack whose record is ``record`` (a stack named ``index`` must not take the scan's page)."""
    stem = posixpath.splitext(posixpath.basename(record))[0]
    name = f"{stem}.stack.html" if stem.lower() == "index" else f"{stem}.html"
    return f"{scan_folder(scan_key(record))}/{name}"


def thumbnail(record: str) -> str:
    """The thumbnail of the stack whose record is ``record`` (written by the worker from the result in memory)."""
    return f"{scan_folder(scan_key(record))}/{posixpath.splitext(posixpath.basename(record))[0]}.thumb.jpg"


def depth_thumbnail(record: str) -> str:
    """The thumbnail of that stack's depth map."""
    return f"{scan_folder(scan_key(record))}/{posixpath.splitext(posixpath.basename(record))[0]}.depth.thumb.png"


def scan_title(key: str) -> str:
    return key or "(top folder)"

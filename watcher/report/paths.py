"""Where the report's pages live, relative to the results folder (one home for the report's layout).

    index.html                                all scans
    report/<scan folder>/index.html           one scan: a grid of its positions
    report/<scan folder>/<stack>.html         one stack
    report/<scan folder>/<stack>.thumb.jpg    its thumbnail, and <stack>.depth.thumb.png its depth map's

Pages and thumbnails sit apart from the results, so a photogrammetry import of a results folder, or OpenScan's
upload of a ``stacked`` folder (which takes every .jpg in it), never meets them. A scan's folder is where its records
are, without the openscan layout's trailing ``stacked``. All paths here are POSIX and relative to the results folder.
"""

from __future__ import annotations

import posixpath

from watcher.service.results import OPENSCAN_FOLDER

INDEX = "index.html"
REPORT_FOLDER = "report"


def scan_key(record: str) -> str:
    """The scan a record belongs to (see :func:`folder_key`)."""
    return folder_key(posixpath.dirname(record))


def folder_key(folder: str) -> str:
    """The scan whose records are in ``folder``: the folder, without a trailing ``stacked``; "" at the top."""
    if posixpath.basename(folder) == OPENSCAN_FOLDER:
        folder = posixpath.dirname(folder)
    return "" if folder in ("", ".") else folder


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

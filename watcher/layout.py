"""The results folder's layout: where each file focus-watcher writes there goes (the one home of these rules).

::

    <results>/
        index.html                  the morning report's entry point
        focus-watcher.log           the daemon's log (JSON lines)
        .focus-watcher/             what is ours and not a result:
            pid                     the pid of the daemon that holds the results folder
            report/<scan>/          the report's pages, state and thumbnails
            stacks/<scan>/          openscan layout: the records and depth maps
        <scan>/...                  the results, laid out as ``results.layout`` says

Layouts (``results.layout``):

- ``mirror``: ``<scan>/<stack>.<ext>``, its record ``<stack>.json`` and depth map ``<stack>.depth.png`` beside it;
  a zip scan ``2024-...-owl.zip`` becomes the folder ``2024-...-owl``.
- ``openscan``: ``<scan>/stacked/stacked_<stack>.jpg``, where OpenScan3's own stacker puts its results, and
  nothing else of ours there but a raw stack's 16-bit image (below): the record and depth map go to
  ``.focus-watcher/stacks/<scan>/stacked_<stack>.json`` (and ``.depth.png``).

A stack of raw frames (DNG, camera raws) gets ``stacking.raw_output_format`` (``.tif`` by default, 16-bit): with
the mirror layout as its result's extension; with the openscan layout as a second, 16-bit image beside the JPEG,
``<scan>/stacked/stacked_<stack>.tif``. The firmware indexes and uploads only ``.jpg``/``.jpeg`` files from
``stacked`` (OpenScan3 58e1653, ``STACKED_PHOTO_SUFFIXES`` and ``ALLOWED_PHOTO_SUFFIXES``) and logs a warning only
for suffixes it knows it skips (``.png`` among them: hence TIFF); a download of a whole scan includes it.

Why one hidden folder of our own: with the openscan layout the results folder is OpenScan3's projects folder.
The firmware takes every folder holding an ``openscan_project.json`` for a project, and a project's name may not
start with a period, so no project can be ``.focus-watcher``. Its cloud upload walks a whole project folder, and
its ZIP download takes everything in a scan folder but the originals (all of ``stacked/`` when stacked photos are
preferred): a report folder that shares a project's name, or a record in ``stacked/``, would be shipped with the
photos. ``index.html`` and the log stay at the top, inside no project. Earlier builds kept the report in
``<results>/report/``, the pid in ``<results>/.focus-watcher.pid`` and openscan records in ``stacked/``
(:func:`old_openscan_record`).

All paths here are POSIX paths relative to the results folder; nothing here touches the disk.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

STATE_FOLDER = ".focus-watcher"
PID_FILE = f"{STATE_FOLDER}/pid"
REPORT_FOLDER = f"{STATE_FOLDER}/report"
STACKS_FOLDER = f"{STATE_FOLDER}/stacks"
INDEX = "index.html"
LOG_NAME = "focus-watcher.log"
OPENSCAN_FOLDER = "stacked"  # in a scan folder: OpenScan3's own place for stacked photos
OPENSCAN_PREFIX = "stacked_"
RECORD_SUFFIX = ".json"
DEPTH_SUFFIX = ".depth.png"


@dataclass(frozen=True)
class StackFiles:
    """Where one stack's files go, relative to the results folder."""

    image: str
    record: str
    depthmap: str
    deep_image: str | None = None  # openscan layout: a raw stack's 16-bit image beside the JPEG


def scan_parts(scan: str) -> list[str]:
    """The folders of a scan's results: its path's parts, a zip scan's ``.zip`` cut off."""
    parts = [part for part in scan.split("/") if part]
    if parts and parts[-1].lower().endswith(".zip"):
        parts[-1] = parts[-1][: -len(".zip")]
    return parts


def stack_files(scan: str, stack: str, layout: str, extension: str, raw_extension: str | None = None) -> StackFiles:
    """Where the result (``extension``: ``.jpg``...), record and depth map of ``stack`` of ``scan`` go.

    ``raw_extension``: the stack is of raw frames, whose result goes in this format (``.tif``...): as the result
    itself with the mirror layout, beside the JPEG (``deep_image``) with the openscan layout, unless it is the
    JPEG's own. The caller checks that the parts are safe path components (no ``..``, no ``/``).
    """
    folder = "/".join(scan_parts(scan))
    deep_image = None
    if layout == "openscan":
        stem = OPENSCAN_PREFIX + stack
        image = posixpath.join(folder, OPENSCAN_FOLDER, stem + extension)
        ours = posixpath.join(STACKS_FOLDER, folder) if folder else STACKS_FOLDER
        if raw_extension not in (None, extension):
            deep_image = posixpath.join(folder, OPENSCAN_FOLDER, stem + raw_extension)
    else:
        stem, ours = stack, folder
        image = posixpath.join(folder, stem + (raw_extension or extension))
    return StackFiles(image=image, record=posixpath.join(ours, stem + RECORD_SUFFIX),
                      depthmap=posixpath.join(ours, stem + DEPTH_SUFFIX), deep_image=deep_image)


def old_openscan_record(scan: str, stack: str) -> str:
    """Where earlier builds kept an openscan stack's record: in ``stacked/``, beside the result."""
    return posixpath.join(*scan_parts(scan), OPENSCAN_FOLDER, OPENSCAN_PREFIX + stack + RECORD_SUFFIX)


def new_place_of_old_record(old: str) -> str:
    """Where the record an earlier build kept at ``old`` (``<scan>/stacked/stacked_<stack>.json``) goes now."""
    scan, name = posixpath.split(posixpath.dirname(old))[0], posixpath.basename(old)
    return posixpath.join(STACKS_FOLDER, scan, name) if scan else posixpath.join(STACKS_FOLDER, name)


def records_root(layout: str) -> str:
    """The folder under which all records of a layout are ("" is the results folder itself: mirror)."""
    return STACKS_FOLDER if layout == "openscan" else ""


def scan_of_records(folder: str) -> str:
    """The scan whose records are in ``folder`` (as :func:`stack_files` places them; "" at the top)."""
    if folder == STACKS_FOLDER:
        return ""
    if folder.startswith(STACKS_FOLDER + "/"):
        return folder[len(STACKS_FOLDER) + 1:]
    return "" if folder in ("", ".") else folder

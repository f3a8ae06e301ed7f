"""A stack's inputs after it was stacked: are they still what was stacked, and disposing of them.

:func:`input_state` is the one answer to "is this input still the file that was stacked" (the same regular file:
size and mtime as seen): the Dask executor asks it before writing a result a cluster made, disposal before it
archives or deletes an input. A frame replaced meanwhile is never disposed of unstacked, nor given a result
stacked from its predecessor.
"""

from __future__ import annotations

import enum
import os
import shutil
import stat
from pathlib import Path

from watcher.atomic import fsync_folder
from watcher.config import ResultsSettings
from watcher.record import Signature


class InputState(enum.Enum):
    SAME = "same"  # the regular file of the size and mtime seen
    GONE = "gone"
    CHANGED = "changed"  # another size or mtime, or no longer a regular file


class InputsChanged(RuntimeError):
    """An input is no longer what was stacked: it is not archived or deleted."""


def input_state(path: Path, size: int, mtime_ns: int, *, member: bool = False) -> InputState:
    """What ``path`` is now, against the ``size`` and ``mtime_ns`` it was stacked with.

    ``member``: ``path`` is the zip holding the input, and only its mtime is compared (the zip's size is not the
    member's). Raises ``OSError`` when it cannot be looked at now (no permission, an I/O error).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return InputState.GONE
    if not stat.S_ISREG(info.st_mode):
        return InputState.CHANGED
    if info.st_mtime_ns != mtime_ns or (not member and info.st_size != size):
        return InputState.CHANGED
    return InputState.SAME


def dispose_inputs(settings: ResultsSettings, where: Path, namespace: str, inputs: Signature) -> str:
    """After a durable ``ok`` record: archive or delete (``settings.after_success``) the stack's input files,
    which are in the folder ``where`` (the hot folder's ``namespace``). Returns what was done.

    Only inputs that are still exactly what was stacked are touched: if any was replaced since, nothing is
    (:class:`InputsChanged`), and the stack is simply pending again with its new frame. Inputs already gone
    (a disposal interrupted by a crash) are skipped.
    """
    action = settings.after_success
    if action == "keep":
        return "kept"
    present = [(where / name, size, mtime) for name, size, mtime in inputs if _present(where / name, size, mtime)]
    for path, size, mtime in present:
        if input_state(path, size, mtime) is not InputState.SAME:  # replaced in the last moment: it wins
            raise InputsChanged(f"{path.name} changed since it was stacked")
        if action == "delete":
            path.unlink(missing_ok=True)
            continue
        target = _free_name(settings.archive_folder.joinpath(*[p for p in namespace.split("/") if p], path.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        _move_durably(path, target)
    if present:
        fsync_folder(where)
    return "archived" if action == "archive" else "deleted"


def _present(path: Path, size: int, mtime_ns: int) -> bool:
    """True if ``path`` is the file that was stacked, False if it is gone; raises if it changed."""
    state = input_state(path, size, mtime_ns)
    if state is InputState.CHANGED:
        raise InputsChanged(f"{path.name} changed since it was stacked")
    return state is InputState.SAME


def _free_name(target: Path) -> Path:
    """``target``, or ``name.2.jpg``, ``name.3.jpg``, ... if taken: archiving never overwrites an older input."""
    candidate, n = target, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
    return candidate


def _move_durably(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:
        # Another filesystem: copy, make the copy durable, then remove the original.
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        fsync_folder(target.parent)
        source.unlink()

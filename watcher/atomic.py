"""Atomic, durable file writes: no partial file is ever visible under its final name.

Used for every result the project writes (fused images, depth maps, JSON records), so that a power cut or a
``kill -9`` at any moment leaves either the old state or the complete new file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

TEMP_MARKER = ".tmp-"


def temp_name_for(path: Path) -> Path:
    """Hidden temp file beside ``path`` (same filesystem, so the final rename is atomic)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_name_for` (left behind only by a crash mid-write)."""
    return name.startswith(".") and TEMP_MARKER in name


def write_atomic(path: Path, data: bytes | bytearray | memoryview | Iterable) -> None:
    """Write ``data`` to ``path``: temp file in the same folder, fsync, rename, fsync the folder.

    ``data``: the bytes, or an iterable of bytes-like pieces written one after the other (a big image made piece
    by piece, never whole). Raises ``OSError`` (e.g. ENOSPC, EROFS) with the temp file removed; the previous
    ``path``, if any, is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name_for(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
            view = memoryview(piece).cast("B")
            while view:
                written = os.write(fd, view)
                view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (the directory entry itself must reach the disk)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

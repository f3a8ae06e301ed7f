"""Opening files that other people control: no link followed, no FIFO or device opened, no size trusted.

Everything in the hot folder is written by someone else (the capture firmware, a Samba user, a copy), so a
path checked a moment ago may now be a symlink to ``/dev/zero``, a FIFO that blocks ``open()`` forever, or a
different file. The rule here is *open, then check what was opened*: ``O_NOFOLLOW`` refuses a link as the last
path component, ``O_NONBLOCK`` keeps a FIFO from blocking the open, and ``fstat`` of the open descriptor -- not a
``stat`` of the path -- decides whether it is a regular file of an acceptable size. Reads are bounded by that
size, never by what a header or a zip's directory claims.

Two kinds of failure, because the daemon treats them differently:

- :class:`UnsafeFile` -- what is there is not acceptable (a link, a FIFO, a device, a folder, too large): an
  error of the *content*, which waiting does not fix.
- ``OSError`` -- the open or read itself failed (permission denied, I/O error, a stale network handle, the file
  gone): an error of the *environment*, worth waiting for.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# A zip member may not inflate to more than this many times its compressed size. Photos barely compress
# (JPEG ~1:1, 16-bit PNG/TIFF a few to one); deflate's own limit is ~1032:1, reached only by crafted data.
ZIP_MAX_RATIO = 100


class UnsafeFile(ValueError):
    """The path names something that must not be read: a symlink, a special file, or a file over its size limit.

    The message says what it is, without the file's name (the caller knows how to name it).
    """


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "something else"


@contextmanager
def open_regular(path: Path, *, max_bytes: int | None = None) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """Open ``path`` for reading only if it is a regular file (not a link to one) of at most ``max_bytes``.

    Yields the open binary file and its ``fstat``. Raises :class:`UnsafeFile` for a symlink, a FIFO, a device,
    a folder or a file over ``max_bytes``; ``OSError`` when the open itself fails (missing, no permission, I/O).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("a symbolic link (never followed)") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{_kind(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise UnsafeFile(f"{info.st_size} bytes, over the limit of {max_bytes}")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle, info


def read_regular(path: Path, *, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The whole content of a regular file of at most ``max_bytes`` (see :func:`open_regular`), and its fstat.

    Reads at most ``max_bytes`` even if the file grows meanwhile.
    """
    with open_regular(path, max_bytes=max_bytes) as (handle, info):
        return read_at_most(handle, max_bytes), info


def read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a regular file (any length)."""
    with open_regular(path) as (handle, _info):
        return read_at_most(handle, size)


def read_at_most(handle: BinaryIO, size: int) -> bytes:
    """Read until EOF or ``size`` bytes, whichever comes first, in pieces of at most 1 MiB."""
    chunks, left = [], size
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def check_member(info: zipfile.ZipInfo, max_bytes: int) -> None:
    """Refuse a zip member whose claimed sizes make it a bomb or too large to be a frame (:class:`UnsafeFile`).

    The claims are checked before anything is inflated; the reads that follow are bounded by them too, because
    :mod:`zipfile` stops a member at its claimed size (and checks its CRC).
    """
    if info.file_size > max_bytes:
        raise UnsafeFile(f"the zip says {info.file_size} bytes, over the limit of {max_bytes}")
    if info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1) and info.file_size > 1 << 20:
        raise UnsafeFile(f"the zip says it inflates {info.compress_size} bytes to {info.file_size}, more than "
                         f"{ZIP_MAX_RATIO}:1 (a zip bomb?)")

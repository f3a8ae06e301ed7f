"""OpenScan2 scan zips in the hot folder: which frames a zip holds, read from its directory alone.

A scan zip is a whole scan (OpenScan2 moves it into place when the scan ends). The daemon never extracts it
and never inflates a member in its own process: it reads the zip's central directory -- only when the zip
changed -- and hands members to workers, which read them bounded (:meth:`FrameSource.read_bytes`).

Everything a zip says about itself is untrusted. Before :mod:`zipfile` parses the directory, the end record's
member count and directory size are checked (a 4 MB zip can claim millions of members, each a Python object in
the daemon); then the sizes the members claim: a zip whose members claim more than
:data:`~watcher.untrusted.ZIP_MAX_RATIO` times the zip's own size is a bomb and refused whole. A single member
that claims too much fails its own stack when a worker reads it.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from watcher.untrusted import ZIP_MAX_RATIO, UnsafeFile, open_regular, read_at_most

MAX_MEMBERS = 20_000  # OpenScan2: up to a few hundred positions x 2-20 frames
_MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024  # a directory entry is 46 bytes plus its name and extras
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_TAIL = 22 + 0xFFFF  # the end record, and a comment of at most 64 KiB after it


class ArchiveRefused(ValueError):
    """A zip that will not be read: too many members, a directory too large, or claimed sizes of a bomb."""


@dataclass(frozen=True)
class ArchiveListing:
    """The frames a scan zip holds: member name -> claimed size (flat members only, folders left out)."""

    members: dict[str, int]


def list_members(path: Path) -> ArchiveListing | None:
    """The members of the scan zip at ``path``, or None while it is not a readable zip (still being written).

    Raises :class:`ArchiveRefused` for a zip that claims too much, ``OSError`` when it cannot be opened now.
    """
    try:
        with open_regular(path) as (handle, info):
            count, directory = _directory_size(handle, info.st_size)
            if count > MAX_MEMBERS or directory > _MAX_DIRECTORY_BYTES:
                raise ArchiveRefused(f"claims {count} members in a {directory}-byte directory (at most "
                                     f"{MAX_MEMBERS} are read)")
            with zipfile.ZipFile(handle) as archive:
                members = [m for m in archive.infolist() if not m.is_dir() and "/" not in m.filename.strip("/")]
    except UnsafeFile as exc:
        raise ArchiveRefused(str(exc)) from None
    except (zipfile.BadZipFile, EOFError, struct.error, NotImplementedError):
        return None
    claimed = sum(m.file_size for m in members)
    if claimed > ZIP_MAX_RATIO * max(info.st_size, 1) and claimed > 1 << 30:
        raise ArchiveRefused(f"its members claim {claimed} bytes in a {info.st_size}-byte zip, more than "
                             f"{ZIP_MAX_RATIO}:1 (a zip bomb?)")
    return ArchiveListing({m.filename: m.file_size for m in members})


def _directory_size(handle, size: int) -> tuple[int, int]:
    """(member count, central directory bytes) from the end records, before anything else is parsed."""
    start = max(0, size - _TAIL)
    handle.seek(start)
    tail = read_at_most(handle, size - start)
    at = tail.rfind(_END_RECORD)
    if at < 0 or at + 22 > len(tail):
        raise zipfile.BadZipFile("no end of central directory record")
    count, directory = struct.unpack_from("<HI", tail, at + 10)
    locator = at - 20
    if locator >= 0 and tail[locator:locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        if record + 56 > size:
            raise zipfile.BadZipFile("zip64 end record outside the file")
        handle.seek(record)
        zip64 = read_at_most(handle, 56)
        if len(zip64) < 56 or zip64[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("damaged zip64 end record")
        count, directory = struct.unpack_from("<QQ", zip64, 32)
    handle.seek(0, os.SEEK_SET)
    return count, directory

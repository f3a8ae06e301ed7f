"""Where a frame's bytes come from, and what can go wrong reading them: the part of the load stage that decodes
nothing, so the daemon can name a stack's frames and read a header for its memory estimate without loading the
engine (numpy, OpenCV: :mod:`watcher.stacking.frames` decodes).

A bad frame is a :class:`FrameError` that names it, so a stack's record says which file was bad. A frame that
could not be read for a reason outside the file -- no permission yet, an I/O error, a network share that blips,
the file replaced or removed since it was seen -- is a :class:`FrameUnavailable` instead: waiting may fix it.

Frames are opened the safe way (:mod:`watcher.untrusted`): a symlink, FIFO or device is refused after opening,
not checked by path beforehand, and no more bytes are read than a frame within the pixel limit can have.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from watcher.stacking.probe import ImageInfo, ProbeError, probe_image
from watcher.untrusted import UnsafeFile, check_member, open_regular, read_at_most

if TYPE_CHECKING:
    from watcher.stacking.develop import RawColour


class FrameError(ValueError):
    """A frame cannot be used: unreadable, truncated, too large, or not matching the stack."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class FrameUnavailable(Exception):
    """A frame could not be read because of the environment, not its content: try again later."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def max_file_bytes(max_pixels: int) -> int:
    """The largest file a frame of ``max_pixels`` can legitimately be: uncompressed 16-bit RGBA plus metadata."""
    return 8 * max_pixels + (64 << 20)


@dataclass(frozen=True)
class FrameSource:
    """Where a frame's bytes come from: a file, or a member of a zip archive (read without extracting).

    ``seen`` is the (size, mtime_ns) the caller saw when it chose this frame (for a zip member: the member's
    size and the zip's mtime). When given, a file that no longer matches it is not read: it is
    :class:`FrameUnavailable` ("changed since it was seen"), so a result always describes the inputs it names.
    ``colour``, for a raw frame: how its stack develops it (the reference frame's levels, white balance and
    matrix); None: as the file itself says.
    """

    name: str
    path: Path
    member: str | None = None
    seen: tuple[int, int] | None = None
    colour: RawColour | None = field(default=None, compare=False)

    @classmethod
    def of(cls, item: FrameSource | Path | str) -> FrameSource:
        if isinstance(item, FrameSource):
            return item
        path = Path(item)
        return cls(name=path.name, path=path)

    def read_bytes(self, max_bytes: int) -> bytes:
        """The frame's encoded bytes, at most ``max_bytes`` of them.

        Raises :class:`FrameError` (content: a link, a special file, too large, a damaged zip) or
        :class:`FrameUnavailable` (environment: cannot open or read now, or changed since it was seen).
        """
        return self._read(max_bytes, whole=True)

    def read_head(self, size: int) -> bytes:
        """The first ``size`` bytes (a header), inflating no more of a zip member than that. Same errors."""
        return self._read(size, whole=False)

    def _read(self, size: int, *, whole: bool) -> bytes:
        try:
            with open_regular(self.path, max_bytes=size if whole and self.member is None else None) as (handle, info):
                if self.member is None:
                    self._check_seen(info.st_size, info.st_mtime_ns)
                    data = read_at_most(handle, size)
                else:
                    with zipfile.ZipFile(handle) as archive:
                        member = archive.getinfo(self.member)
                        self._check_seen(member.file_size, info.st_mtime_ns)
                        if whole:
                            check_member(member, size)
                        with archive.open(member) as stream:
                            data = stream.read(size)
                after = os.fstat(handle.fileno())
        except UnsafeFile as exc:
            raise FrameError(self.name, str(exc)) from None
        except KeyError:
            raise FrameUnavailable(self.name, f"no longer in {self.path.name}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise FrameError(self.name, f"damaged zip {self.path.name}: {exc}") from None
        except OSError as exc:
            raise FrameUnavailable(self.name, f"cannot read: {exc.strerror or exc}") from None
        if (after.st_size, after.st_mtime_ns) != (info.st_size, info.st_mtime_ns):
            raise FrameUnavailable(self.name, "changed while it was being read")
        return data

    def _check_seen(self, size: int, mtime_ns: int) -> None:
        if self.seen is not None and (size, mtime_ns) != self.seen:
            raise FrameUnavailable(self.name, "changed since it was seen (size or mtime differ)")


HEADER_BYTES = 256 << 10  # enough for any JPEG header, a large EXIF block and its thumbnail included


def read_header(source: FrameSource) -> ImageInfo:
    """Size and bit depth of a frame from its first :data:`HEADER_BYTES` (nothing more is read or inflated).

    Raises :class:`FrameError` (not an image, a link, a damaged zip) or :class:`FrameUnavailable`.
    """
    try:
        return probe_image(source.read_head(HEADER_BYTES), whole_file=False)
    except ProbeError as exc:
        raise FrameError(source.name, str(exc)) from None

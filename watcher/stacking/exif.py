"""Read and add tags in a TIFF-structured EXIF block: the bytes a JPEG's APP1 segment and a PNG's eXIf chunk carry,
from the byte-order mark (``II*\\0`` little-endian, ``MM\\0*`` big-endian) on.

Only the two directories photogrammetry tools read camera data from are touched: IFD0 (Make, Model) and the
Exif sub-IFD it points to (FocalLength, FocalLengthIn35mmFilm, FocalPlane*Resolution). Tags are added by
appending: the new directories and their values go after the original bytes and the header points to the new
IFD0, so every offset in the block (the thumbnail in IFD1, GPS, MakerNote) stays valid and every tag the camera
wrote is kept byte for byte. The old directories stay behind unreferenced: a few hundred bytes.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from watcher.stacking.tiff import ASCII, LONG, RATIONAL, SHORT

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_EXIF_IFD_POINTER = 0x8769
_MAX_BYTES = 65_527  # a JPEG APP1 segment holds 65533 bytes, less its "Exif\0\0" header

# name -> (tag, directory, type), as the EXIF standard (CIPA DC-008) defines them; tabulated in
# hMatoba/Piexif piexif/_exif.py (08dc1eb), and read back under these names by Pillow and ExifTool
TAGS: dict[str, tuple[int, str, int]] = {
    "Make": (0x010F, "ifd0", ASCII),
    "Model": (0x0110, "ifd0", ASCII),
    "FocalLength": (0x920A, "exif", RATIONAL),
    "FocalPlaneXResolution": (0xA20E, "exif", RATIONAL),
    "FocalPlaneYResolution": (0xA20F, "exif", RATIONAL),
    "FocalPlaneResolutionUnit": (0xA210, "exif", SHORT),
    "FocalLengthIn35mmFilm": (0xA405, "exif", SHORT),
}
_NAMES = {tag: name for name, (tag, _, _) in TAGS.items()}

Value = str | int | Fraction


class ExifError(ValueError):
    """The block is not TIFF-structured EXIF, or its directories run past its end."""


def read_tags(exif: bytes) -> dict[str, str | int | float | None]:
    """The tags of :data:`TAGS` that ``exif`` holds, wherever it holds them (IFD0 or the Exif sub-IFD).

    Parameters
    ----------
    exif : bytes
        TIFF-structured EXIF, from the byte-order mark on.

    Returns
    -------
    dict
        Tag name -> value: ASCII as ``str`` (without its NUL), SHORT and LONG as ``int``, RATIONAL as ``float``
        (``nan`` for a zero denominator). A tag whose type is not the expected one is reported as present
        with value ``None``: it is still the camera's, and must not be written again.

    Raises
    ------
    ExifError
        Not TIFF-structured, or a directory or value past the end of the block.
    """
    return _Block(exif).tags()


def add_tags(exif: bytes, values: dict[str, Value]) -> tuple[bytes, list[str]]:
    """A copy of ``exif`` with the tags of ``values`` that it lacks; tags it has are never changed.

    Parameters
    ----------
    exif : bytes
        TIFF-structured EXIF, little- or big-endian (the new entries are written in its byte order).
    values : dict
        Tag name (a key of :data:`TAGS`) -> value: ``str`` for ASCII, ``int`` for SHORT, ``Fraction`` for
        RATIONAL (numerator and denominator must fit 32 bits).

    Returns
    -------
    exif : bytes
        The new block (``exif`` itself when nothing was added).
    added : list of str
        The names of the tags added, in the order of ``values``.

    Raises
    ------
    ExifError
        ``exif`` is unreadable (see :func:`read_tags`), or the new block would not fit a JPEG APP1 segment.
    """
    block = _Block(exif)
    present = block.tags()
    added = [name for name in values if name not in present]
    if not added:
        return exif, []
    order = block.order
    out = bytearray(exif)
    new_ifd0 = [e for e in block.ifd0 if struct.unpack_from(order + "H", e)[0] != _EXIF_IFD_POINTER]
    new_ifd0 += [_new_entry(out, order, name, values[name]) for name in added if TAGS[name][1] == "ifd0"]
    for_exif = [_new_entry(out, order, name, values[name]) for name in added if TAGS[name][1] == "exif"]
    exif_offset = block.exif_offset
    if for_exif:
        exif_offset = _append_ifd(out, order, block.exif_ifd + for_exif, block.exif_next)
    if exif_offset is not None:
        new_ifd0.append(struct.pack(order + "HHII", _EXIF_IFD_POINTER, LONG, 1, exif_offset))
    ifd0_offset = _append_ifd(out, order, new_ifd0, block.ifd0_next)
    struct.pack_into(order + "I", out, 4, ifd0_offset)
    if len(out) > _MAX_BYTES:
        raise ExifError(f"no room: the EXIF block would be {len(out)} bytes, over the {_MAX_BYTES} a JPEG holds")
    return bytes(out), added


class _Block:
    """IFD0 and the Exif sub-IFD of a TIFF-structured block, as raw 12-byte entries."""

    def __init__(self, exif: bytes) -> None:
        if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
            raise ExifError("not TIFF-structured EXIF (no II*/MM* header)")
        self.data = exif
        self.order = "<" if exif[:2] == b"II" else ">"
        try:
            (ifd0,) = struct.unpack_from(self.order + "I", exif, 4)
            self.ifd0, self.ifd0_next = self._directory(ifd0)
            pointer = next((e for e in self.ifd0 if struct.unpack_from(self.order + "H", e)[0] == _EXIF_IFD_POINTER),
                           None)
            self.exif_offset: int | None = None
            self.exif_ifd: list[bytes] = []
            self.exif_next = 0
            if pointer is not None:
                (self.exif_offset,) = struct.unpack_from(self.order + "I", pointer, 8)
                self.exif_ifd, self.exif_next = self._directory(self.exif_offset)
        except struct.error:
            raise ExifError("a directory runs past the end of the EXIF block") from None

    def tags(self) -> dict[str, str | int | float | None]:
        found: dict[str, str | int | float | None] = {}
        for entries in (self.ifd0, self.exif_ifd):
            for entry in entries:
                tag, kind, count = struct.unpack_from(self.order + "HHI", entry)
                if tag in _NAMES and _NAMES[tag] not in found:
                    found[_NAMES[tag]] = self.value(entry, kind, count)
        return found

    def _directory(self, offset: int) -> tuple[list[bytes], int]:
        (count,) = struct.unpack_from(self.order + "H", self.data, offset)
        entries = [self.data[offset + 2 + 12 * k: offset + 14 + 12 * k] for k in range(count)]
        (following,) = struct.unpack_from(self.order + "I", self.data, offset + 2 + 12 * count)
        return entries, following

    def value(self, entry: bytes, kind: int, count: int) -> str | int | float | None:
        size = _TYPE_SIZES.get(kind, 0) * count
        if size <= 4:
            raw = entry[8:8 + size]
        else:
            (offset,) = struct.unpack_from(self.order + "I", entry, 8)
            if offset + size > len(self.data):
                raise ExifError("a value runs past the end of the EXIF block")
            raw = self.data[offset:offset + size]
        if kind == ASCII:
            return raw.split(b"\0", 1)[0].decode("latin-1").strip()
        if kind in (SHORT, LONG) and count >= 1:
            return struct.unpack_from(self.order + ("H" if kind == SHORT else "I"), raw)[0]
        if kind == RATIONAL and count >= 1:
            numerator, denominator = struct.unpack_from(self.order + "II", raw)
            return numerator / denominator if denominator else float("nan")
        return None


def _new_entry(out: bytearray, order: str, name: str, value: Value) -> bytes:
    """The 12-byte entry for ``name``; a value longer than 4 bytes is appended to ``out`` first."""
    tag, _, kind = TAGS[name]
    if kind == ASCII:
        payload = str(value).encode("ascii") + b"\0"
        count = len(payload)
    elif kind == SHORT:
        payload, count = struct.pack(order + "H", int(value)), 1
    else:
        fraction = Fraction(value)
        payload, count = struct.pack(order + "II", fraction.numerator, fraction.denominator), 1
    if len(payload) <= 4:
        return struct.pack(order + "HHI", tag, kind, count) + payload.ljust(4, b"\0")
    return struct.pack(order + "HHII", tag, kind, count, _append(out, payload))


def _append_ifd(out: bytearray, order: str, entries: list[bytes], following: int) -> int:
    """Append a directory of ``entries`` (sorted by tag, as TIFF requires) to ``out``; its offset."""
    entries = sorted(entries, key=lambda e: struct.unpack_from(order + "H", e)[0])
    return _append(out, struct.pack(order + "H", len(entries)) + b"".join(entries)
                   + struct.pack(order + "I", following))


def _append(out: bytearray, payload: bytes) -> int:
    """Append ``payload`` at the next word boundary (TIFF offsets are even); its offset."""
    if len(out) % 2:
        out.append(0)
    offset = len(out)
    out += payload
    return offset

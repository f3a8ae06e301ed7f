"""Read an image's size and bit depth from its header, before any pixel is decoded.

Decoding first and checking afterwards would let a 20000x20000 "decompression bomb" allocate gigabytes on a
1 GiB Raspberry Pi; the header costs nothing. Also checks that a JPEG is complete (ends with its EOI marker):
OpenCV happily decodes a truncated JPEG with grey bottom rows and only a libjpeg warning.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ProbeError(ValueError):
    """The bytes are not a complete, supported image (JPEG, PNG, TIFF)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png" | "tiff"
    width: int  # px, as stored (before EXIF orientation)
    height: int
    bits: int  # bits per sample

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(data: bytes | memoryview, *, whole_file: bool = True) -> ImageInfo:
    """Size and bit depth of an encoded JPEG, PNG or TIFF image.

    Parameters
    ----------
    data : bytes
        The encoded file: all of it, or (``whole_file=False``) its first few hundred KiB.
    whole_file : bool
        Check that a JPEG ends with its end-of-image marker (needs the whole file).

    Raises
    ------
    ProbeError
        Unknown format, damaged header, or a JPEG without its end-of-image marker (truncated).
    """
    head = bytes(data[:8])
    if head.startswith(b"\xff\xd8"):
        info = _probe_jpeg(data)
        if whole_file and not jpeg_is_complete(data):
            raise ProbeError("truncated JPEG: no end-of-image marker (FF D9)")
        return info
    if head == _PNG_SIGNATURE:
        return _probe_png(data)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _probe_tiff(data)
    if not head:
        raise ProbeError("empty file")
    raise ProbeError("not a JPEG, PNG or TIFF image")


def jpeg_is_complete(data: bytes | memoryview) -> bool:
    """True if the JPEG ends with its end-of-image marker FF D9 (zero padding after it is allowed).

    ``data`` may be just the file's last few KiB.
    """
    return bytes(data[-4096:]).rstrip(b"\x00").endswith(b"\xff\xd9")


def png_is_complete(data: bytes | memoryview) -> bool:
    """True if the PNG ends with its IEND chunk (``data`` may be just the file's tail)."""
    return bytes(data[-12:]) == b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _probe_jpeg(data: bytes | memoryview) -> ImageInfo:
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            raise ProbeError("damaged JPEG header")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", bytes(data[pos + 2 : pos + 4]))
        if marker in _JPEG_SOF:
            if pos + 9 > size:
                break
            bits, height, width = struct.unpack(">BHH", bytes(data[pos + 4 : pos + 9]))
            if width == 0 or height == 0:
                raise ProbeError("JPEG header gives a zero size")
            return ImageInfo("jpeg", width, height, bits)
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise ProbeError("JPEG without a frame header")


def _probe_png(data: bytes | memoryview) -> ImageInfo:
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise ProbeError("damaged PNG header")
    width, height, bits = struct.unpack(">IIB", bytes(data[16:25]))
    if width == 0 or height == 0:
        raise ProbeError("PNG header gives a zero size")
    return ImageInfo("png", width, height, bits)


def _probe_tiff(data: bytes | memoryview) -> ImageInfo:
    order = "<" if bytes(data[:2]) == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", bytes(data[4:8]))
        (count,) = struct.unpack(order + "H", bytes(data[ifd : ifd + 2]))
        tags: dict[int, int] = {}
        for k in range(count):
            entry = bytes(data[ifd + 2 + 12 * k : ifd + 14 + 12 * k])
            tag, kind, n = struct.unpack(order + "HHI", entry[:8])
            if kind == 3:  # SHORT; more than two values live at an offset
                start = entry[8:10] if n <= 2 else bytes(data[_offset(order, entry) :][:2])
                (value,) = struct.unpack(order + "H", start)
            elif kind == 4:  # LONG
                (value,) = struct.unpack(order + "I", entry[8:12])
            else:
                continue
            tags[tag] = value
    except struct.error:
        raise ProbeError("damaged TIFF header") from None
    width, height = tags.get(256, 0), tags.get(257, 0)
    if width == 0 or height == 0:
        raise ProbeError("TIFF header without an image size")
    return ImageInfo("tiff", width, height, tags.get(258, 1))


def _offset(order: str, entry: bytes) -> int:
    return struct.unpack(order + "I", entry[8:12])[0]

"""Read an image's size and bit depth from its header, before any pixel is decoded; and tell whether a file is
whole -- the one place that knows, for each format, what a complete file looks like.

Decoding first and checking afterwards would let a 20000x20000 "decompression bomb" allocate gigabytes on a
1 GiB Raspberry Pi; the header costs nothing. A JPEG is complete when it ends with its EOI marker (OpenCV happily
decodes a truncated JPEG with grey bottom rows and only a libjpeg warning), a PNG with its IEND chunk; a raw file
(DNG and the other TIFF-based raws, CR3, RAF) when its structure lies inside the file
(:mod:`watcher.stacking.rawfile`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import PurePath

from watcher.stacking.rawfile import Damaged, NotTiff, Source, raw_header, raw_is_whole

# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Raw formats, by the suffix cameras give them: DNG, Canon, Nikon, Sony, Olympus, Panasonic, Fujifilm, Pentax,
# Samsung, Leica, Hasselblad, Phase One, Minolta, Sigma, Kodak, and OpenScan3's gphoto2 fallback ".raw". All are
# read through LibRaw (uncompressed DNGs by focus-watcher itself), by content: the suffix says a file is raw.
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
                ".pef", ".srw", ".rwl", ".3fr", ".iiq", ".mrw", ".x3f", ".kdc", ".dcr", ".raw")
_TAIL_BYTES = 4096  # where a JPEG's end marker (with the zero padding some cameras add) or a PNG's IEND is sought
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00")  # TIFF, ORF, RW2


class ProbeError(ValueError):
    """The bytes are not a complete, supported image (JPEG, PNG, TIFF, or a raw file with a TIFF structure)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png" | "tiff" | "dng" | "raw" (a TIFF-based camera raw)
    width: int  # px, as stored (before EXIF orientation)
    height: int
    bits: int  # bits per sample

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def is_raw(self) -> bool:
        return self.format in ("dng", "raw")


def is_raw_name(name: str) -> bool:
    """Whether a file name has a raw format's suffix (:data:`RAW_SUFFIXES`), in any case."""
    return PurePath(name).suffix.lower() in RAW_SUFFIXES


def probe_image(data: bytes | memoryview, *, whole_file: bool = True) -> ImageInfo:
    """Size and bit depth of an encoded JPEG, PNG or TIFF image, or of the raw image of a TIFF-structured raw file.

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
    if head[:4] in _TIFF_MAGICS:
        return _probe_tiff(data, whole_file)
    if not head:
        raise ProbeError("empty file")
    if head[4:8] == b"ftyp" or head.startswith(b"FUJIFILMCCD-RAW"):
        raise ProbeError("a CR3 or RAF raw file: its size is known only once LibRaw opens it")
    raise ProbeError("not a JPEG, PNG or TIFF image")


def jpeg_is_complete(data: bytes | memoryview) -> bool:
    """True if the JPEG ends with its end-of-image marker FF D9 (zero padding after it is allowed).

    ``data`` may be just the file's last few KiB.
    """
    return bytes(data[-4096:]).rstrip(b"\x00").endswith(b"\xff\xd9")


def png_is_complete(data: bytes | memoryview) -> bool:
    """True if the PNG ends with its IEND chunk (``data`` may be just the file's tail)."""
    return bytes(data[-12:]) == b"\x00\x00\x00\x00IEND\xaeB`\x82"


def file_is_whole(name: str, fd: int, size: int) -> bool:
    """Whether the file ``name`` open as ``fd``, ``size`` bytes long, is whole by its format, from its suffix: a
    JPEG ends with its end marker, a PNG with IEND, a raw file's structure lies inside it. TIFF (and anything
    else) has no such mark: True, and the settle time alone decides. Reads at most a few KiB, at offsets."""
    suffix = PurePath(name).suffix.lower()
    if suffix in RAW_SUFFIXES:
        return size > 0 and raw_is_complete(fd)
    if suffix in (".jpg", ".jpeg", ".png"):
        tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
        return png_is_complete(tail) if suffix == ".png" else size > 0 and jpeg_is_complete(tail)
    return True


def raw_is_complete(fd: int) -> bool:
    """True if the raw file open as ``fd`` is whole: its structure (IFDs, strips and tiles; CR3's boxes; RAF's
    blocks) lies inside the file. Reads only the structure (under a KiB for a Picamera2 DNG), at offsets."""
    return raw_is_whole(Source(fd=fd))[0]


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


def _probe_tiff(data: bytes | memoryview, whole_file: bool) -> ImageInfo:
    try:
        header = raw_header(Source(data, partial=not whole_file))
    except NotTiff as exc:
        raise ProbeError(str(exc)) from None
    except Damaged as exc:
        raise ProbeError(f"damaged TIFF header: {exc}") from None
    if header.width == 0 or header.height == 0:
        raise ProbeError("TIFF header without an image size")
    fmt = "dng" if header.dng else ("raw" if header.cfa or bytes(data[2:4]) not in (b"*\x00", b"\x00*") else "tiff")
    return ImageInfo(fmt, header.width, header.height, header.bits)

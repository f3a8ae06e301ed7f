"""Save stage: turn the fused image into the output file's bytes, with the reference frame's EXIF and colour profile.

EXIF and ICC profiles go into JPEG and PNG through OpenCV's ``imencodeWithMetadata`` (OpenCV >= 4.13), the whole
EXIF block as the camera wrote it. OpenCV writes no metadata into TIFF: a TIFF result gets the camera fields (make,
model, exposure, f-number, ISO, focal length, date, orientation) and the profile as tags of its own
(:mod:`watcher.stacking.tiff`, which also writes 16-bit TIFFs, uncompressed, strip by strip). Thumbnails for the
report are made here too, from the arrays already in memory: the result is never decoded again.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable

import cv2
import numpy as np

from watcher.stacking import tiff
from watcher.stacking.formats import FORMATS
from watcher.stacking.metadata import fields_of_exif, result_tags

_ORIENTATION_TAG = 0x0112
THUMBNAIL_SIDE = 320  # px, longest side: a report's grid tile, sharp on a phone's high-density screen


SHARPEN_SIGMA = 1.0  # px: the unsharp mask's Gaussian
SHARPEN_MARGIN = 4  # rows of context an image strip needs for unsharp_mask to equal it on the whole image


def unsharp_mask(image: np.ndarray, amount: float) -> None:
    """Sharpen a float image in place: ``image += amount * (image - gaussian(image, SHARPEN_SIGMA))``."""
    blurred = cv2.GaussianBlur(image, (0, 0), SHARPEN_SIGMA)
    cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0.0, dst=image)


def to_output_dtype(image: np.ndarray, dtype: type[np.integer]) -> np.ndarray:
    """Round a float image in [0, 1] to ``dtype`` (uint8 or uint16); ``image`` is used as scratch space."""
    top = np.float32(np.iinfo(dtype).max)
    image *= top
    np.clip(image, 0.0, top, out=image)
    np.rint(image, out=image)
    return image.astype(dtype)


@functools.cache
def srgb_encoding_table() -> np.ndarray:
    """Linear light (uint16, 0..65535) -> sRGB-encoded uint16 (IEC 61966-2-1's curve), for results of raw frames."""
    linear = np.arange(65536, dtype=np.float64) / 65535.0
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.round(encoded * 65535.0).astype(np.uint16)


@functools.cache
def _eight_bit_table() -> np.ndarray:
    return ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def srgb_encoded(linear: np.ndarray) -> np.ndarray:
    """Linear-light uint16 samples -> sRGB-encoded uint16 (a new array)."""
    return np.take(srgb_encoding_table(), linear)


def to_8_bit(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8: 16-bit values rounded to the nearest 8-bit step (x / 257); 8-bit returned as is."""
    if image.dtype == np.uint8:
        return image
    return np.take(_eight_bit_table(), image)  # by table: no temporary wider than the result


def thumbnail(image: np.ndarray, longest_side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A small 8-bit copy of an image already in memory (the result or its depth map), for the report.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3) or (H, W), uint8 or uint16
    longest_side : int
        Pixels of the longer side of the thumbnail; smaller images are not enlarged.

    Returns
    -------
    ndarray, shape (h, w, 3) or (h, w), uint8
        Area-averaged (no aliasing of fine texture), aspect ratio kept, never sharing memory with ``image``.
    """
    height, width = image.shape[:2]
    scale = min(1.0, longest_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        small = image.copy()
    return to_8_bit(small)


def encode_image(image: np.ndarray, fmt: str, *, jpeg_quality: int = 95, exif: bytes | None = None,
                 icc: bytes | None = None) -> tuple[bytes, list[str]]:
    """:func:`encoded`, as one ``bytes``."""
    pieces, warnings = encoded(image, fmt, jpeg_quality=jpeg_quality, exif=exif, icc=icc)
    return b"".join(pieces), warnings


def encoded(image: np.ndarray, fmt: str, *, jpeg_quality: int = 95, exif: bytes | None = None,
            icc: bytes | None = None) -> tuple[Iterable, list[str]]:
    """Encode ``image`` ((H, W, 3) or (H, W), uint8 or uint16) as ``fmt`` ("jpg", "png", "tif").

    ``exif``: a TIFF-structured EXIF block; ``icc``: an ICC profile of the colour space the pixels are in. Returns
    the file's bytes as pieces to write in order (a 16-bit TIFF is made strip by strip as it is written: see
    :mod:`watcher.stacking.tiff`), and warnings. 16-bit images become 8-bit for JPEG, which has no 16-bit mode.
    """
    warnings: list[str] = []
    if fmt == "jpg" and image.dtype == np.uint16:
        image = to_8_bit(image)
        warnings.append("JPEG is 8-bit: 16-bit result reduced to 8 bits")
    params = {
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality],
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 3],  # fast; level 9 is 5x slower for ~5 % smaller files
        "tif": [cv2.IMWRITE_TIFF_COMPRESSION, 8],  # Adobe deflate: lossless, widely read
    }[fmt]
    if fmt == "tif" and image.dtype == np.uint16 and image.ndim == 3:
        return tiff.rgb16_chunks(image, *result_tags(fields_of_exif(exif), icc)), warnings
    metadata = [(kind, block) for kind, block in ((cv2.IMAGE_METADATA_EXIF, exif), (cv2.IMAGE_METADATA_ICCP, icc))
                if block]
    if metadata and fmt != "tif":
        ok, buffer = cv2.imencodeWithMetadata(FORMATS[fmt], image, [kind for kind, _ in metadata],
                                              [np.frombuffer(block, np.uint8) for _, block in metadata], params)
    else:
        ok, buffer = cv2.imencode(FORMATS[fmt], image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {fmt}")
    if metadata and fmt == "tif":
        return [tiff.with_tags(buffer, *result_tags(fields_of_exif(exif), icc))], warnings
    return [buffer], warnings


def upright_exif(exif: bytes) -> bytes:
    """Copy of a TIFF-structured EXIF block with Orientation set to 1 (top-left).

    Frames are rotated upright when decoded, so the result must not ask viewers to rotate it again; every other
    tag (camera, lens, focal length, date) is kept byte for byte. Unparseable blocks are returned unchanged.
    """
    found = _orientation_entry(exif)
    if found is None:
        return exif
    order, offset = found
    patched = bytearray(exif)
    struct.pack_into(order + "H", patched, offset, 1)
    return bytes(patched)


def exif_orientation(exif: bytes | None) -> int:
    """The Orientation an EXIF block asks viewers to apply (1: none, as stored; 1 when absent or unreadable)."""
    found = _orientation_entry(exif) if exif else None
    if found is None:
        return 1
    order, offset = found
    return struct.unpack_from(order + "H", exif, offset)[0]


def _orientation_entry(exif: bytes) -> tuple[str, int] | None:
    """Byte order and offset of the Orientation value in the first IFD of a TIFF-structured EXIF block."""
    if len(exif) < 8 or exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if exif[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for index in range(count):
            entry = ifd + 2 + 12 * index
            tag, kind = struct.unpack_from(order + "HH", exif, entry)
            if tag == _ORIENTATION_TAG and kind == 3:
                struct.unpack_from(order + "H", exif, entry + 8)  # the value is there
                return order, entry + 8
    except struct.error:
        pass
    return None

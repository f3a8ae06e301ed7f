"""Load stage for raw frames: a DNG or camera raw file becomes linear 16-bit BGR (:mod:`watcher.stacking.frames`
wraps it into a :class:`~watcher.stacking.frames.Frame`).

Before anything is decoded the file must be whole (:mod:`watcher.stacking.rawfile`: DNG has no end marker, its
structure is checked instead) and its header must declare no more pixels than the limit. Then its colour filter
array (CFA) is read:

- by this module, for uncompressed DNGs with a 2x2 Bayer CFA -- what Picamera2 writes (one strip of 10-, 12- or
  16-bit samples, packed as TIFF packs them): a few hundredths of a second per 16 MP frame, and no second copy of
  the file;
- by LibRaw (rawpy) for everything else it knows: camera raws (CR2, CR3, NEF, ARW, ORF, RW2, RAF, ...) and
  compressed DNGs.

A 3-colour Bayer CFA is then developed by :mod:`watcher.stacking.develop`: half size (one pixel per 2x2 quad) for
the measuring pass, full size for the merge -- demosaicked only where the merge reads (:class:`RawPixels`). Other
sensors (Fujifilm X-Trans, LinearRaw DNGs) are developed whole by LibRaw, with the same settings. Every frame of a
stack is developed with the reference frame's :class:`~watcher.stacking.develop.RawColour`.

rawpy is imported on first use, inside the stacking process: LibRaw's OpenMP runtime reads ``OMP_NUM_THREADS`` when
it is loaded, and the worker pool's forkserver (which imports this module) must never start its threads.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from watcher.stacking.develop import RawColour, UnknownCamera, develop_block, develop_half
from watcher.stacking.metadata import camera_fields
from watcher.stacking.rawfile import (
    PHOTOMETRIC_CFA,
    TILE_LENGTH,
    TILE_WIDTH,
    Damaged,
    NotTiff,
    RawHeader,
    Source,
    TiffWalk,
    images,
    raw_header,
    raw_is_whole,
    walk_tiff,
    what_it_is,
)

_CFA_REPEAT, _CFA_PATTERN, _LINEARIZATION, _BLACK_DELTA_H, _BLACK_DELTA_V = 33421, 33422, 50712, 50715, 50716
_ACTIVE_AREA = 50829
_UNPACK_ROWS = 256  # rows unpacked at a time: the temporaries stay a few MB whatever the frame size
_STRIP_ROWS = 128  # rows developed at a time when a whole frame is asked for
_LIBRAW_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}  # LibRaw's sizes.flip -> EXIF Orientation
_CFA_LETTERS = "RGBG"


class RawError(ValueError):
    """The file is not a usable raw frame: damaged, truncated, too large, unknown, or unlike the reference's."""


@dataclass(frozen=True)
class DecodedRaw:
    """A decoded raw frame.

    Attributes
    ----------
    pixels : RawPixels or ndarray, shape (H', W', 3), uint16
        Linear BGR (65535 = the sensor's white): full size, or a reduced copy for the measuring pass.
    full_shape : (H, W)
        The frame's size (``pixels`` is smaller when reduced).
    fields : dict
        Camera fields for the result's EXIF (:func:`~watcher.stacking.metadata.camera_fields`), with the
        orientation the raw file asks for (its pixels are not turned).
    """

    pixels: RawPixels | np.ndarray
    full_shape: tuple[int, int]
    fields: dict


class RawPixels:
    """A raw frame's full-size linear BGR pixels, demosaicked only where they are read.

    ``pixels[rows, cols]`` (slices, step 1) develops that block alone; ``np.asarray(pixels)`` the whole frame,
    strip by strip. Holds the CFA (2 bytes per pixel) and the colour, never a developed frame.
    """

    dtype = np.dtype(np.uint16)
    ndim = 3

    def __init__(self, cfa: np.ndarray, colour: RawColour) -> None:
        self.cfa = cfa
        self.colour = colour
        self._tables = colour.site_tables()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.cfa.shape, 3)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = (slice(*s.indices(n)) for s, n in zip(key, self.cfa.shape))
        return develop_block(self.cfa, self.colour, rows, cols, self._tables)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        height, width = self.cfa.shape
        out = np.empty((height, width, 3), np.uint16)
        for top in range(0, height, _STRIP_ROWS):
            rows = slice(top, min(height, top + _STRIP_ROWS))
            out[rows] = develop_block(self.cfa, self.colour, rows, slice(0, width), self._tables)
        return out if dtype is None else out.astype(dtype)


def decode_raw(data: bytes, *, max_pixels: int, colour: RawColour | None = None,
               reduction: Callable[[int, int], int] | None = None) -> DecodedRaw:
    """Decode a raw file's bytes.

    Parameters
    ----------
    data : bytes
        The whole file.
    max_pixels : int
        Files whose header declares more pixels are refused before decoding.
    colour : RawColour, optional
        The stack's development (its reference frame's); None: the frame's own.
    reduction : callable (width, height) -> int, optional
        For a reduced copy (the measuring pass): the factor to reduce a frame of that size by (1, 2, 4, 8); the
        copy is made from the half-size develop. None: full size, demosaicked where it is read.

    Raises
    ------
    RawError
        Not a raw file, truncated or damaged, over the pixel limit, unknown to LibRaw, or unlike ``colour``.
    """
    walk, _header = _checked(data, max_pixels)
    fields = camera_fields(walk) if walk is not None else {}
    reader = _own_reader(walk) if walk is not None else None
    if reader is not None:
        cfa, pattern, white = reader(data)
        _check_like(pattern, white, colour)
        colour = colour or raw_colour(data, max_pixels=max_pixels)
        full_shape = cfa.shape
    else:
        with _libraw(data, max_pixels) as raw:
            own = RawColour.of(raw)
            _check_like(own.pattern, own.white, colour)
            colour = colour or own
            full_shape = (raw.sizes.height, raw.sizes.width)
            fields = fields or _libraw_fields(raw)
            reduce = 1 if reduction is None else reduction(full_shape[1], full_shape[0])
            if colour.pattern is None:  # not 3-colour Bayer: LibRaw develops it whole
                return DecodedRaw(_libraw_develop(raw, colour, full_shape, reduce), full_shape, fields)
            cfa = np.array(raw.raw_image_visible, np.uint16)
    if reduction is None:
        return DecodedRaw(RawPixels(cfa, colour), full_shape, fields)
    reduce = reduction(full_shape[1], full_shape[0])
    if reduce == 1:
        return DecodedRaw(np.asarray(RawPixels(cfa, colour)), full_shape, fields)
    return DecodedRaw(_reduced(develop_half(cfa, colour), full_shape, reduce), full_shape, fields)


def _container(head: bytes) -> str | None:
    """"tiff" (DNG, CR2, NEF, ARW, ORF, RW2, PEF, ...), "bmff" (CR3) or "raf": containers whose wholeness can be
    checked; None for the others LibRaw reads (CRW, X3F, MRW, ...), which it checks alone."""
    if head[:2] in (b"II", b"MM"):
        return "tiff"
    if head[4:8] == b"ftyp":
        return "bmff"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "raf"
    return None


def raw_colour(data: bytes, *, max_pixels: int) -> RawColour:
    """The development of a raw file as LibRaw reads it: levels, as-shot white balance, colour matrix, CFA.

    Raises :class:`RawError` (see :func:`decode_raw`).
    """
    _walk, header = _checked(data, max_pixels)
    if header is not None and header.stray_tile_tags:
        data = _without_stray_tile_tags(data)
    with _libraw(data, max_pixels) as raw:
        return RawColour.of(raw)


def _checked(data: bytes, max_pixels: int) -> tuple[TiffWalk | None, RawHeader | None]:
    """Refuse what is not a whole raw file within the pixel limit, from its structure alone; return the IFDs and
    the raw image's header of a TIFF-structured one (None, None for the other containers)."""
    head = bytes(data[:16])
    if not head or head.startswith((b"\xff\xd8", b"\x89PNG")):
        raise RawError(what_it_is(head))
    container = _container(head)
    walk = header = None
    if container == "tiff":
        try:
            walk = walk_tiff(Source(data))
            header = raw_header(Source(data))
        except NotTiff as exc:
            raise RawError(str(exc)) from None
        except Damaged as exc:
            raise RawError(f"truncated or damaged: {exc}") from None
        _check_pixels(header.width, header.height, max_pixels)
    if container is not None:
        whole, why = raw_is_whole(Source(data))
        if not whole:
            raise RawError(f"truncated or damaged: {why}")
    return walk, header


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RawError(f"{width}x{height} is {width * height / 1e6:.1f} MP, over the {max_pixels / 1e6:.1f} MP limit")


def _check_like(pattern: np.ndarray | None, white: float, colour: RawColour | None) -> None:
    """Refuse a frame whose sensor layout differs from the stack's development (another camera or mode)."""
    if colour is None:
        return
    if (pattern is None) != (colour.pattern is None) or (
            pattern is not None and _letters(pattern) != _letters(colour.pattern)) or white != colour.white:
        raise RawError(f"raw data unlike the reference frame's ({_layout(pattern, white)} against "
                       f"{_layout(colour.pattern, colour.white)}): another camera or sensor mode")


def _letters(pattern: np.ndarray | None) -> str:
    return "not Bayer" if pattern is None else "".join(_CFA_LETTERS[int(i)] for i in pattern.flatten())


def _layout(pattern: np.ndarray | None, white: float) -> str:
    return f"CFA {_letters(pattern)}, white level {white:g}"


def _reduced(half: np.ndarray, full_shape: tuple[int, int], reduce: int) -> np.ndarray:
    """The half-size develop brought to 1/``reduce`` of the frame (rounded up, as a reduced JPEG decode is)."""
    size = (-(-full_shape[1] // reduce), -(-full_shape[0] // reduce))
    if half.shape[1::-1] == size:
        return half
    return cv2.resize(half, size, interpolation=cv2.INTER_AREA)


# --- uncompressed DNGs, read here -----------------------------------------------------------------------------


def _own_reader(walk):
    """A reader of this DNG's CFA, if it is one this module reads (uncompressed, 2x2 Bayer, no linearisation
    table, no active area, no black level deltas): ``reader(data) -> (cfa, pattern, white)``; else None."""
    tags = {tag for ifd in walk.ifds for tag in ifd.tags}
    found = [image for image in images(walk, strict=False) if image.is_raw]
    if not found or walk.ifds[0].get(50706) is None:  # not a DNG
        return None
    image = found[0]
    ifd = image.ifd
    simple = (image.photometric == PHOTOMETRIC_CFA and image.compression == 1 and image.samples == 1
              and 8 <= image.bits <= 16 and ifd.all(_CFA_REPEAT) in ((), (2, 2))
              and not tags & {_LINEARIZATION, _BLACK_DELTA_H, _BLACK_DELTA_V}
              and ifd.all(_ACTIVE_AREA) in ((), (0, 0, image.height, image.width)))
    if not simple:
        return None
    pattern = np.array(ifd.all(_CFA_PATTERN) or (0, 1, 1, 2)).reshape(2, 2)  # 0 R, 1 G, 2 B
    white = float(ifd.get(50717) or walk.ifds[0].get(50717) or (1 << image.bits) - 1)

    def read(data: bytes) -> tuple[np.ndarray, np.ndarray, float]:
        return _read_cfa(data, image, walk.byteorder), pattern, white

    return read


def _read_cfa(data: bytes, image, order: str) -> np.ndarray:
    """The CFA samples of an uncompressed strip- or tile-stored image, (H, W) uint16."""
    cfa = np.empty((image.height, image.width), np.uint16)
    width = image.tile_width if image.tiled else image.width
    if image.tiled:
        width, length = image.ifd.get(TILE_WIDTH), image.ifd.get(TILE_LENGTH)
    else:
        length = image.rows_per_chunk
    across = -(-image.width // width) if image.tiled else 1
    row_bytes = -(-width * image.bits // 8)
    view = memoryview(data)
    for k, start in enumerate(image.offsets):
        top, left = (k // across) * length, (k % across) * width
        rows = min(length, image.height - top)
        cols = min(width, image.width - left)
        for first in range(0, rows, _UNPACK_ROWS):
            count = min(_UNPACK_ROWS, rows - first)
            chunk = view[start + first * row_bytes : start + (first + count) * row_bytes]
            unpacked = unpack_rows(chunk, width, count, image.bits, order)
            cfa[top + first : top + first + count, left : left + cols] = unpacked[:, :cols]
    return cfa


def unpack_rows(data: bytes | memoryview, width: int, rows: int, bits: int, order: str = "<") -> np.ndarray:
    """TIFF-packed samples (most significant bit first, each row starting on a byte; 16-bit samples in the file's
    byte order) -> (rows, width) uint16."""
    row_bytes = -(-width * bits // 8)
    raw = np.frombuffer(data, np.uint8, count=rows * row_bytes).reshape(rows, row_bytes)
    if bits == 16:
        return raw.view(order + "u2")[:, :width].astype(np.uint16)
    if bits == 8:
        return raw[:, :width].astype(np.uint16)
    if bits == 12 and width % 2 == 0:  # 3 bytes = 2 samples
        b = raw[:, : width * 3 // 2].reshape(rows, width // 2, 3).astype(np.uint16)
        out = np.empty((rows, width), np.uint16)
        out[:, 0::2] = (b[..., 0] << 4) | (b[..., 1] >> 4)
        out[:, 1::2] = ((b[..., 1] & 0x0F) << 8) | b[..., 2]
        return out
    if bits == 10 and width % 4 == 0:  # 5 bytes = 4 samples
        b = raw[:, : width * 5 // 4].reshape(rows, width // 4, 5).astype(np.uint16)
        out = np.empty((rows, width), np.uint16)
        out[:, 0::4] = (b[..., 0] << 2) | (b[..., 1] >> 6)
        out[:, 1::4] = ((b[..., 1] & 0x3F) << 4) | (b[..., 2] >> 4)
        out[:, 2::4] = ((b[..., 2] & 0x0F) << 6) | (b[..., 3] >> 2)
        out[:, 3::4] = ((b[..., 3] & 0x03) << 8) | b[..., 4]
        return out
    # any other width or depth (14-bit, 10-bit of odd widths): bit by bit
    bitplane = np.unpackbits(raw, axis=1)[:, : width * bits].reshape(rows, width, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (bitplane.astype(np.uint16) * weights).sum(axis=2, dtype=np.uint32).astype(np.uint16)


def _without_stray_tile_tags(data: bytes) -> bytes:
    """A copy of a PiDNG 2022-08 .. 2025-01 DNG (strips, plus TileWidth/TileLength) with those two tags renamed to
    unused private ones, so that LibRaw reads the strips ("Unexpected end of file" otherwise)."""
    walk = walk_tiff(Source(data))
    out = bytearray(data)
    for ifd in walk.ifds:
        keys = sorted(ifd.tags)
        if 273 not in ifd.tags or TILE_WIDTH not in ifd.tags:
            continue
        for tag, private in ((TILE_WIDTH, 0xFDE8), (TILE_LENGTH, 0xFDE9)):
            if tag in ifd.tags:
                struct.pack_into(walk.byteorder + "H", out, ifd.offset + 2 + 12 * keys.index(tag), private)
    return bytes(out)


# --- LibRaw ---------------------------------------------------------------------------------------------------


def _rawpy():
    import rawpy  # on first use, in the stacking process (see the module docstring)

    return rawpy


@contextmanager
def _libraw(data: bytes, max_pixels: int) -> Iterator:
    """An open, unpacked ``rawpy.RawPy`` of ``data``; LibRaw's errors as :class:`RawError`."""
    rawpy = _rawpy()
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except rawpy.LibRawFileUnsupportedError:
        raise RawError("a raw format or camera LibRaw does not know") from None
    except rawpy.LibRawError as exc:
        raise RawError(f"LibRaw cannot read it: {_message(exc)}") from None
    try:
        sizes = raw.sizes
        _check_pixels(sizes.raw_width, sizes.raw_height, max_pixels)
        try:
            raw.unpack()
        except rawpy.LibRawUnsufficientMemoryError:
            raise MemoryError("LibRaw ran out of memory") from None
        except rawpy.LibRawError as exc:
            raise RawError(f"truncated or damaged (LibRaw: {_message(exc)})") from None
        try:
            yield raw
        except UnknownCamera as exc:
            raise RawError(str(exc)) from None
    finally:
        raw.close()


def _message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text


def _libraw_fields(raw) -> dict:
    other = raw.other
    fields = {"exposure": other.shutter_speed, "fnumber": other.aperture, "iso": other.iso_speed,
              "focal": other.focal_length, "orientation": _LIBRAW_FLIP_TO_EXIF.get(raw.sizes.flip, 1)}
    if other.timestamp.timestamp() > 0:
        fields["taken"] = other.timestamp.strftime("%Y:%m:%d %H:%M:%S")
    return {key: value for key, value in fields.items() if value}


def _libraw_develop(raw, colour: RawColour, full_shape: tuple[int, int], reduce: int) -> np.ndarray:
    """LibRaw's own development of a sensor that is not 3-colour Bayer, with the stack's white balance: linear
    BGR uint16, reduced by ``reduce`` (from LibRaw's half size) when more than 1."""
    rawpy = _rawpy()
    # The black level given explicitly, common part first: LibRaw otherwise scales a 3-sample (LinearRaw) image
    # by 65535 / white instead of 65535 / (white - black), 6 % too dark at black 4096 of 65535 (measured).
    common = int(colour.black[:3].min())
    rgb = raw.postprocess(
        user_black=common, user_cblack=[int(b) - common for b in colour.black[:3]] + [0],
        half_size=reduce > 1, user_wb=[float(m) for m in colour.multipliers], output_color=rawpy.ColorSpace.sRGB,
        output_bps=16, gamma=(1.0, 1.0), no_auto_bright=True, adjust_maximum_thr=0.0, bright=1.0,
        highlight_mode=rawpy.HighlightMode.Clip, user_flip=0, demosaic_algorithm=rawpy.DemosaicAlgorithm.PPG)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    del rgb
    return _reduced(bgr, full_shape, reduce) if reduce > 1 else bgr


def set_libraw_threads(threads: int) -> None:
    """Let LibRaw's OpenMP use ``threads`` threads in this process: effective before its first raw frame."""
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))

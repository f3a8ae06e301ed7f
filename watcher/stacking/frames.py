"""Load stage: turn an encoded file (on disk or inside a zip) into an upright 8- or 16-bit BGR frame, or a raw
file (DNG, camera raw) into a linear 16-bit one (:mod:`watcher.stacking.raw`).

Where the bytes come from, how they are read safely, and the two errors a frame can raise (bad content, or an
environment to wait for) are :mod:`watcher.stacking.sources`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from watcher.stacking.align import display_encoding_table
from watcher.stacking.develop import RawColour
from watcher.stacking.metadata import exif_block
from watcher.stacking.probe import ProbeError, is_raw_name, probe_image
from watcher.stacking.raw import RawError, RawPixels, decode_raw
from watcher.stacking.sources import FrameError, FrameSource, max_file_bytes

# COLOR: always 3 channels (grey frames are expanded, alpha dropped); ANYDEPTH: keep 16-bit samples.
# OpenCV applies the EXIF orientation while decoding, so frames arrive upright.
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
# JPEG decodes straight to 1/2, 1/4 or 1/8 of the size (libjpeg scales the DCT): a preview costs a fraction of
# a full decode. Other formats are decoded whole and then reduced.
_REDUCED_JPEG_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
REDUCTIONS = (1, 2, 4, 8)
_PREVIEW_SLACK = 1.6  # a preview may have this many times fewer pixels than asked for, rather than decode bigger


def preview_reduction(width: int, height: int, pixels: int) -> int:
    """The largest of :data:`REDUCTIONS` that keeps a ``width`` x ``height`` frame at ``pixels`` / 1.6 or more."""
    return max(r for r in REDUCTIONS if r == 1 or -(-width // r) * -(-height // r) * _PREVIEW_SLACK >= pixels)


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes
    ----------
    name : str
        The source's name, used in every message about this frame.
    pixels : ndarray or RawPixels, shape (H, W, 3), dtype uint8 or uint16
        BGR samples, upright (EXIF orientation applied). A raw frame decoded whole is a
        :class:`~watcher.stacking.raw.RawPixels`, developed where it is read (``pixels[rows, cols]``,
        ``np.asarray``), in sensor orientation (its EXIF says how to turn it).
    exif : bytes or None
        The TIFF-structured EXIF block as stored in the file (orientation tag still as the camera wrote it); for a
        raw frame, one made from its metadata.
    full_shape : (H, W)
        Size of the whole frame, upright; ``pixels`` is smaller when decoded reduced.
    linear : bool
        The samples are linear light in sRGB primaries (a raw frame decoded whole); else display-encoded, as
        cameras store JPEGs (raw frames decoded reduced, for the measuring pass, are encoded like them).
    icc : bytes or None
        The file's ICC colour profile.
    """

    name: str
    pixels: np.ndarray | RawPixels
    exif: bytes | None
    full_shape: tuple[int, int]
    linear: bool = False
    icc: bytes | None = None

    @property
    def max_value(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255


def read_frame(source: FrameSource, *, max_pixels: int, reduce: int = 1) -> Frame:
    """Read and decode one frame, refusing bad input with a :class:`FrameError`.

    Parameters
    ----------
    source : FrameSource
    max_pixels : int
        Frames whose header declares more pixels than this are refused before decoding; files larger than such
        a frame can be are refused before reading.
    reduce : {1, 2, 4, 8}
        Decode at 1/``reduce`` of the size in each direction (rounded up), e.g. for a preview.

    Raises
    ------
    FrameError
        The frame is bad (see :meth:`FrameSource.read_bytes` and :func:`decode_frame`).
    FrameUnavailable
        The frame could not be read now (see :meth:`FrameSource.read_bytes`).
    """
    data = source.read_bytes(max_file_bytes(max_pixels))
    return decode_frame(data, source.name, max_pixels=max_pixels, reduce=reduce, colour=source.colour)


def read_preview(source: FrameSource, *, max_pixels: int, preview_pixels: int) -> Frame:
    """Read a frame decoded reduced by :func:`preview_reduction` for ``preview_pixels`` (see :func:`read_frame`).

    Raw frames come display-encoded, as JPEG frames do: the measuring pass works on encoded values.
    """
    data = source.read_bytes(max_file_bytes(max_pixels))
    if is_raw_name(source.name):
        return _decode_raw(data, source.name, max_pixels, source.colour,
                           lambda width, height: preview_reduction(width, height, preview_pixels))
    try:
        info = probe_image(data)
    except ProbeError as exc:
        raise FrameError(source.name, str(exc)) from None
    reduce = preview_reduction(info.width, info.height, preview_pixels)
    return decode_frame(data, source.name, max_pixels=max_pixels, reduce=reduce)


def decode_frame(data: bytes, name: str, *, max_pixels: int, reduce: int = 1,
                 colour: RawColour | None = None) -> Frame:
    """Decode encoded bytes into a :class:`Frame` (see :func:`read_frame`); a raw file (by its name's suffix)
    with ``colour``, its stack's development."""
    if is_raw_name(name):
        return _decode_raw(data, name, max_pixels, colour, None if reduce == 1 else lambda _w, _h: reduce)
    try:
        info = probe_image(data)
    except ProbeError as exc:
        raise FrameError(name, str(exc)) from None
    if info.pixels > max_pixels:
        raise FrameError(
            name, f"{info.width}x{info.height} is {info.pixels / 1e6:.1f} MP, over the {max_pixels / 1e6:.1f} MP limit"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    direct = reduce > 1 and info.format == "jpeg" and info.bits == 8
    flags = (_REDUCED_JPEG_FLAGS[reduce] | cv2.IMREAD_ANYDEPTH) if direct else _DECODE_FLAGS
    pixels, types, blocks = cv2.imdecodeWithMetadata(buffer, None, flags)
    if pixels is None or pixels.size == 0:
        raise FrameError(name, f"cannot decode this {info.format.upper()} file (damaged data)")
    full_shape = pixels.shape[:2]
    if direct:  # libjpeg gives ceil(size / reduce); EXIF orientation may have turned the frame
        upright = (info.height, info.width)
        turned = pixels.shape[:2] != (-(-info.height // reduce), -(-info.width // reduce))
        full_shape = upright[::-1] if turned else upright
    elif reduce > 1:
        height, width = full_shape
        pixels = cv2.resize(pixels, (-(-width // reduce), -(-height // reduce)), interpolation=cv2.INTER_AREA)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise FrameError(name, f"unsupported sample type {pixels.dtype} (use 8- or 16-bit images)")
    metadata = {int(kind): bytes(block) for kind, block in zip(types, blocks)}
    return Frame(name=name, pixels=pixels, exif=metadata.get(cv2.IMAGE_METADATA_EXIF) or None,
                 full_shape=tuple(full_shape), icc=metadata.get(cv2.IMAGE_METADATA_ICCP) or None)


def _decode_raw(data: bytes, name: str, max_pixels: int, colour: RawColour | None, reduction) -> Frame:
    """A raw frame: whole and linear (``reduction`` None), or reduced and display-encoded."""
    try:
        decoded = decode_raw(data, max_pixels=max_pixels, colour=colour, reduction=reduction)
    except RawError as exc:
        raise FrameError(name, str(exc)) from None
    exif = exif_block(decoded.fields)
    if reduction is None:
        return Frame(name=name, pixels=decoded.pixels, exif=exif, full_shape=decoded.full_shape, linear=True)
    encoded = np.take(display_encoding_table(), decoded.pixels)
    return Frame(name=name, pixels=encoded, exif=exif, full_shape=decoded.full_shape)


def prefetching(
    sources: list[FrameSource], load: Callable[[FrameSource], Frame], *, ahead: bool = True
) -> Iterator[tuple[int, Frame]]:
    """Yield ``(index, frame)`` for ``sources`` in order, decoding the next frame while the caller works.

    Decoding releases the GIL inside OpenCV, so one frame of look-ahead hides most of the load time while
    holding at most two decoded frames in memory; ``ahead=False`` decodes each frame only when it is reached
    (one frame in memory). A :class:`FrameError` surfaces when its frame is reached.
    """
    if not ahead:
        for position, source in enumerate(sources):
            yield position, load(source)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-loader") as loader:
        pending = loader.submit(load, sources[0]) if sources else None
        for position in range(len(sources)):
            ready = [pending.result()]
            pending = loader.submit(load, sources[position + 1]) if position + 1 < len(sources) else None
            # Hand the frame over without keeping a reference here, so the caller can free it early.
            yield position, ready.pop()

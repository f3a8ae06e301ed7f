"""The sharpest single frame of a stack: what a stack that cannot be fused can still offer.

When a stack fails (a corrupt frame, frames that do not match), a scanner's photogrammetry still wants *an* image
for that position rather than a hole: OpenScan3's cloud upload takes only ``stacked/`` when a scan has any
results there, so a position without one silently drops out of the model. The best single frame is the one whose
whole-image focus energy is highest; frames that cannot be read are passed over. It is stored as every result
is (:func:`fallback_image`), so a scan's images all follow one orientation convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from watcher.config import StackingSettings
from watcher.stacking.focus import focus_energy
from watcher.stacking.frames import decode_frame
from watcher.stacking.metadata import srgb_profile
from watcher.stacking.output import encode_image, exif_orientation, srgb_encoded, upright_exif
from watcher.stacking.probe import is_raw_name, probe_image
from watcher.stacking.sources import FrameError, FrameSource, FrameUnavailable, max_file_bytes

_SCORE_PIXELS = 1_000_000  # frames are compared on a grey copy of at most this size


@dataclass(frozen=True)
class Sharpest:
    index: int  # position of the frame in the stack
    name: str
    data: bytes  # its file's bytes, as stored
    score: float  # mean focus energy of the grey copy (comparable within one stack only)
    orientation: int  # the EXIF orientation its file asks viewers to apply (1: stored upright)


def sharpest_frame(sources: Sequence[FrameSource], settings: StackingSettings) -> Sharpest | None:
    """The frame of ``sources`` with the highest mean focus energy, or None if none can be read.

    Parameters
    ----------
    sources : sequence of FrameSource
    settings : StackingSettings
        ``focus_measure``, ``focus_window`` and ``max_megapixels`` are used.
    """
    max_pixels = int(settings.max_megapixels * 1e6)
    best: Sharpest | None = None
    for index, source in enumerate(sources):
        try:
            data = source.read_bytes(max_file_bytes(max_pixels))
            # a raw frame is scored on its half-size develop: the whole one would cost a demosaic
            frame = decode_frame(data, source.name, max_pixels=max_pixels, reduce=2 if is_raw_name(source.name) else 1)
        except (FrameError, FrameUnavailable):
            continue
        score = _mean_focus(frame.pixels, settings)
        if best is None or score > best.score:
            best = Sharpest(index, source.name, data, score, exif_orientation(frame.exif))
    return best


def fallback_image(best: Sharpest, fmt: str, jpeg_quality: int, *, max_pixels: int) -> bytes:
    """The file that stands in for a failed stack's result: ``best`` stored the way every result of its kind is.

    Results are upright, their EXIF orientation 1 (frames are rotated when decoded: see
    :func:`~watcher.stacking.output.upright_exif`); a stand-in asking viewers to rotate it would give a
    photogrammetry tool two conventions in one scan. So the camera's own file is kept as it is (lossless, EXIF and
    all) only when it is a JPEG wanted as ``jpg`` and already upright; otherwise the decoded, upright frame is
    encoded as ``fmt`` with its EXIF, orientation reset, and its colour profile. A raw frame is stored as a raw
    stack's result is: developed whole, sRGB-encoded and tagged so, in sensor orientation with the orientation its
    EXIF gives (raw frames are not turned when decoded).

    Parameters
    ----------
    best : Sharpest
    fmt : str
        ``jpg``, ``png`` or ``tif``.
    jpeg_quality : int
        For a re-encoded JPEG, 1-100.
    max_pixels : int
        The frame is refused (:class:`~watcher.stacking.sources.FrameError`) when larger.
    """
    raw = is_raw_name(best.name)
    if fmt == "jpg" and not raw and best.orientation == 1 and probe_image(best.data, whole_file=False).format == "jpeg":
        return best.data
    frame = decode_frame(best.data, best.name, max_pixels=max_pixels)
    if frame.linear:
        return encode_image(srgb_encoded(np.asarray(frame.pixels)), fmt, jpeg_quality=jpeg_quality, exif=frame.exif,
                            icc=srgb_profile())[0]
    exif = upright_exif(frame.exif) if frame.exif else None
    return encode_image(frame.pixels, fmt, jpeg_quality=jpeg_quality, exif=exif, icc=frame.icc)[0]


def _mean_focus(pixels: np.ndarray, settings: StackingSettings) -> float:
    height, width = pixels.shape[:2]
    scale = min(1.0, (_SCORE_PIXELS / (height * width)) ** 0.5)
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY).astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    return float(np.mean(focus_energy(grey, settings.focus_measure, settings.focus_window)))

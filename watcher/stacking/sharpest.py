"""The sharpest single frame of a stack: what a stack that cannot be fused can still offer.

When a stack fails (a corrupt frame, frames that do not match), a scanner's photogrammetry still wants *an* image
for that position rather than a hole: OpenScan3's cloud upload takes only ``stacked/`` when a scan has any
results there, so a position without one silently drops out of the model. The best single frame is the one whose
whole-image focus energy is highest; frames that cannot be read are passed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from watcher.config import StackingSettings
from watcher.stacking.focus import focus_energy
from watcher.stacking.frames import FrameError, FrameSource, FrameUnavailable, decode_frame, max_file_bytes
from watcher.stacking.probe import is_raw_name

_SCORE_PIXELS = 1_000_000  # frames are compared on a grey copy of at most this size


@dataclass(frozen=True)
class Sharpest:
    index: int  # position of the frame in the stack
    name: str
    data: bytes  # its file's bytes, as stored
    score: float  # mean focus energy of the grey copy (comparable within one stack only)


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
            best = Sharpest(index, source.name, data, score)
    return best


def _mean_focus(pixels: np.ndarray, settings: StackingSettings) -> float:
    height, width = pixels.shape[:2]
    scale = min(1.0, (_SCORE_PIXELS / (height * width)) ** 0.5)
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY).astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    return float(np.mean(focus_energy(grey, settings.focus_measure, settings.focus_window)))

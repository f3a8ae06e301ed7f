"""How much memory stacking a stack will take, from its frames' size alone: the daemon's budget and the doctor's
advice use it before any frame is decoded (so this module loads neither numpy nor OpenCV)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.config import StackingSettings

# Peak resident memory, measured with benchmarks/speed.py (whole process, flat in the frame count): a fixed part
# (interpreter, numpy, OpenCV, encoder buffers), bytes per pixel of the depth map's resolution (the decision's maps
# and scratch), and bytes per pixel of a frame for each blend, 8-bit frames (measured at 1.5, 16 and 64 MP; 16-bit
# frames add their wider samples and a float accumulator).
_PROCESS_BASE_BYTES = 140 << 20
_BYTES_PER_DECISION_PIXEL = 100
_BYTES_PER_PIXEL = {
    "weighted": 11,
    "guided_weighted": 11,
    "direct_map": 11,
    "laplacian_pyramid": 59,
    "luma_weighted_chroma_pick": 17,
}
_EXTRA_BYTES_PER_PIXEL_16_BIT = 12
_EXTRA_BYTES_PER_PIXEL_RAW = 12


def estimate_peak_bytes(width: int, height: int, bits: int, settings: StackingSettings, *, raw: bool = False) -> int:
    """Peak resident memory of :func:`~watcher.stacking.pipeline.stack` for frames of ``width`` x ``height`` px
    (``raw``: raw files of ``bits`` per sample), with a 15 % margin, in bytes."""
    per_pixel = _BYTES_PER_PIXEL[settings.blend]
    if raw:
        per_pixel += _EXTRA_BYTES_PER_PIXEL_RAW
    elif bits > 8:
        per_pixel += _EXTRA_BYTES_PER_PIXEL_16_BIT
    decision = min(width * height, settings.focus_max_megapixels * 1.25e6)
    return _PROCESS_BASE_BYTES + int((width * height * per_pixel + decision * _BYTES_PER_DECISION_PIXEL) * 1.15)

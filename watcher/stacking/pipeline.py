"""The stacking pipeline: load -> align -> focus -> fold into the blend -> finish -> sharpen -> save.

Frames stream through one at a time (with one frame decoded ahead), in the order reference, then outward on
each side, so that every frame is aligned to an already-placed neighbour. Memory holds the blend's accumulators
and about three frames, whatever the number of frames.

This module knows pixels, not folders or processes: the daemon's worker calls :func:`stack_to_file`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from watcher import __version__
from watcher.atomic import write_atomic
from watcher.config import StackingSettings
from watcher.stacking.align import alignment_image, coverage, estimate_pair, rescale_warp, warp_frame
from watcher.stacking.blend import UNCOVERED, ScoreMap, make_blend
from watcher.stacking.focus import focus_score, guided_filter
from watcher.stacking.frames import Frame, FrameError, FrameSource, prefetching, read_frame
from watcher.stacking.output import encode_image, to_output_dtype, upright_exif

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# Guided filter on the score maps: radius in focus-map pixels per focus-window pixel, and edge threshold
# (variance of grey values in [0, 1]) above which the score does not leak across an edge.
_GUIDED_RADIUS_PER_WINDOW = 0.5
_GUIDED_EPS = 1e-2
_DEPTH_MEDIAN = 5
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


class StackError(ValueError):
    """The stack as a whole cannot be fused (no frames, frames that do not match each other)."""


@dataclass
class StackResult:
    """A fused stack.

    Attributes
    ----------
    image : ndarray, shape (H, W, 3), uint8 or uint16
        The result in the reference frame's geometry.
    depthmap : ndarray, shape (H, W), uint8, or None
        Index of the sharpest frame scaled to 0..255 (first frame 0, last 255), median-smoothed.
    record : dict
        Everything about the run: frames, transforms, per-stage timings (s), warnings, settings.
    exif : bytes or None
        The reference frame's EXIF, orientation reset (the pixels are upright).
    """

    image: np.ndarray
    depthmap: np.ndarray | None
    record: dict
    exif: bytes | None = None


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


@functools.cache
def return_freed_memory_promptly() -> None:
    """Serve every allocation of 4 MiB or more from its own mapping, returned to the system when freed.

    glibc otherwise raises its mmap threshold to the size of the last large block freed (up to 32 MiB), after
    which the pipeline's 4-16 MiB per-frame temporaries live on the heap, where fragmentation keeps ~100 MB
    resident at 16 MP. Smaller, reused strip buffers stay on the heap. No-op where libc has no ``mallopt``.
    """
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 4 << 20)
    except (OSError, AttributeError):
        pass


# Peak resident bytes per pixel of one frame, measured with benchmarks/speed.py at 16 MP x 10 and x 30 (the same:
# memory is flat in the frame count), 8-bit frames; 16-bit frames add the extra bytes of the ~3 frames in flight.
_BYTES_PER_PIXEL = {
    "weighted": 34,
    "guided_weighted": 36,
    "direct_map": 29,
    "laplacian_pyramid": 71,
    "luma_weighted_chroma_pick": 43,
}
_EXTRA_BYTES_PER_PIXEL_16_BIT = 10
_PROCESS_BASE_BYTES = 120 << 20  # interpreter, numpy, OpenCV


def estimate_peak_bytes(width: int, height: int, bits: int, settings: StackingSettings) -> int:
    """Peak resident memory of :func:`stack` for frames of ``width`` x ``height`` px, with a 15 % margin."""
    per_pixel = _BYTES_PER_PIXEL[settings.blend] + (_EXTRA_BYTES_PER_PIXEL_16_BIT if bits > 8 else 0)
    return _PROCESS_BASE_BYTES + int(width * height * per_pixel * 1.15)


def reference_index(count: int, reference: str) -> int:
    """Index of the reference frame: ``first`` or the ``middle`` one (lower middle for even counts)."""
    return 0 if reference == "first" else (count - 1) // 2


def processing_order(count: int, reference: int) -> list[int]:
    """Reference first, then outward on each side, so that each frame's neighbour is already placed."""
    return [reference, *range(reference + 1, count), *range(reference - 1, -1, -1)]


def stack(
    sources: Sequence[FrameSource | Path | str], settings: StackingSettings, *, progress: Progress | None = None
) -> StackResult:
    """Fuse a focus stack.

    Parameters
    ----------
    sources : sequence of FrameSource or paths
        The frames, in focus order (nearest to farthest or the reverse).
    settings : StackingSettings
    progress : callable(stage, done, total), optional

    Raises
    ------
    FrameError
        A frame is unreadable, truncated, over the pixel limit, or does not match the reference's size or depth.
    StackError
        No frames.
    """
    sources = [FrameSource.of(item) for item in sources]
    if not sources:
        raise StackError("no frames to stack")
    return_freed_memory_promptly()
    started = time.perf_counter()
    timer = _Timer()
    count = len(sources)
    ref = reference_index(count, settings.reference)
    order = processing_order(count, ref)
    max_pixels = int(settings.max_megapixels * 1e6)

    def load(source: FrameSource) -> Frame:
        begin = time.perf_counter()
        frame = read_frame(source, max_pixels=max_pixels)
        timer.add("decode", begin)
        return frame

    records: list[dict] = [{} for _ in range(count)]
    warnings: list[str] = []
    state: _Placement | None = None
    blend = depth = None
    exif = None
    tick = time.perf_counter()
    for position, frame in prefetching([sources[i] for i in order], load):
        index = order[position]
        tick = timer.add("wait_for_decode", tick)
        if state is None:
            state = _Placement(frame.pixels, settings)
            blend = make_blend(settings.blend, state.shape, settings.weight_power)
            depth = _SharpestFrame(state.focus_shape) if settings.depthmap else None
            exif = upright_exif(frame.exif) if frame.exif else None
        else:
            _check_matches(frame, state, sources[ref].name)
        aligned, cover_small, info = state.place(frame.pixels, index, ref, timer)
        name = frame.name
        del frame  # the decoded frame is not needed once aligned (memory: one frame less)
        tick = time.perf_counter()
        score_small = state.score(aligned, settings)
        if cover_small is not None:
            score_small[~cover_small] = UNCOVERED
        if depth is not None:
            depth.add(index, score_small)
        tick = timer.add("focus", tick)
        blend.add(aligned, ScoreMap(score_small, state.shape))
        del aligned
        tick = timer.add("blend", tick)
        records[index] = {"name": name, **info}
        warnings.extend(f"{name}: {w}" for w in info["warnings"])
        if progress:
            progress("frames", position + 1, count)
    assert state is not None and blend is not None

    image = blend.result()
    del blend
    tick = timer.add("finish", tick)
    if settings.sharpen > 0:
        unsharp_mask(image, settings.sharpen)
        tick = timer.add("sharpen", tick)
    out_dtype = _output_dtype(state.dtype, settings)
    image = to_output_dtype(image, out_dtype)
    depthmap = depth.result(count, state.shape) if depth is not None else None
    tick = timer.add("finish", tick)
    timer.seconds["total"] = time.perf_counter() - started
    record = {
        "software": f"focus-watcher {__version__}",
        "frames": records,
        "reference": {"index": ref, "name": sources[ref].name},
        "width": state.shape[1],
        "height": state.shape[0],
        "input_bit_depth": 16 if state.dtype == np.uint16 else 8,
        "output_bit_depth": 16 if out_dtype == np.uint16 else 8,
        "timings": {stage: round(seconds, 4) for stage, seconds in timer.seconds.items()},
        "warnings": warnings,
        "settings": settings.model_dump(mode="json"),
    }
    return StackResult(image=image, depthmap=depthmap, record=record, exif=exif)


def stack_to_file(
    sources: Sequence[FrameSource | Path | str],
    output: Path,
    settings: StackingSettings,
    *,
    depthmap_output: Path | None = None,
    progress: Progress | None = None,
) -> dict:
    """:func:`stack`, then write the result (and optionally the depth map) atomically. Returns the record."""
    result = stack(sources, settings, progress=progress)
    begin = time.perf_counter()
    data, warnings = encode_image(result.image, settings.output_format, jpeg_quality=settings.jpeg_quality, exif=result.exif)
    del result.image
    write_atomic(output, data)
    outputs = {"image": str(output)}
    if depthmap_output is not None and result.depthmap is not None:
        depth_format = "jpg" if depthmap_output.suffix.lower() in (".jpg", ".jpeg") else "png"
        write_atomic(depthmap_output, encode_image(result.depthmap, depth_format, jpeg_quality=95)[0])
        outputs["depthmap"] = str(depthmap_output)
    record = result.record
    record["timings"]["save"] = round(time.perf_counter() - begin, 4)
    record["warnings"].extend(warnings)
    record["outputs"] = outputs
    return record


def unsharp_mask(image: np.ndarray, amount: float, sigma: float = 1.0) -> None:
    """Sharpen a float image in place: ``image += amount * (image - gaussian(image, sigma))``."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0.0, dst=image)


class _Placement:
    """Per-stack geometry: reference size, alignment state of each side of the reference, focus resolution."""

    def __init__(self, reference: np.ndarray, settings: StackingSettings) -> None:
        self.settings = settings
        self.shape: tuple[int, int] = reference.shape[:2]
        self.dtype = reference.dtype
        height, width = self.shape
        focus_scale = min(1.0, math.sqrt(settings.focus_max_megapixels * 1e6 / (height * width)))
        self.focus_shape = (max(1, round(height * focus_scale)), max(1, round(width * focus_scale)))
        self.focus_scale = self.focus_shape[1] / width
        # per side of the reference (+1 later frames, -1 earlier): (neighbour's grey, its warp, last step's warp)
        self.sides: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def place(self, pixels: np.ndarray, index: int, ref: int, timer: _Timer) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Align ``pixels`` into the reference geometry; returns (aligned, focus-resolution coverage, record)."""
        begin = time.perf_counter()
        identity = {"model": "identity", "correlation": None, "transform": np.eye(3).tolist(), "warnings": []}
        if not self.settings.align:
            return pixels, None, identity
        grey, scale = alignment_image(pixels, self.settings.align_max_side)
        if index == ref:
            self.sides = {+1: (grey, np.eye(3), None), -1: (grey, np.eye(3), None)}
            timer.add("align", begin)
            return pixels, None, identity
        side = 1 if index > ref else -1
        neighbour, neighbour_warp, prior = self.sides[side]
        pair = estimate_pair(
            neighbour, grey, levels=self.settings.pyramid_levels, keep_percent=self.settings.mask_threshold, prior=prior
        )
        warp_small = pair.warp @ neighbour_warp
        self.sides[side] = (grey, warp_small, pair.warp if pair.model != "identity" else prior)
        warp = rescale_warp(warp_small, 1.0 / scale)
        begin = timer.add("align", begin)
        aligned = warp_frame(pixels, warp)
        cover = coverage(rescale_warp(warp, self.focus_scale), self.focus_shape)
        timer.add("warp", begin)
        info = {
            "model": pair.model,
            "correlation": None if math.isnan(pair.correlation) else round(pair.correlation, 5),
            "transform": np.round(warp, 8).tolist(),
            "warnings": list(pair.warnings),
        }
        return aligned, cover, info

    def score(self, aligned: np.ndarray, settings: StackingSettings) -> np.ndarray:
        """Focus score map at focus resolution, edge-aware smoothed for ``guided_weighted``."""
        grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
        if self.focus_shape != self.shape:
            grey = cv2.resize(grey, self.focus_shape[::-1], interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.float32) * np.float32(1.0 / np.iinfo(grey.dtype).max)
        score = focus_score(grey, settings.focus_measure, settings.focus_window)
        if settings.blend == "guided_weighted":
            score = guided_filter(grey, score, round(_GUIDED_RADIUS_PER_WINDOW * settings.focus_window), _GUIDED_EPS)
        return score


class _SharpestFrame:
    """Running per-pixel argmax of the focus score, at focus resolution (for the depth map)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.best = np.full(shape, -np.inf, np.float32)
        self.index = np.zeros(shape, np.uint16)

    def add(self, index: int, score: np.ndarray) -> None:
        better = score > self.best
        np.copyto(self.best, score, where=better)
        self.index[better] = index

    def result(self, count: int, shape: tuple[int, int]) -> np.ndarray:
        scaled = (self.index.astype(np.float32) * (255.0 / max(1, count - 1))).round().astype(np.uint8)
        smooth = cv2.medianBlur(scaled, _DEPTH_MEDIAN)
        return cv2.resize(smooth, shape[::-1], interpolation=cv2.INTER_NEAREST)


def _check_matches(frame: Frame, state: _Placement, reference: str) -> None:
    if frame.pixels.shape[:2] != state.shape:
        height, width = frame.pixels.shape[:2]
        raise FrameError(
            frame.name, f"size {width}x{height} differs from the reference {reference}'s {state.shape[1]}x{state.shape[0]}"
        )
    if frame.pixels.dtype != state.dtype:
        bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
        raise FrameError(
            frame.name, f"{bits[frame.pixels.dtype]}-bit frame in a stack of {bits[state.dtype]}-bit frames "
            f"(reference {reference})"
        )


def _output_dtype(input_dtype: np.dtype, settings: StackingSettings) -> type[np.integer]:
    if settings.output_format == "jpg" or settings.output_depth == "8":
        return np.uint8
    if settings.output_depth == "16":
        return np.uint16
    return np.uint16 if input_dtype == np.uint16 else np.uint8

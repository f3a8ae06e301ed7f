"""Merge stage: fold aligned frames into the result, each pixel from the frames the depth map names.

The decision is made before any frame is merged (:mod:`watcher.stacking.depth`), so every frame's weight is known
when it arrives: frame ``k`` weighs ``kernel(k - depth)``, normalised over the frames that cover the pixel. The
kernel is a trapezoid in frame index: within ``0.5 - h`` of a frame only that frame counts; between two frames the
weight moves linearly from one to the other over ``2 h``. ``h = 0.5`` is a linear blend of the two frames either
side of the depth, small ``h`` a pick of the nearest.

Weights live at the decision's (small) resolution and are upsampled strip by strip; frames are warped strip by
strip, only where they have weight. So the merge never holds more than one decoded frame (plus the next one,
decoded ahead) and the accumulator, and a frame that weighs nothing in a strip is not even warped there.

Blends (``stacking.blend``): ``weighted`` and ``guided_weighted`` (h = 0.5; guided refines the depth map along
the reference's edges before weighting), ``direct_map`` (h = 0.15: the nearest frame, a short transition),
``luma_weighted_chroma_pick`` (luma with h = 0.5, colour with h = 0.15: no colour fringes from mixing), and
``laplacian_pyramid`` (Burt & Adelson: each pyramid level blended with the weights smoothed to its scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

import cv2
import numpy as np

from watcher.config import BlendMethod
from watcher.stacking.align import warp_block, warp_frame
from watcher.stacking.output import SHARPEN_MARGIN, to_output_dtype, unsharp_mask

BLENDS = get_args(BlendMethod)  # the names live in the settings model
SOFT, SHARP = 0.5, 0.15  # kernel half-transitions h, in frames
_ROWS = 128  # rows per strip: keeps temporaries small for 64 MP frames
_RUN_GAP = 256  # px: columns without weight between two runs of a strip are warped anyway when fewer than this
_FIXED_POINT = 256.0  # 8-bit frames accumulate in uint16 units of 1/256 of a level


def transitions(method: str) -> tuple[float, float]:
    """Kernel half-transition ``h`` for luma and for colour of blend ``method``."""
    if method not in BLENDS:
        raise ValueError(f"unknown blend {method!r}; expected one of {BLENDS}")
    if method == "direct_map":
        return SHARP, SHARP
    if method == "luma_weighted_chroma_pick":
        return SOFT, SHARP
    return SOFT, SOFT


def kernel(index: int, depth: np.ndarray, half: float) -> np.ndarray:
    """Weight (float32, same shape as ``depth``) of frame ``index`` under the trapezoid of half-transition ``half``."""
    distance = np.abs(depth - np.float32(index))
    return np.clip((np.float32(0.5 + half) - distance) * np.float32(0.5 / half), 0.0, 1.0)


def _strips(height: int) -> Iterator[slice]:
    for start in range(0, height, _ROWS):
        yield slice(start, min(start + _ROWS, height))


class Upsampled:
    """A small map read at full resolution one strip of rows at a time (bilinear, exactly like ``cv2.resize``).

    Parameters
    ----------
    small : ndarray, shape (h, w) or (h, w, c), float32
    shape : (H, W)
        Full resolution, H >= h and W >= w.
    """

    def __init__(self, small: np.ndarray, shape: tuple[int, int]) -> None:
        self.small = small
        self.shape = shape

    def rows(self, rows: slice) -> np.ndarray:
        """Rows ``rows`` of the full-resolution map, (n, W[, c]) float32."""
        small_h, small_w = self.small.shape[:2]
        height, width = self.shape
        if (small_h, small_w) == (height, width):
            return self.small[rows]
        # Same pixel-centre mapping and edge clamping as cv2.resize: vertical by hand, horizontal by OpenCV.
        y = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) * np.float32(small_h / height) - 0.5
        y = np.clip(y, 0, small_h - 1)
        top = y.astype(np.intp)
        bottom = np.minimum(top + 1, small_h - 1)
        below = (y - top).reshape(-1, *([1] * (self.small.ndim - 1)))
        strip = self.small[top] * (1 - below) + self.small[bottom] * below
        return cv2.resize(strip, (width, strip.shape[0]), interpolation=cv2.INTER_LINEAR)

    def full(self) -> np.ndarray:
        """The whole map at full resolution."""
        if self.small.shape[:2] == self.shape:
            return self.small
        return cv2.resize(self.small, self.shape[::-1], interpolation=cv2.INTER_LINEAR)

    def support(self, rows: slice) -> list[slice]:
        """Full-resolution column ranges where rows ``rows`` may be non-zero (with a margin for interpolation);
        ranges closer than :data:`_RUN_GAP` px are joined."""
        small_h, small_w = self.small.shape[:2]
        height, width = self.shape
        top = max(0, int((rows.start + 0.5) * small_h / height - 0.5) - 1)
        bottom = min(small_h, int((rows.stop - 0.5) * small_h / height - 0.5) + 3)
        block = self.small[top:bottom]
        used = block.reshape(block.shape[0], small_w, -1).max(axis=(0, 2)) > 0
        if not used.any():
            return []
        edges = np.flatnonzero(np.diff(np.concatenate(([False], used, [False])).astype(np.int8)))
        runs: list[slice] = []
        for first, last in zip(edges[::2], edges[1::2] - 1):
            left = max(0, int((first - 1.5) * width / small_w))
            right = min(width, int((last + 2.5) * width / small_w) + 1)
            if runs and left - runs[-1].stop < _RUN_GAP:
                runs[-1] = slice(runs[-1].start, right)
            else:
                runs.append(slice(left, right))
        return runs


@dataclass(frozen=True)
class FrameWeights:
    """What the merge needs of one frame besides its pixels.

    Attributes
    ----------
    luma, colour : ndarray, shape (h, w), float32
        Normalised weights at the decision's resolution (the same array when the blend treats colour alike).
    warp : ndarray (3, 3)
        Reference -> frame coordinates at full resolution.
    gains : (3,) float
        Per-channel (B, G, R) gains that match the frame to the reference.
    """

    luma: np.ndarray
    colour: np.ndarray
    warp: np.ndarray
    gains: tuple[float, float, float]


class Fusion:
    """The running result of a merge: ``add`` every frame (any order), then ``result``.

    Parameters
    ----------
    method : str
        One of :data:`BLENDS`.
    shape : (H, W)
        Full resolution.
    dtype : numpy dtype
        The frames' sample type (uint8 or uint16).
    gain_scale : float
        Largest gain of any frame: gains are divided by it while accumulating (so 8-bit sums fit 16 bits) and the
        result multiplied by it.
    """

    def __init__(self, method: str, shape: tuple[int, int], dtype: np.dtype, gain_scale: float) -> None:
        self.method = method
        self.shape = shape
        self.top = float(np.iinfo(dtype).max)
        self.gain_scale = gain_scale
        self.fixed_point = np.dtype(dtype) == np.uint8 and method in ("weighted", "guided_weighted", "direct_map")
        if method == "laplacian_pyramid":
            self.levels = _pyramid_levels(shape)
            self.sums = [np.zeros((*level, 3), np.float32) for level in _level_shapes(shape, self.levels)]
        elif self.fixed_point:
            self.sum = np.zeros((*shape, 3), np.uint16)
        else:
            self.sum = np.zeros((*shape, 3), np.float32)

    def add(self, pixels: np.ndarray, weights: FrameWeights) -> None:
        """Fold in one decoded frame (H', W', 3), uint8/uint16, not yet aligned."""
        if self.method == "laplacian_pyramid":
            self._add_pyramid(pixels, weights)
            return
        luma = Upsampled(weights.luma, self.shape)
        colour = Upsampled(weights.colour, self.shape) if self.method == "luma_weighted_chroma_pick" else None
        unit = (_FIXED_POINT if self.fixed_point else 1.0 / self.top) / self.gain_scale
        gains = np.asarray(weights.gains, np.float32) * np.float32(unit)
        for rows in _strips(self.shape[0]):
            runs = luma.support(rows) if colour is None else _joined(luma.support(rows) + colour.support(rows))
            if not runs:
                continue  # the frame has no weight in this strip: not even warped
            luma_rows = luma.rows(rows)
            colour_rows = colour.rows(rows) if colour is not None else None
            for cols in runs:
                block = warp_block(pixels, weights.warp, rows, cols).astype(np.float32)
                block *= gains
                if colour_rows is None:
                    block *= luma_rows[:, cols, None]
                    self._accumulate(rows, cols, block)
                else:
                    ycc = _luma_chroma(block)
                    ycc[..., :1] *= luma_rows[:, cols, None]
                    ycc[..., 1:] *= colour_rows[:, cols, None]
                    self.sum[rows, cols] += ycc

    def _accumulate(self, rows: slice, cols: slice, block: np.ndarray) -> None:
        target = self.sum[rows, cols]
        if self.fixed_point:
            block += np.float32(0.5)  # round, then truncate: every term is >= 0
            target += block.astype(np.uint16)
        else:
            target += block

    def _add_pyramid(self, pixels: np.ndarray, weights: FrameWeights) -> None:
        aligned = warp_frame(pixels, weights.warp)
        gains = np.asarray(weights.gains, np.float32) / np.float32(self.top * self.gain_scale)
        gaussian = aligned.astype(np.float32) * gains
        del aligned
        weight = Upsampled(weights.luma, self.shape).full()
        for index, total in enumerate(self.sums):
            if index + 1 < len(self.sums):
                smaller = cv2.pyrDown(gaussian)
                detail = gaussian - cv2.pyrUp(smaller, dstsize=gaussian.shape[1::-1])
            else:
                smaller, detail = None, gaussian
            detail *= weight[..., None]
            total += detail
            if smaller is not None:
                gaussian, weight = smaller, cv2.pyrDown(weight)

    def result(self, dtype: type[np.integer], sharpen: float = 0.0) -> np.ndarray:
        """The fused image (H, W, 3) in ``dtype`` (uint8 or uint16), unsharp-masked by ``sharpen`` (0: not).

        Made strip by strip from the accumulator, *in its memory*: the result needs at most half the bytes per
        pixel the accumulator has, so strip ``k``'s output bytes end where strip ``k``'s input starts (rows r0..r1
        of output end at byte 3 W r1 <= 6 W r0 of input, for strips of 128 rows), and the rows a strip reads
        around it for sharpening are still untouched. No second full-size image is ever held (except by
        ``laplacian_pyramid``, whose levels must be collapsed whole first).
        """
        if self.method == "laplacian_pyramid":
            collapsed = self.sums[-1]
            for detail in reversed(self.sums[:-1]):
                collapsed = cv2.pyrUp(collapsed, dstsize=detail.shape[1::-1])
                collapsed += detail
            self.sums = []
            collapsed *= np.float32(self.gain_scale)
            self.sum, self.fixed_point = collapsed, False
        height, width = self.shape
        if 2 * np.dtype(dtype).itemsize <= self.sum.itemsize:
            out = np.frombuffer(self.sum.data, dtype, count=height * width * 3).reshape(height, width, 3)
        else:  # 8-bit frames fused to a 16-bit result: as many bytes as the accumulator
            out = np.empty((height, width, 3), dtype)
        margin = SHARPEN_MARGIN if sharpen > 0 else 0
        for rows in _strips(self.shape[0]):
            top, bottom = max(0, rows.start - margin), min(self.shape[0], rows.stop + margin)
            values = self._values(slice(top, bottom))
            if sharpen > 0:
                unsharp_mask(values, sharpen)
            out[rows] = to_output_dtype(values[rows.start - top : rows.stop - top], dtype)
        del self.sum
        return out  # a view: keeps the accumulator's buffer alive, and nothing else

    def _values(self, rows: slice) -> np.ndarray:
        """Rows ``rows`` of the result as float32 in [0, 1] (not clipped), a new array."""
        if self.fixed_point:
            return np.multiply(self.sum[rows], np.float32(self.gain_scale / (_FIXED_POINT * self.top)),
                               dtype=np.float32)
        values = self.sum[rows].copy()
        if self.method == "luma_weighted_chroma_pick":
            values = _bgr(values)
            values *= np.float32(self.gain_scale)
        elif self.method != "laplacian_pyramid":
            values *= np.float32(self.gain_scale)
        return values


def _joined(runs: list[slice]) -> list[slice]:
    """Overlapping or close column ranges merged, in order."""
    merged: list[slice] = []
    for run in sorted(runs, key=lambda r: r.start):
        if merged and run.start - merged[-1].stop < _RUN_GAP:
            merged[-1] = slice(merged[-1].start, max(merged[-1].stop, run.stop))
        else:
            merged.append(run)
    return merged


def _pyramid_levels(shape: tuple[int, int]) -> int:
    """Levels down to a ~16 px coarsest image (at most 10)."""
    return max(1, min(10, int(np.log2(min(shape) / 16)) + 1))


def _level_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    shapes, (height, width) = [], shape
    for _ in range(levels):
        shapes.append((height, width))
        height, width = (height + 1) // 2, (width + 1) // 2
    return shapes


# BT.601 luma with unscaled colour differences: an exact inverse in float32 (OpenCV's YCrCb coefficients are
# rounded to three decimals and would cost 16-bit results up to ~17 levels).
_KR, _KG, _KB = 0.299, 0.587, 0.114


def _luma_chroma(bgr: np.ndarray) -> np.ndarray:
    """(n, w, 3) BGR -> (n, w, 3) [Y, B - Y, R - Y], float32."""
    out = np.empty_like(bgr)
    luma = out[..., 0]
    np.multiply(bgr[..., 2], np.float32(_KR), out=luma)
    luma += bgr[..., 1] * np.float32(_KG)
    luma += bgr[..., 0] * np.float32(_KB)
    np.subtract(bgr[..., 0], luma, out=out[..., 1])
    np.subtract(bgr[..., 2], luma, out=out[..., 2])
    return out


def _bgr(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_luma_chroma`: (n, w, 3) [Y, B - Y, R - Y] -> (n, w, 3) BGR float32."""
    y = ycc[..., 0]
    out = np.empty_like(ycc)
    blue, red = out[..., 0], out[..., 2]
    np.add(y, ycc[..., 1], out=blue)
    np.add(y, ycc[..., 2], out=red)
    green = out[..., 1]
    np.subtract(y, red * np.float32(_KR), out=green)
    green -= blue * np.float32(_KB)
    green /= np.float32(_KG)
    return out

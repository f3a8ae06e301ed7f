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
from watcher.stacking.align import DISPLAY_GAMMA, warp_block, warp_frame
from watcher.stacking.output import SHARPEN_MARGIN, srgb_encoded, to_output_dtype, unsharp_mask

BLENDS = get_args(BlendMethod)  # the names live in the settings model
SOFT, SHARP = 0.5, 0.15  # kernel half-transitions h, in frames
_ROWS = 128  # rows per strip: keeps temporaries small for 64 MP frames
_RUN_GAP = 256  # px: columns without weight between two runs of a strip are warped anyway when fewer than this
_FIXED_POINT = {np.dtype(np.uint8): 256.0, np.dtype(np.uint16): 1.0}  # uint16 accumulator units per level


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

    The linear blends (``weighted``, ``guided_weighted``, ``direct_map``) accumulate in uint16 fixed point: 8-bit
    frames in units of 1/256 of a level, 16-bit frames in levels (adds saturate, so the rounding of each term
    cannot wrap around) -- 6 bytes per pixel, where float32 would take 12. The others accumulate in float32.

    Parameters
    ----------
    method : str
        One of :data:`BLENDS`.
    shape : (H, W)
        Full resolution.
    dtype : numpy dtype
        The frames' sample type (uint8 or uint16).
    gain_scale : float
        Largest gain of any frame: gains are divided by it while accumulating (so that sums fit 16 bits) and the
        result multiplied by it.
    linear : bool
        The frames hold linear light (raw frames). Gains, which are for display-encoded values everywhere, are
        applied as ``gain ** DISPLAY_GAMMA``, and the result is encoded to sRGB.
    """

    def __init__(self, method: str, shape: tuple[int, int], dtype: np.dtype, gain_scale: float, *,
                 linear: bool = False) -> None:
        self.method = method
        self.shape = shape
        self.top = float(np.iinfo(dtype).max)
        self.linear = linear
        self.exponent = DISPLAY_GAMMA if linear else 1.0
        self.gain_scale = gain_scale ** self.exponent
        self.fixed_point = method in ("weighted", "guided_weighted", "direct_map")
        self.unit = _FIXED_POINT[np.dtype(dtype)] if self.fixed_point else 1.0 / self.top
        if method == "laplacian_pyramid":
            self.levels = _pyramid_levels(shape)
            self.sums = [np.zeros((*level, 3), np.float32) for level in _level_shapes(shape, self.levels)]
        else:
            self.sum = np.zeros((*shape, 3), np.uint16 if self.fixed_point else np.float32)

    def _gains(self, weights: FrameWeights) -> np.ndarray:
        """The frame's gains as applied to its samples, in accumulator units, divided by ``gain_scale``."""
        gains = np.asarray(weights.gains, np.float64) ** self.exponent
        return (gains * self.unit / self.gain_scale).astype(np.float32)

    def add(self, pixels: np.ndarray, weights: FrameWeights) -> None:
        """Fold in one decoded frame (H', W', 3), uint8/uint16, not yet aligned (an array, or a raw frame's
        :class:`~watcher.stacking.raw.RawPixels`, which is then developed only where it has weight)."""
        if self.method == "laplacian_pyramid":
            self._add_pyramid(pixels, weights)
            return
        luma = Upsampled(weights.luma, self.shape)
        colour = Upsampled(weights.colour, self.shape) if self.method == "luma_weighted_chroma_pick" else None
        gains = self._gains(weights)
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
            cv2.add(target, block.astype(np.uint16), dst=target)  # saturating
        else:
            target += block

    def _add_pyramid(self, pixels: np.ndarray, weights: FrameWeights) -> None:
        aligned = warp_frame(pixels, weights.warp)
        gaussian = aligned.astype(np.float32) * self._gains(weights)
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
        """The fused image (H, W, 3) in ``dtype`` (uint8 or uint16), unsharp-masked by ``sharpen`` (0: not);
        display-encoded (sRGB for linear frames).

        Made strip by strip from the accumulator, *in its memory*: the result has no more bytes per pixel than the
        accumulator, so strip ``k``'s output ends no later than strip ``k``'s input, and the rows that sharpening
        the next strip needs from this one are kept aside before they are overwritten. No second full-size image
        is ever held (except by ``laplacian_pyramid``, whose levels must be collapsed whole first).
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
        out = np.frombuffer(self.sum.data, dtype, count=height * width * 3).reshape(height, width, 3)
        margin = SHARPEN_MARGIN if sharpen > 0 else 0
        above = np.empty((0, width, 3), np.float32)  # the strip before's last rows, read before it was overwritten
        for rows in _strips(height):
            values = self._values(slice(rows.start, min(height, rows.stop + margin)))
            kept = values[max(0, rows.stop - rows.start - margin) : rows.stop - rows.start].copy()
            if margin:
                values = np.concatenate([above, values])
                unsharp_mask(values, sharpen)
            out[rows] = to_output_dtype(values[len(above) if margin else 0:][: rows.stop - rows.start], dtype)
            above = kept
        del self.sum
        return out  # a view: keeps the accumulator's buffer alive, and nothing else

    def _values(self, rows: slice) -> np.ndarray:
        """Rows ``rows`` of the result as float32 in [0, 1] (not clipped unless encoded), display-encoded, a new
        array."""
        if self.fixed_point:
            values = np.multiply(self.sum[rows], np.float32(self.gain_scale / (self.unit * self.top)),
                                 dtype=np.float32)
        else:
            values = self.sum[rows].copy()
            if self.method == "luma_weighted_chroma_pick":
                values = _bgr(values)
            if self.method != "laplacian_pyramid":
                values *= np.float32(self.gain_scale)
        return _srgb_encoded(values) if self.linear else values


def _srgb_encoded(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] (float32, clipped in place) -> sRGB-encoded float32 in [0, 1], by table."""
    np.clip(linear, 0.0, 1.0, out=linear)
    linear *= np.float32(65535)
    linear += np.float32(0.5)
    encoded = srgb_encoded(linear.astype(np.uint16))
    return np.multiply(encoded, np.float32(1 / 65535), dtype=np.float32)


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

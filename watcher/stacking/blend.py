"""Blend stage: fold frames one at a time into running accumulators, so memory is flat in the frame count.

Every blend is a reducer: ``add(pixels, score)`` once per aligned frame (any order), then ``result()``.
``pixels`` is the aligned frame, (H, W, 3) uint8/uint16 BGR; ``score`` is a :class:`ScoreMap`, its per-pixel log
focus energy, with pixels the frame does not cover set to :data:`UNCOVERED`. Results are float32 (H, W, 3) in
[0, 1].

Weights are ``energy ** power`` = ``exp(power * score)``, normalised per pixel over the frames. They are
accumulated as an *online softmax*: a running per-pixel maximum keeps ``exp`` in range, and earlier sums are
rescaled whenever the maximum grows, which gives exactly the all-frames-at-once result.
"""

from __future__ import annotations

from typing import get_args

import cv2
import numpy as np

from watcher.config import BlendMethod

BLENDS = get_args(BlendMethod)  # the names live in the settings model
UNCOVERED = np.float32(-1e30)  # score of pixels a frame does not cover: weight exactly 0
CHROMA_SHARPNESS = 4.0  # chroma weights are luma weights ** 4: a near-pick of the sharpest frame's colour
_ROWS = 128  # rows per chunk: keeps temporaries small for 64 MP frames


def _row_chunks(height: int):
    for start in range(0, height, _ROWS):
        yield slice(start, min(start + _ROWS, height))


class ScoreMap:
    """A frame's score map at focus resolution, read at full resolution one strip of rows at a time.

    Bilinear upsampling strip by strip gives exactly what one ``cv2.resize`` of the whole map would, without
    ever holding the full-resolution map (64 MB per 16 MP frame).

    Parameters
    ----------
    small : ndarray, shape (h, w), float32
    shape : (H, W)
        Full resolution, H >= h and W >= w.
    """

    def __init__(self, small: np.ndarray, shape: tuple[int, int]) -> None:
        self.small = small
        self.shape = shape

    def rows(self, rows: slice) -> np.ndarray:
        """Rows ``rows`` of the full-resolution map, (n, W) float32."""
        small_h, small_w = self.small.shape
        height, width = self.shape
        if (small_h, small_w) == (height, width):
            return self.small[rows]
        # Same pixel-centre mapping and edge clamping as cv2.resize: vertical by hand, horizontal by OpenCV.
        y = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) * np.float32(small_h / height) - 0.5
        y = np.clip(y, 0, small_h - 1)
        top = y.astype(np.intp)
        bottom = np.minimum(top + 1, small_h - 1)
        below = (y - top)[:, None]
        strip = self.small[top] * (1 - below) + self.small[bottom] * below
        return cv2.resize(strip, (width, strip.shape[0]), interpolation=cv2.INTER_LINEAR)

    def full(self) -> np.ndarray:
        """The whole map at full resolution, (H, W) float32."""
        if self.small.shape == self.shape:
            return self.small
        return cv2.resize(self.small, self.shape[::-1], interpolation=cv2.INTER_LINEAR)


class SoftmaxAccumulator:
    """Per-pixel running ``sum_i exp(t_i) * v_i`` and ``sum_i exp(t_i)``, stabilised by a running max of ``t``.

    Parameters
    ----------
    shape : (h, w)
    channels : int
        Channels of the values folded in.
    """

    def __init__(self, shape: tuple[int, int], channels: int) -> None:
        self.peak = np.full(shape, -np.inf, np.float32)
        self.den = np.zeros(shape, np.float32)
        self.num = np.zeros((*shape, channels), np.float32)
        # Scratch for one strip of rows, reused: no allocation per strip, so no allocator churn.
        rows = min(_ROWS, shape[0])
        self._old = np.empty((rows, shape[1]), np.float32)
        self._new = np.empty((rows, shape[1]), np.float32)
        self._product = np.empty((rows, shape[1], channels), np.float32)

    def add(self, t: np.ndarray, values: np.ndarray, scale: float = 1.0) -> None:
        """Fold one frame: exponent ``t`` (h, w) and ``values`` (h, w, c) times ``scale``."""
        for rows in _row_chunks(t.shape[0]):
            self.add_rows(rows, t[rows], values[rows], scale)

    def add_rows(self, rows: slice, t: np.ndarray, values: np.ndarray, scale: float = 1.0) -> None:
        count = rows.stop - rows.start
        peak, den, num = self.peak[rows], self.den[rows], self.num[rows]
        old, new, product = self._old[:count], self._new[:count], self._product[:count]
        np.copyto(old, peak)
        np.maximum(peak, t, out=peak)
        old -= peak  # old peak - new peak: -inf on the first frame
        np.exp(old, out=old)  # rescales what was summed under the old maximum (exp(-inf) = 0)
        np.subtract(t, peak, out=new)
        np.exp(new, out=new)
        den *= old
        den += new
        num *= old[..., None]
        new *= np.float32(scale)
        np.multiply(values, new[..., None], out=product)
        num += product

    def result(self) -> np.ndarray:
        """Weighted mean, (h, w, c) float32; the accumulator's memory is reused for it."""
        for rows in _row_chunks(self.num.shape[0]):
            self.num[rows] /= self.den[rows, :, None]
        return self.num


class WeightedBlend:
    """``weighted`` and ``guided_weighted``: per-pixel mean of the frames weighted by focus ** power.

    (The two differ only in the score map they are given: ``guided_weighted`` scores are edge-aware smoothed.)
    """

    def __init__(self, shape: tuple[int, int], power: float) -> None:
        self.power = np.float32(power)
        self.acc = SoftmaxAccumulator(shape, 3)

    def add(self, pixels: np.ndarray, score: ScoreMap) -> None:
        scale = 1.0 / np.iinfo(pixels.dtype).max
        for rows in _row_chunks(pixels.shape[0]):
            self.acc.add_rows(rows, score.rows(rows) * self.power, pixels[rows], scale)

    def result(self) -> np.ndarray:
        return self.acc.result()


class DirectMapBlend:
    """``direct_map``: each pixel from its sharpest frame; where the best two are close, a blend of both.

    Keeps the best and second-best frame's pixels and scores; the final mix gives the second frame
    ``1 / (1 + exp(power * (best - second)))``, i.e. 50 % when equally sharp, ~0 when clearly less sharp.
    """

    def __init__(self, shape: tuple[int, int], power: float) -> None:
        self.power = np.float32(power)
        self.best_score = np.full(shape, -np.inf, np.float32)
        self.second_score = np.full(shape, -np.inf, np.float32)
        self.best: np.ndarray | None = None
        self.second: np.ndarray | None = None

    def add(self, pixels: np.ndarray, score: ScoreMap) -> None:
        if self.best is None:
            self.best, self.second = pixels.copy(), pixels.copy()
        for rows in _row_chunks(pixels.shape[0]):
            s, px = score.rows(rows), pixels[rows]
            best_s, second_s = self.best_score[rows], self.second_score[rows]
            best, second = self.best[rows], self.second[rows]
            better = s > best_s
            runner_up = ~better & (s > second_s)
            np.copyto(second_s, best_s, where=better)
            np.copyto(second, best, where=better[..., None])
            np.copyto(best_s, s, where=better)
            np.copyto(best, px, where=better[..., None])
            np.copyto(second_s, s, where=runner_up)
            np.copyto(second, px, where=runner_up[..., None])

    def result(self) -> np.ndarray:
        assert self.best is not None and self.second is not None, "no frame added"
        scale = np.float32(1.0 / np.iinfo(self.best.dtype).max)
        out = np.empty(self.best.shape, np.float32)
        for rows in _row_chunks(out.shape[0]):
            gap = self.best_score[rows] - self.second_score[rows]  # +inf where only one frame covers
            share = 1.0 / (1.0 + np.exp(np.minimum(gap * self.power, 80.0)))
            best = self.best[rows].astype(np.float32)
            out[rows] = (best + (self.second[rows] - best) * share[..., None]) * scale
        self.best = self.second = None
        return out


class PyramidBlend:
    """``laplacian_pyramid``: Laplacian pyramids of the frames, each level blended with its own focus weights.

    Level ``k`` uses the frame's score map reduced ``k`` times, so fine detail follows fine-scale sharpness and
    coarse tone follows broad sharpness; seams are hidden at every scale (Burt & Adelson's multiresolution spline).
    """

    def __init__(self, shape: tuple[int, int], power: float, levels: int) -> None:
        self.power = np.float32(power)
        self.levels: list[SoftmaxAccumulator] = []
        height, width = shape
        for _ in range(levels):
            self.levels.append(SoftmaxAccumulator((height, width), 3))
            height, width = (height + 1) // 2, (width + 1) // 2

    @staticmethod
    def levels_for(shape: tuple[int, int]) -> int:
        """Levels down to a ~16 px coarsest image (at most 10)."""
        return max(1, min(10, int(np.log2(min(shape) / 16)) + 1))

    def add(self, pixels: np.ndarray, score_map: ScoreMap) -> None:
        gaussian = pixels.astype(np.float32) * np.float32(1.0 / np.iinfo(pixels.dtype).max)
        score = score_map.full()
        for index, acc in enumerate(self.levels):
            if index + 1 < len(self.levels):
                smaller = cv2.pyrDown(gaussian)
                detail = cv2.pyrUp(smaller, dstsize=gaussian.shape[1::-1])
                cv2.subtract(gaussian, detail, dst=detail)
            else:
                smaller, detail = None, gaussian
            acc.add(score * self.power, detail)
            del detail
            if smaller is not None:
                gaussian, score = smaller, cv2.pyrDown(score)

    def result(self) -> np.ndarray:
        image = self.levels[-1].result()
        for acc in reversed(self.levels[:-1]):
            detail = acc.result()
            image = cv2.pyrUp(image, dstsize=detail.shape[1::-1])
            image += detail
        self.levels = []
        return image


class LumaChromaBlend:
    """``luma_weighted_chroma_pick``: luma blended by focus ** power, chroma taken from the sharpest frames.

    Chroma weights are the luma weights raised to :data:`CHROMA_SHARPNESS`: a pick of the sharpest frame's colour
    that still blends smoothly where two frames are about equally sharp, so colour seams and fringes shrink.
    """

    def __init__(self, shape: tuple[int, int], power: float) -> None:
        self.power = np.float32(power)
        self.luma = SoftmaxAccumulator(shape, 1)
        self.chroma = SoftmaxAccumulator(shape, 2)

    def add(self, pixels: np.ndarray, score: ScoreMap) -> None:
        scale = np.float32(1.0 / np.iinfo(pixels.dtype).max)
        for rows in _row_chunks(pixels.shape[0]):
            ycc = _luma_chroma(pixels[rows].astype(np.float32) * scale)
            t = score.rows(rows) * self.power
            self.luma.add_rows(rows, t, ycc[..., :1])
            t *= np.float32(CHROMA_SHARPNESS)
            self.chroma.add_rows(rows, t, ycc[..., 1:])

    def result(self) -> np.ndarray:
        luma, chroma = self.luma.result(), self.chroma.result()
        self.luma = self.chroma = None  # type: ignore[assignment]
        return _bgr(luma, chroma)


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


def _bgr(luma: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_luma_chroma`: luma (h, w, 1) and chroma (h, w, 2) -> (h, w, 3) BGR float32."""
    y = luma[..., 0]
    out = np.empty((*y.shape, 3), np.float32)
    blue, red = out[..., 0], out[..., 2]
    np.add(y, chroma[..., 0], out=blue)
    np.add(y, chroma[..., 1], out=red)
    green = out[..., 1]
    np.subtract(y, red * np.float32(_KR), out=green)
    green -= blue * np.float32(_KB)
    green /= np.float32(_KG)
    return out


def make_blend(method: str, shape: tuple[int, int], power: float):
    """The reducer for ``method`` over frames of ``shape`` (H, W)."""
    if method in ("weighted", "guided_weighted"):
        return WeightedBlend(shape, power)
    if method == "direct_map":
        return DirectMapBlend(shape, power)
    if method == "laplacian_pyramid":
        return PyramidBlend(shape, power, PyramidBlend.levels_for(shape))
    if method == "luma_weighted_chroma_pick":
        return LumaChromaBlend(shape, power)
    raise ValueError(f"unknown blend {method!r}; expected one of {BLENDS}")

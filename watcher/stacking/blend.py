"""Blend stage: fold frames one at a time into running accumulators, so memory is flat in the frame count.

Every blend is a reducer: ``add(pixels, score)`` once per aligned frame (any order), then ``result()``.
``pixels`` is the aligned frame, (H, W, 3) uint8/uint16 BGR; ``score`` is its per-pixel log focus energy at full
resolution, (H, W) float32, with pixels the frame does not cover set to :data:`UNCOVERED`. Results are float32
(H, W, 3) in [0, 1].

Weights are ``energy ** power`` = ``exp(power * score)``, normalised per pixel over the frames. They are
accumulated as an *online softmax*: a running per-pixel maximum keeps ``exp`` in range, and earlier sums are
rescaled whenever the maximum grows, which gives exactly the all-frames-at-once result.
"""

from __future__ import annotations

import cv2
import numpy as np

BLENDS = ("weighted", "guided_weighted", "direct_map", "laplacian_pyramid", "luma_weighted_chroma_pick")
UNCOVERED = np.float32(-1e30)  # score of pixels a frame does not cover: weight exactly 0
CHROMA_SHARPNESS = 4.0  # chroma weights are luma weights ** 4: a near-pick of the sharpest frame's colour
_ROWS = 128  # rows per chunk: keeps temporaries small for 64 MP frames


def _row_chunks(height: int):
    for start in range(0, height, _ROWS):
        yield slice(start, min(start + _ROWS, height))


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

    def add(self, t: np.ndarray, values: np.ndarray, scale: float = 1.0) -> None:
        """Fold one frame: exponent ``t`` (h, w) and ``values`` (h, w, c) times ``scale``."""
        for rows in _row_chunks(t.shape[0]):
            self.add_rows(rows, t[rows], values[rows], scale)

    def add_rows(self, rows: slice, t: np.ndarray, values: np.ndarray, scale: float = 1.0) -> None:
        peak, den, num = self.peak[rows], self.den[rows], self.num[rows]
        new_peak = np.maximum(peak, t)
        old = np.exp(peak - new_peak)  # rescales what was summed under the old maximum (exp(-inf) = 0)
        new = np.exp(t - new_peak)
        den *= old
        den += new
        num *= old[..., None]
        new *= np.float32(scale)
        num += values * new[..., None]
        peak[...] = new_peak

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

    def add(self, pixels: np.ndarray, score: np.ndarray) -> None:
        scale = 1.0 / np.iinfo(pixels.dtype).max
        for rows in _row_chunks(score.shape[0]):
            self.acc.add_rows(rows, score[rows] * self.power, pixels[rows], scale)

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

    def add(self, pixels: np.ndarray, score: np.ndarray) -> None:
        if self.best is None:
            self.best, self.second = pixels.copy(), pixels.copy()
        for rows in _row_chunks(score.shape[0]):
            s, px = score[rows], pixels[rows]
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

    def add(self, pixels: np.ndarray, score: np.ndarray) -> None:
        gaussian = pixels.astype(np.float32) * np.float32(1.0 / np.iinfo(pixels.dtype).max)
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

    def add(self, pixels: np.ndarray, score: np.ndarray) -> None:
        scale = np.float32(1.0 / np.iinfo(pixels.dtype).max)
        for rows in _row_chunks(score.shape[0]):
            ycc = cv2.cvtColor(pixels[rows].astype(np.float32) * scale, cv2.COLOR_BGR2YCrCb)
            t = score[rows] * self.power
            self.luma.add_rows(rows, t, ycc[..., :1])
            t *= np.float32(CHROMA_SHARPNESS)
            self.chroma.add_rows(rows, t, ycc[..., 1:])

    def result(self) -> np.ndarray:
        ycc = np.concatenate([self.luma.result(), self.chroma.result()], axis=2)
        self.luma = self.chroma = None  # type: ignore[assignment]
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


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

"""Weigh stage: each frame's share of every pixel, from the depth map, at the decision's resolution.

Frame ``k`` weighs ``kernel(k - depth)`` (:func:`~watcher.stacking.blend.kernel`), normalised over the frames that
cover the pixel; where none of the frames the depth names covers a pixel (a border that breathing or a shift left
uncovered), the covering frame nearest in focus takes it. The totals are summed once; each frame's weights are
then made when the merge needs them, so memory holds a few maps, whatever the number of frames.
"""

from __future__ import annotations

import numpy as np

from watcher.stacking.blend import FrameWeights, kernel, transitions
from watcher.stacking.measure import Measured


class WeightPlan:
    """Normalised weights of every frame of a measured stack.

    Parameters
    ----------
    measured : Measured
    depth : ndarray, shape (h, w), float32
        The (refined) depth map, frame index per pixel.
    method : str
        The blend (its kernels, :func:`~watcher.stacking.blend.transitions`).
    """

    def __init__(self, measured: Measured, depth: np.ndarray, method: str) -> None:
        self.measured = measured
        self.depth = depth
        self.halves = tuple(dict.fromkeys(transitions(method)))  # luma's, then colour's if it differs
        self.count = len(measured.warps)
        self.totals = {half: np.zeros(depth.shape, np.float32) for half in self.halves}
        nearest_distance = np.full(depth.shape, np.inf, np.float32)
        self.nearest = np.full(depth.shape, -1, np.int32)  # covering frame nearest in focus, for orphan pixels
        weighed = [False] * self.count
        for k in range(self.count):
            covered = measured.coverage(k)
            for half, total in self.totals.items():
                raw = self._raw(k, half, covered)
                weighed[k] = weighed[k] or bool(raw.any())
                total += raw
            distance = np.abs(depth - np.float32(k))
            if covered is not None:
                distance[~covered] = np.inf
            closer = distance < nearest_distance
            nearest_distance[closer] = distance[closer]
            self.nearest[closer] = k
        self.orphans = {half: total <= 0 for half, total in self.totals.items()}
        for half, total in self.totals.items():
            total[self.orphans[half]] = 1.0
        orphaned = set(np.unique(self.nearest[np.logical_or.reduce(list(self.orphans.values()))]).tolist())
        self.used = [k for k in range(self.count) if weighed[k] or k in orphaned]  # frames with any weight

    def frame(self, index: int) -> FrameWeights:
        """Frame ``index``'s weights."""
        covered = self.measured.coverage(index)
        maps = [self._normalised(index, half, covered) for half in self.halves]
        return FrameWeights(maps[0], maps[-1], self.measured.warps[index], self.measured.gains[index])

    def shares(self, confidence: np.ndarray) -> list[float]:
        """Each frame's share of the result where something is in focus (weighted by ``confidence``), so that a
        flat background, which any frame could give, does not hand every frame a share. They sum to 1."""
        total = float(confidence.sum())
        if total <= 0:
            confidence, total = np.ones_like(confidence), float(confidence.size)
        half = self.halves[0]
        return [float((self._normalised(k, half, self.measured.coverage(k)) * confidence).sum()) / total
                for k in range(self.count)]

    def _raw(self, index: int, half: float, covered: np.ndarray | None) -> np.ndarray:
        weight = kernel(index, self.depth, half)
        if covered is not None:
            weight[~covered] = 0.0
        return weight

    def _normalised(self, index: int, half: float, covered: np.ndarray | None) -> np.ndarray:
        weight = self._raw(index, half, covered)
        weight[self.orphans[half] & (self.nearest == index)] = 1.0
        weight /= self.totals[half]
        return weight

"""Decide stage: which frame is in focus at each pixel, as a smooth depth map (frame index, fractional).

Frames stream through :class:`DepthVotes` one at a time; it keeps only running per-pixel statistics (best score and
its frame, the scores of that frame's two neighbours, the mean score, the lowest score), so memory does not grow
with the number of frames. :func:`decide` turns them into a depth map:

1. Where one frame is clearly sharper than the stack's average (a *confident* pixel), the depth is that frame,
   refined to a fraction of a frame by a parabola through its neighbours' scores.
2. Everywhere else -- flat areas, the inside of bright strokes, noise -- no frame has evidence of its own, and a
   frame's score there is only the light its blur spread from somewhere else. Those pixels take the depth of the
   confident pixels around them, the strongest evidence counting most, from as far as needed (a pyramid fill:
   each gap is filled at the scale of the gap). So a flat stroke takes the depth of its own edges, and a frame's
   blurred light beside an edge loses to the edge's own sharp frame.

:func:`refine` then smooths the depth map where its own evidence is weak or disagrees with its surroundings by
more than half a frame (a blurred frame's glow that out-scored the flat gap between two bright strokes), following
the reference frame's edges, so flat areas take one depth and show no mottle of frames switching back and forth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from watcher.stacking.focus import guided_filter

# A pixel is confident when its best frame's score exceeds the mean over the frames by more than this (natural
# log of energy): 0 at CONFIDENT_FROM, 1 at CONFIDENT_FROM + CONFIDENT_RAMP.
CONFIDENT_FROM = 0.3
CONFIDENT_RAMP = 0.5
# Spread light: a frame d focus steps away from a strong source shows it blurred, its light spread up to
# SPREAD_REACH * d * blur_step px away (blur_step: how much the blur grows per focus step, measured per stack).
# Evidence there that is SPREAD_MARGIN (natural log of energy) weaker than the source may be that light, and is
# not trusted: the pixel takes its depth from around it instead.
SPREAD_REACH = 1.5
SPREAD_MARGIN = 2.0
_SPREAD_PIXELS = 1_000_000  # the spread test runs on a max-pooled copy of at most this many pixels
# Fill: a pyramid level's own estimate replaces the coarser one where FILL_GAIN * (its share of confident pixels)
# reaches 1 (a quarter of the neighbourhood confident suffices).
FILL_GAIN = 4.0
# Fill: evidence counts as exp(FILL_STRENGTH * score): a source a little stronger outweighs many weaker pixels.
FILL_STRENGTH = 3.0
# refine: a confident pixel whose depth differs from the smoothed map by more than this (frames) is an outlier.
OUTLIER_FRAMES = 0.5
# refine's smoothing: radius as a fraction of the map's diagonal; edges of the guide with a variance (grey values
# in [0, 1]) well above SMOOTHING_EPS are kept.
SMOOTHING_RADIUS = 0.003
SMOOTHING_EPS = 1e-3
_NO_SCORE = np.float32(-1e30)  # below any real score: a frame that does not cover a pixel


@dataclass(frozen=True)
class DepthMap:
    """Where each pixel is in focus.

    Attributes
    ----------
    depth : ndarray, shape (h, w), float32
        Frame index in [0, count - 1], fractional between frames.
    confidence : ndarray, shape (h, w), float32 in [0, 1]
        How much the pixel's own evidence decided its depth (0: filled from around it).
    """

    depth: np.ndarray
    confidence: np.ndarray


class DepthVotes:
    """Running per-pixel statistics of the frames' score maps, in any frame order.

    To place the depth between frames, each frame is folded in with its neighbours that came before it (if any
    did): whichever of two neighbours comes second completes the parabola of the other.

    Parameters
    ----------
    shape : (h, w)
        Size of every score map.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.best = np.full(shape, _NO_SCORE, np.float32)
        self.index = np.zeros(shape, np.int32)
        self.below = np.full(shape, _NO_SCORE, np.float32)  # score of frame index - 1, where seen
        self.above = np.full(shape, _NO_SCORE, np.float32)  # score of frame index + 1, where seen
        self.total = np.zeros(shape, np.float32)
        self.count = np.zeros(shape, np.float32)
        # lowest score over the frames covering the pixel: how much its focus changes across the stack, the object
        # mask's evidence (watcher/stacking/mask.py)
        self.worst = np.full(shape, -_NO_SCORE, np.float32)

    def add(self, index: int, score: np.ndarray, neighbours: Sequence[tuple[int, np.ndarray]] = ()) -> None:
        """Fold in the score map of frame ``index`` (pixels it does not cover set to ``UNCOVERED`` or below).

        ``neighbours``: (index, score) of frames ``index`` - 1 and + 1 that were folded in before.
        """
        covered = score > _NO_SCORE / 2
        np.add(self.total, score, out=self.total, where=covered)
        self.count += covered
        np.minimum(self.worst, score, out=self.worst, where=covered)
        seen = self.best > _NO_SCORE
        for below_me, slot in ((index - 1, self.above), (index + 1, self.below)):
            # this frame is the neighbour of pixels whose best frame is next to it
            np.copyto(slot, score, where=(self.index == below_me) & seen)
        # a tie goes to the lower index, so the order of folding never matters
        better = (score > self.best) | ((score == self.best) & (index < self.index))
        np.copyto(self.best, score, where=better)
        self.index[better] = index
        known = dict(neighbours)
        for other, slot in ((index - 1, self.below), (index + 1, self.above)):
            np.copyto(slot, known.get(other, _NO_SCORE), where=better)


def decide(votes: DepthVotes, count: int, blur_step: float | None) -> DepthMap:
    """The depth map from the folded votes of ``count`` frames (see the module docstring).

    ``blur_step``: growth of the blur radius per focus step in px of the map (None: unknown, no spread test).
    """
    best, below, above = votes.best, votes.below, votes.above
    has_both = (below > _NO_SCORE) & (above > _NO_SCORE)
    curvature = np.where(has_both, below - 2.0 * best + above, 0.0)
    peaked = curvature < -1e-6
    offset = np.zeros_like(best)
    np.divide(0.5 * (below - above), curvature, out=offset, where=peaked)
    depth = votes.index.astype(np.float32) + np.clip(offset, -0.5, 0.5)
    covered = votes.count > 0
    mean = np.divide(votes.total, votes.count, out=np.zeros_like(best), where=covered)
    margin = np.where(covered, best - mean, 0.0)
    confidence = np.clip((margin - CONFIDENT_FROM) / CONFIDENT_RAMP, 0.0, 1.0).astype(np.float32)
    if blur_step:
        bound = spread_bound(np.where(covered, best, _NO_SCORE), votes.index, count, blur_step)
        confidence *= 1.0 - np.clip((bound - SPREAD_MARGIN - best) / CONFIDENT_RAMP, 0.0, 1.0)
    # The strongest evidence counts most in the fill: a frame's spread light beside an edge is weaker than the edge.
    relative = np.where(covered, best - best[covered].max(initial=0.0), -30.0)
    strength = np.exp(FILL_STRENGTH * relative).astype(np.float32)
    filled = fill(depth, confidence, strength, default=(count - 1) / 2)
    depth = confidence * depth + (1.0 - confidence) * filled
    return DepthMap(np.clip(depth, 0, count - 1).astype(np.float32), confidence)


def spread_bound(best: np.ndarray, index: np.ndarray, count: int, blur_step: float) -> np.ndarray:
    """Per pixel, the best score of any other frame's pixel near enough to have spread its light here.

    A source of frame ``j`` reaches pixels whose own best frame is ``d`` steps away within
    ``SPREAD_REACH * d * blur_step`` px. Computed on a max-pooled copy (at most :data:`_SPREAD_PIXELS`), with
    reaches rounded up to powers of two of its pixels.

    Parameters
    ----------
    best, index : ndarray, shape (h, w)
        Best score per pixel (``_NO_SCORE`` where no frame covers it) and its frame.
    count : int
    blur_step : float
        px of the map per focus step.

    Returns
    -------
    ndarray, shape (h, w), float32 (``_NO_SCORE`` where nothing reaches)
    """
    height, width = best.shape
    pool = max(1, math.ceil(math.sqrt(height * width / _SPREAD_PIXELS)))
    small_best = _max_pool(best, pool)
    small_index = _max_pool_index(best, index, pool)
    reach = SPREAD_REACH * blur_step / pool  # pooled px per focus step
    bound = np.full(small_best.shape, _NO_SCORE, np.float32)
    for source in np.unique(small_index):
        levels = [np.where(small_index == source, small_best, _NO_SCORE).astype(np.float32)]
        steps = np.abs(small_index - source)
        needed = np.where(steps > 0, np.ceil(np.log2(np.maximum(reach * steps, 1.0))), -1).astype(np.int32)
        for level in range(int(needed.max(initial=-1)) + 1):
            if level > 0:
                levels.append(_max_pool(levels[-1], 2))
            near = cv2.dilate(levels[level], np.ones((3, 3), np.uint8))
            if level > 0:
                near = cv2.resize(near, (near.shape[1] << level, near.shape[0] << level),
                                  interpolation=cv2.INTER_NEAREST)[: bound.shape[0], : bound.shape[1]]
            here = needed == level
            np.maximum(bound, near, out=bound, where=here)
    return cv2.resize(bound, (width, height), interpolation=cv2.INTER_NEAREST) if pool > 1 else bound


def _max_pool(image: np.ndarray, size: int) -> np.ndarray:
    """Maximum over ``size`` x ``size`` blocks (edges padded with the lowest score)."""
    if size == 1:
        return image
    height, width = image.shape
    rows, cols = -(-height // size), -(-width // size)
    padded = np.full((rows * size, cols * size), _NO_SCORE, np.float32)
    padded[:height, :width] = image
    return padded.reshape(rows, size, cols, size).max(axis=(1, 3))


def _max_pool_index(best: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """The frame of each ``size`` x ``size`` block's best score."""
    if size == 1:
        return index
    height, width = best.shape
    rows, cols = -(-height // size), -(-width // size)
    padded = np.full((rows * size, cols * size), _NO_SCORE, np.float32)
    padded[:height, :width] = best
    padded_index = np.zeros(padded.shape, np.int32)
    padded_index[:height, :width] = index
    blocks = padded.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(rows, cols, size * size)
    where = blocks.argmax(axis=2)
    indices = padded_index.reshape(rows, size, cols, size).transpose(0, 2, 1, 3).reshape(rows, cols, size * size)
    return np.take_along_axis(indices, where[..., None], axis=2)[..., 0]


def fill(values: np.ndarray, coverage: np.ndarray, strength: np.ndarray, *, default: float) -> np.ndarray:
    """Fill ``values`` where ``coverage`` is low from the values around them, at the scale of each gap.

    Pyramids of the strength-weighted values and of the coverage (push); then from coarse to fine each level's
    own strength-weighted mean replaces the coarser estimate as far as that level is covered (pull) --
    normalised convolution at every scale at once.

    Parameters
    ----------
    values : ndarray, shape (h, w), float32
    coverage : ndarray, shape (h, w), float32 in [0, 1]
        How much each pixel's own value is to be trusted (1: fully; ``FILL_GAIN`` times less suffices).
    strength : ndarray, shape (h, w), float32 > 0
        Relative weight of a trusted value against the others near it.
    default : float
        The value everywhere when nothing is covered.

    Returns
    -------
    ndarray, shape (h, w), float32
    """
    weights = coverage * strength
    sums, masses, covers = [values * weights], [weights], [coverage]
    while min(covers[-1].shape) > 2:
        sums.append(cv2.pyrDown(sums[-1]))
        masses.append(cv2.pyrDown(masses[-1]))
        covers.append(cv2.pyrDown(covers[-1]))
    mass = float(masses[-1].sum())
    estimate = np.full(masses[-1].shape, sums[-1].sum() / mass if mass > 0 else default, np.float32)
    for level in range(len(sums) - 1, -1, -1):
        if estimate.shape != sums[level].shape:
            estimate = cv2.pyrUp(estimate, dstsize=sums[level].shape[::-1])
        own = np.divide(sums[level], masses[level], out=estimate.copy(), where=masses[level] > 0)
        trust = np.clip(covers[level] * np.float32(FILL_GAIN), 0.0, 1.0)
        estimate = trust * own + (1.0 - trust) * estimate
    return estimate.astype(np.float32)


def refine(depth: DepthMap, guide: np.ndarray, *, edge_aware: bool = True) -> DepthMap:
    """Smooth ``depth`` where its evidence is weak or it is an outlier (see the module docstring).

    Parameters
    ----------
    depth : DepthMap
    guide : ndarray, shape (h, w), float32 in [0, 1]
        The reference frame's grey at the map's resolution.
    edge_aware : bool
        Follow ``guide``'s edges (a guided filter); otherwise a plain Gaussian of the same reach.
    """
    radius = max(1, round(SMOOTHING_RADIUS * float(np.hypot(*depth.depth.shape))))
    if edge_aware:
        smooth = guided_filter(guide, depth.depth, radius, SMOOTHING_EPS)
    else:
        smooth = cv2.GaussianBlur(depth.depth, (0, 0), radius / 2)
    trust = np.where(np.abs(depth.depth - smooth) > OUTLIER_FRAMES, 0.0, depth.confidence).astype(np.float32)
    refined = trust * depth.depth + (1.0 - trust) * smooth
    low, high = float(depth.depth.min(initial=0.0)), float(depth.depth.max(initial=0.0))
    return replace(depth, depth=np.clip(refined, low, high).astype(np.float32))

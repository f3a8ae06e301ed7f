"""Decide stage in isolation: running votes are order-independent, gaps are filled from strong evidence, a frame's
spread light never decides a pixel, and refinement smooths only what has no evidence of its own."""

from __future__ import annotations

import numpy as np

from watcher.stacking.depth import DepthMap, DepthVotes, decide, fill, refine, spread_bound
from watcher.stacking.measure import UNCOVERED

RNG = np.random.default_rng(5)


def folded(scores: list[np.ndarray], order: list[int]) -> DepthVotes:
    """Votes with the frames folded in ``order``, each with its neighbours folded before it."""
    votes = DepthVotes(scores[0].shape)
    seen: set[int] = set()
    for index in order:
        votes.add(index, scores[index], [(n, scores[n]) for n in (index - 1, index + 1) if n in seen])
        seen.add(index)
    return votes


def peaked_scores(depth: np.ndarray, count: int, noise: float = 0.0) -> list[np.ndarray]:
    """Scores of ``count`` frames for a scene whose true depth (fractional frame index) is ``depth``."""
    return [(-((depth - k) ** 2) + RNG.normal(0, noise, depth.shape)).astype(np.float32) for k in range(count)]


def test_votes_give_the_same_depth_in_any_frame_order():
    depth = np.linspace(0, 6, 70, dtype=np.float32)[None].repeat(20, 0)
    scores = peaked_scores(depth, 7, noise=0.05)
    reference = decide(folded(scores, [3, 4, 5, 6, 2, 1, 0]), 7, None)
    for order in ([0, 1, 2, 3, 4, 5, 6], [3, 4, 2, 5, 1, 6, 0], [6, 0, 5, 1, 4, 2, 3]):
        other = decide(folded(scores, order), 7, None)
        np.testing.assert_allclose(other.depth, reference.depth, atol=1e-5)


def test_a_clear_peak_is_placed_between_frames_to_a_tenth():
    depth = np.full((10, 10), 2.3, np.float32)
    decided = decide(folded(peaked_scores(depth, 6), [2, 3, 4, 5, 1, 0]), 6, None)
    assert np.allclose(decided.depth, 2.3, atol=0.1) and decided.confidence.min() == 1.0


def test_uncovered_pixels_do_not_vote():
    depth = np.full((8, 8), 1.0, np.float32)
    scores = peaked_scores(depth, 3)
    scores[2][:, :4] = UNCOVERED  # frame 2 does not cover the left half
    scores[2][:, 4:] = 10.0  # ... and is the clear winner on the right
    decided = decide(folded(scores, [1, 2, 0]), 3, None)
    assert np.allclose(decided.depth[:, :3], 1.0, atol=0.05) and np.allclose(decided.depth[:, 5:], 2.0, atol=0.05)
    votes = folded(scores, [1, 2, 0])  # the lowest score over the frames that cover each pixel (the mask's)
    assert np.array_equal(votes.worst[:, :4], np.minimum(scores[0], scores[1])[:, :4])
    assert np.array_equal(votes.worst[:, 4:], np.minimum.reduce(scores)[:, 4:])


def test_flat_pixels_take_the_depth_of_the_evidence_around_them():
    """A flat hole (every frame scores alike) inside a region focused at frame 4 is filled with 4."""
    depth = np.full((64, 64), 4.0, np.float32)
    scores = peaked_scores(depth, 8)
    for score in scores:
        score[20:44, 20:44] = -3.0  # no frame has evidence here
    decided = decide(folded(scores, list(range(8))), 8, None)
    assert decided.confidence[28:36, 28:36].max() == 0.0
    assert np.allclose(decided.depth[20:44, 20:44], 4.0, atol=0.05)


def test_the_strongest_evidence_wins_a_gap_between_two_depths():
    values = np.zeros((1, 64), np.float32)
    values[0, 40:] = 6.0
    coverage = np.zeros_like(values)
    coverage[0, :8] = coverage[0, 56:] = 1.0
    strength = np.where(np.arange(64) < 32, 1.0, 1e-3).astype(np.float32)[None]
    filled = fill(values, coverage, strength, default=3.0)
    assert filled[0, 20:40].max() < 1.0  # the gap takes the strong side's value
    assert np.allclose(filled[0, :8], 0.0) and np.allclose(filled[0, 56:], 6.0, atol=1e-4)


def test_fill_without_any_evidence_gives_the_default():
    out = fill(np.zeros((5, 7), np.float32), np.zeros((5, 7), np.float32), np.ones((5, 7), np.float32), default=2.5)
    assert np.allclose(out, 2.5)


def test_evidence_within_a_stronger_sources_blur_reach_is_not_trusted():
    """A thin bright ring in focus at frame 0 on a flat dark ground: the far frames' blurred rings score beside it
    (their spread light) and would win the flat ground there; within reach of the stronger source they do not."""
    shape = (120, 120)
    best = np.full(shape, -9.0, np.float32)
    index = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[:120, :120]
    radius = np.hypot(yy - 60, xx - 60)
    ring = np.abs(radius - 30) < 2
    best[ring] = -4.0
    for frame, offset in ((3, 9), (6, 18)):  # frame k's rim ~3 px per focus step from the ring
        rim = np.abs(radius - 30 - offset) < 2
        best[rim], index[rim] = -7.0, frame
    bound = spread_bound(best, index, 8, blur_step=3.0)
    assert (bound[index == 3] >= -4.0).all() and (bound[index == 6] >= -4.0).all()  # both within reach
    far = np.full(shape, -9.0, np.float32)
    far[ring] = -4.0
    far_index = np.zeros(shape, np.int32)
    far_index[60, 60] = 1  # one focus step from the ring's frame, 30 px away: beyond 1.5 x 3 px
    far[60, 60] = -7.0
    assert spread_bound(far, far_index, 8, blur_step=3.0)[60, 60] < -7.0


def test_decide_does_not_let_a_rim_decide_the_flat_ground():
    shape = (120, 120)
    yy, xx = np.mgrid[:120, :120]
    radius = np.hypot(yy - 60, xx - 60)
    scores = [np.full(shape, -9.0, np.float32) + RNG.normal(0, 0.02, shape).astype(np.float32) for _ in range(8)]
    scores[0][np.abs(radius - 30) < 2] = -4.0  # the ring, sharp in frame 0
    for k in range(1, 8):
        scores[k][np.abs(radius - 30 - 3 * k) < 1.5] = -7.0  # frame k's rim, 3 px per step out
    votes = folded(scores, [3, 4, 5, 6, 7, 2, 1, 0])
    naive = decide(votes, 8, None)
    assert np.abs(naive.depth[60, 60 + 30 + 12] - 4.0) < 0.6  # without the spread test the rim wins
    decided = decide(votes, 8, blur_step=3.0)
    assert decided.depth[60, 60 + 30 + 12] < 1.0 and decided.depth[60, 60 + 30 - 9] < 1.0


def test_refine_smooths_weak_depth_but_keeps_confident_structure():
    guide = np.zeros((80, 80), np.float32)
    guide[:, 40:] = 1.0
    depth = np.where(np.arange(80) < 40, 1.0, 5.0).astype(np.float32)[None].repeat(80, 0)
    noisy = depth + RNG.normal(0, 1.5, depth.shape).astype(np.float32) * (np.arange(80) < 40)
    confidence = np.ones_like(depth)
    confidence[:, :40] = 0.0  # the noisy half has no evidence of its own
    refined = refine(DepthMap(noisy, confidence), guide)
    assert refined.depth[:, 5:35].std() < noisy[:, 5:35].std() / 3
    np.testing.assert_array_equal(refined.depth[:, 45:], 5.0)

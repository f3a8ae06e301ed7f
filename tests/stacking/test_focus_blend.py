"""Focus and blend stages in isolation: measures rank sharpness, reducers are exact and order-independent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.stacking.blend import (
    BLENDS,
    UNCOVERED,
    DirectMapBlend,
    ScoreMap,
    SoftmaxAccumulator,
    make_blend,
)
from watcher.stacking.focus import MEASURES, focus_energy, focus_score, guided_filter

RNG = np.random.default_rng(11)
TEXTURE = RNG.random((120, 160)).astype(np.float32)


@pytest.mark.parametrize("measure", MEASURES)
def test_every_measure_ranks_sharp_above_blurred(measure):
    sharp = focus_energy(TEXTURE, measure, 7)
    blurred = focus_energy(cv2.GaussianBlur(TEXTURE, (0, 0), 2.0), measure, 7)
    assert sharp.shape == TEXTURE.shape and sharp.dtype == np.float32 and sharp.min() >= 0
    assert np.median(sharp) > 10 * np.median(blurred)


def test_score_is_log_energy_with_a_floor_for_flat_areas():
    flat = np.full((50, 50), 0.5, np.float32)
    score = focus_score(flat, "sml", 5)
    assert np.isfinite(score).all() and np.allclose(score, score[0, 0])


def test_guided_filter_smooths_flat_areas_but_keeps_the_guides_edges():
    guide = np.zeros((60, 60), np.float32)
    guide[:, 30:] = 1.0
    noisy = guide * 4 + RNG.normal(0, 0.5, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, 4, 1e-3)
    assert out[:, :26].std() < noisy[:, :26].std() / 3  # noise smoothed
    assert out[:, 34:].mean() - out[:, :26].mean() > 3.5  # step kept at full height
    box = cv2.boxFilter(noisy, -1, (9, 9))
    assert abs(out[:, 29].mean() - 0) < abs(box[:, 29].mean() - 0)  # less leakage across the edge than a box


def test_online_softmax_equals_batch_softmax_in_any_order():
    t = RNG.normal(0, 30, (5, 200, 30)).astype(np.float32)  # wide range: exp would overflow without the max
    values = RNG.random((5, 200, 30, 3)).astype(np.float32)
    weights = np.exp(t - t.max(0))
    expected = (weights[..., None] * values).sum(0) / weights.sum(0)[..., None]
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        acc = SoftmaxAccumulator((200, 30), 3)
        for i in order:
            acc.add(t[i], values[i])
        np.testing.assert_allclose(acc.result(), expected, atol=1e-5)


def test_uncovered_pixels_get_no_weight():
    acc = SoftmaxAccumulator((4, 4), 1)
    acc.add(np.zeros((4, 4), np.float32), np.full((4, 4, 1), 0.25, np.float32))
    covered_only_by_first = np.full((4, 4), UNCOVERED, np.float32)
    acc.add(covered_only_by_first, np.full((4, 4, 1), 1.0, np.float32))
    np.testing.assert_array_equal(acc.result(), 0.25)


def test_score_map_strips_equal_a_whole_resize():
    small = RNG.random((61, 83)).astype(np.float32)
    score = ScoreMap(small, (250, 333))
    whole = cv2.resize(small, (333, 250), interpolation=cv2.INTER_LINEAR)
    strips = np.vstack([score.rows(slice(a, min(a + 37, 250))) for a in range(0, 250, 37)])
    np.testing.assert_allclose(strips, whole, atol=1e-5)


def test_direct_map_picks_the_sharpest_and_blends_near_ties():
    blend = DirectMapBlend((2, 2), power=8)
    frames = [np.full((2, 2, 3), v, np.uint8) for v in (0, 100, 200)]
    scores = [np.array([[5, 0], [1, 0]], np.float32), np.array([[0, 5], [1, 0]], np.float32),
              np.array([[0, 0], [0, 0.01]], np.float32)]
    for frame, score in zip(frames, scores):
        blend.add(frame, ScoreMap(score, (2, 2)))
    out = blend.result()[..., 0] * 255
    assert out[0, 0] == pytest.approx(0, abs=0.1)  # frame 0 clearly sharpest
    assert out[0, 1] == pytest.approx(100, abs=0.1)  # frame 1 clearly sharpest
    assert out[1, 0] == pytest.approx(50, abs=0.5)  # frames 0 and 1 tie: half each
    assert 100 < out[1, 1] < 200  # near tie between frames 2 (best) and 0/1: mostly frame 2


@pytest.mark.parametrize("method", BLENDS)
def test_every_blend_reproduces_identical_frames(method):
    image = (RNG.random((64, 96, 3)) * 65535).astype(np.uint16)
    blend = make_blend(method, (64, 96), 8)
    for _ in range(3):
        blend.add(image, ScoreMap(RNG.normal(size=(32, 48)).astype(np.float32), (64, 96)))
    np.testing.assert_allclose(blend.result() * 65535, image, atol=2.0)


@pytest.mark.parametrize("method", BLENDS)
def test_every_blend_takes_each_region_from_its_sharp_frame(method):
    left, right = np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96, 3), np.uint8)
    left[:, :48] = 200
    right[:, 48:] = 100
    score_left = np.where(np.arange(96) < 48, 2.0, -2.0).astype(np.float32)[None].repeat(64, 0)
    blend = make_blend(method, (64, 96), 8)
    blend.add(left, ScoreMap(score_left, (64, 96)))
    blend.add(right, ScoreMap(-score_left, (64, 96)))
    out = blend.result() * 255
    assert np.allclose(out[:, :40], 200, atol=3) and np.allclose(out[:, 56:], 100, atol=3)

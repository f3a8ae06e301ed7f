"""Focus stage in isolation: measures rank sharpness, scales combine, relative blur is measured in pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.stacking.focus import MEASURES, focus_energy, focus_score, guided_filter, multiscale_score, relative_blur

RNG = np.random.default_rng(11)
TEXTURE = cv2.GaussianBlur(RNG.random((240, 320)).astype(np.float32), (0, 0), 0.7)


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


@pytest.mark.parametrize("measure", MEASURES)
def test_multiscale_score_ranks_every_blur_in_order(measure):
    scores = [multiscale_score(cv2.GaussianBlur(TEXTURE, (0, 0), s) if s else TEXTURE, measure, 5, 4)
              for s in (0, 1, 2, 4)]
    medians = [float(np.median(s)) for s in scores]
    assert medians == sorted(medians, reverse=True), medians
    assert scores[0].shape == TEXTURE.shape and scores[0].dtype == np.float32


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_relative_blur_measures_the_extra_blur_in_pixels_either_way(sigma):
    blurred = cv2.GaussianBlur(TEXTURE, (0, 0), sigma)
    assert relative_blur(TEXTURE, blurred) == pytest.approx(sigma, rel=0.35)
    assert relative_blur(blurred, TEXTURE) == pytest.approx(sigma, rel=0.35)
    assert relative_blur(TEXTURE, TEXTURE) == 0.0


def test_guided_filter_smooths_flat_areas_but_keeps_the_guides_edges():
    guide = np.zeros((60, 60), np.float32)
    guide[:, 30:] = 1.0
    noisy = guide * 4 + RNG.normal(0, 0.5, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, 4, 1e-3)
    assert out[:, :26].std() < noisy[:, :26].std() / 3  # noise smoothed
    assert out[:, 34:].mean() - out[:, :26].mean() > 3.5  # step kept at full height
    box = cv2.boxFilter(noisy, -1, (9, 9))
    assert abs(out[:, 29].mean() - 0) < abs(box[:, 29].mean() - 0)  # less leakage across the edge than a box

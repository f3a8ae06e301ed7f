"""Match stage: per-channel gains recover a known exposure and white-balance drift, in spite of defocus."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synthetic import load_photo
from watcher.stacking.photometric import GAIN_LIMITS, channel_gains, match_copy


def encoded(linear: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(linear, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return load_photo("coffee", (640, 480)) ** 2.2  # linear light


@pytest.mark.parametrize("drift", [(1.0, 1.0, 1.0), (0.97, 1.02, 1.04), (1.1, 1.05, 0.93)])
def test_gains_undo_a_drift_of_the_frame_even_when_it_is_defocused(scene, drift):
    reference = encoded(scene)
    frame = encoded(cv2.GaussianBlur(scene, (0, 0), 4) * np.asarray(drift, np.float32))
    gains = channel_gains(match_copy(reference), match_copy(frame))
    expected = [(1 / d) ** (1 / 2.2) for d in drift]
    assert gains == pytest.approx(expected, abs=0.006)


def test_a_frame_of_something_else_is_not_matched(scene):
    reference = encoded(scene)
    dark = encoded(scene * 0.2)
    assert channel_gains(match_copy(reference), match_copy(dark)) is None  # beyond GAIN_LIMITS
    assert GAIN_LIMITS[0] > (1 / 0.2) ** (-1 / 2.2) or GAIN_LIMITS[1] < (1 / 0.2) ** (1 / 2.2)

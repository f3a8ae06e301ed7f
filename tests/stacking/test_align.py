"""Align stage: ECC recovers known transforms, rejects nonsense, and maps between resolutions exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.stacking.align import (
    alignment_image,
    coverage,
    estimate_pair,
    implausibility,
    rescale_warp,
    warp_frame,
)


def textured(height: int = 480, width: int = 640, seed: int = 3) -> np.ndarray:
    """Grey float32 texture with detail at several scales (ECC needs structure)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for size in (4, 16, 64):
        noise = rng.random((height // size + 2, width // size + 2)).astype(np.float32)
        image += cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.normalize(image, None, 0, 1, cv2.NORM_MINMAX)


def breathing(scale: float, dx: float, dy: float, degrees: float, shape: tuple[int, int]) -> np.ndarray:
    """Similarity about the image centre: the focus-breathing + jitter model of a rig."""
    height, width = shape
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, scale)
    matrix[:2, 2] += (dx, dy)
    return matrix


def corner_rms(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    height, width = shape
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    pa, pb = corners @ a.T, corners @ b.T
    return float(np.sqrt(np.mean(np.sum((pa[:, :2] / pa[:, 2:] - pb[:, :2] / pb[:, 2:]) ** 2, axis=1))))


@pytest.mark.parametrize("levels", [1, 4])
def test_recovers_a_known_breathing_step_to_a_tenth_of_a_pixel(levels):
    template = textured()
    truth = breathing(1.004, 2.3, -1.7, 0.15, template.shape)
    moving = cv2.warpPerspective(template, np.linalg.inv(truth), template.shape[::-1], flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)
    pair = estimate_pair(template, moving, levels=levels, keep_percent=10)
    assert pair.model == "homography" and pair.correlation > 0.95
    assert corner_rms(pair.warp, np.linalg.inv(truth), template.shape) < 0.1


def test_with_nothing_to_predict_it_falls_back_to_identity_with_a_warning():
    template = textured(seed=1)
    unrelated = textured(seed=2)
    pair = estimate_pair(template, unrelated, levels=3, keep_percent=10)
    assert pair.model == "identity"
    np.testing.assert_array_equal(pair.warp, np.eye(3))
    assert pair.warnings == ("no model fits and nothing predicts this frame: used unaligned",)
    assert pair.tried  # why each model was refused, for the record


def test_a_frame_nothing_fits_is_placed_where_its_neighbours_predict_without_a_warning():
    template = textured(seed=1)
    unrelated = textured(seed=2)
    prediction = breathing(1.003, 1.0, -0.5, 0.05, template.shape)
    pair = estimate_pair(template, unrelated, levels=3, keep_percent=10, prediction=prediction)
    assert pair.model == "predicted" and pair.warnings == ()
    np.testing.assert_array_equal(pair.warp, prediction)


def test_a_low_detail_frame_keeps_its_right_transform_though_identity_fits_it_as_well():
    """Far out of focus, a frame correlates with its neighbour about as well unaligned as aligned: the estimate must
    not be thrown away for a noisy "no better than not aligning" (seen: 0.995 rejected against 0.997)."""
    rng = np.random.default_rng(7)
    template = cv2.GaussianBlur(textured(seed=4), (0, 0), 6)
    truth = breathing(1.006, 1.5, -1.0, 0.1, template.shape)
    moving = cv2.warpPerspective(template, np.linalg.inv(truth), template.shape[::-1], flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)
    moving = moving + rng.normal(0, 0.01, moving.shape).astype(np.float32)
    previous_step = breathing(1.005, 1.2, -0.8, 0.08, template.shape)
    pair = estimate_pair(template, moving, levels=4, keep_percent=50, prediction=np.linalg.inv(previous_step))
    assert pair.model in ("homography", "affine", "predicted")
    assert corner_rms(pair.warp, np.linalg.inv(truth), template.shape) < 0.5


@pytest.mark.parametrize(("warp", "reason"), [
    (breathing(1.2, 0, 0, 0, (480, 640)), "scale 1.200"),
    (breathing(1.0, 0, 0, 10, (480, 640)), "rotation"),
    (breathing(1.0, 90, 0, 0, (480, 640)), "corner shift"),
    (np.array([[1.0, 0, 0], [0, 1, 0], [1e-4, 0, 1]]), "perspective"),
])
def test_implausible_steps_are_named(warp, reason):
    assert reason in implausibility(warp, (480, 640))


def test_plausible_step_passes():
    assert implausibility(breathing(1.005, 3, -2, 0.2, (480, 640)), (480, 640)) is None


def test_rescale_warp_commutes_with_resizing():
    # A warp found on a half-size copy, scaled up, must equal the full-size warp (pixel centres respected).
    full = breathing(1.01, 5.0, -3.0, 0.3, (400, 600))
    small = rescale_warp(full, 0.5)
    np.testing.assert_allclose(rescale_warp(small, 2.0), full, atol=1e-12)
    point_full = np.array([100.0, 50.0, 1.0])
    point_small = np.array([(100 + 0.5) * 0.5 - 0.5, (50 + 0.5) * 0.5 - 0.5, 1.0])
    mapped_full, mapped_small = full @ point_full, small @ point_small
    np.testing.assert_allclose((mapped_full[:2] + 0.5) * 0.5 - 0.5, mapped_small[:2], atol=1e-9)


def test_alignment_image_is_small_grey_float():
    pixels = np.full((3000, 4000, 3), 65535, np.uint16)
    grey, scale = alignment_image(pixels, 1000)
    assert grey.shape == (750, 1000) and grey.dtype == np.float32
    assert scale == 0.25 and np.allclose(grey, 1.0)
    mid = alignment_image(np.full((10, 10, 3), 128, np.uint8), 1000)[0]
    assert np.allclose(mid, (128 / 255) ** 2.2, rtol=1e-4)  # linear light


def test_warp_frame_keeps_size_dtype_and_moves_content():
    pixels = np.zeros((100, 120, 3), np.uint16)
    pixels[40:60, 50:70] = 60000
    shift = np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])  # reference x -> frame x + 10
    out = warp_frame(pixels, shift)
    assert out.shape == pixels.shape and out.dtype == np.uint16
    assert out[50, 45].max() == 60000 and out[50, 65].max() == 0
    assert warp_frame(pixels, np.eye(3)) is pixels


def test_coverage_marks_pixels_outside_the_frame():
    # The warp maps reference pixels into the frame: shrinking maps every reference pixel inside the frame.
    shrink = breathing(1 / 1.05, 0, 0, 0, (200, 300))
    assert coverage(shrink, (200, 300)) is None
    grow = breathing(1.05, 0, 0, 0, (200, 300))  # reference borders land outside the frame: not covered
    covered = coverage(grow, (200, 300))
    assert covered is not None and covered[100, 150] and not covered[0, 0] and not covered[199, 299]
    assert 0.8 < covered.mean() < 0.95

"""Registration for the benchmarks (benchmarks/registration.py): known warps must come back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.registration import chain_to_reference, ecc_homography, warp_into

SHAPE = (320, 400)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A textured 8-bit BGR image with some structure at every scale."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((*SHAPE, 3)).astype(np.float32)
    layers = sum(cv2.GaussianBlur(noise, (0, 0), sigma) * sigma for sigma in (1.0, 3.0, 9.0))
    return np.clip(128 + 40 * layers / layers.std(), 0, 255).astype(np.uint8)


def test_registration_recovers_a_known_homography(image) -> None:
    fixed = image
    known = np.array([[1.02, 0.004, -3.5], [-0.003, 1.02, 2.25], [1e-6, 0.0, 1.0]])
    moving = cv2.warpPerspective(fixed, np.linalg.inv(known), SHAPE[::-1], flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)
    warp, correlation = ecc_homography(moving, fixed)
    corners = np.array([[0, 0, 1], [399, 0, 1], [0, 319, 1], [399, 319, 1]], float).T
    mapped = [w @ corners for w in (warp, np.linalg.inv(known))]
    error = np.hypot(*(mapped[0][:2] / mapped[0][2] - mapped[1][:2] / mapped[1][2]))
    assert correlation > 0.95 and error.max() < 0.3, error
    back, covered = warp_into(moving, warp, SHAPE[::-1])
    assert covered[40:-40, 40:-40].all() and not covered.all()
    assert np.mean(np.abs(back[covered].astype(int) - fixed[covered])) < 6


def test_chain_to_reference_composes_neighbour_steps(image) -> None:
    frames = []
    for scale in (0.98, 1.0, 1.02):  # focus breathing about the centre
        matrix = cv2.getRotationMatrix2D((199.5, 159.5), 0.0, scale)
        frames.append(cv2.warpAffine(image, matrix, SHAPE[::-1], flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT))
    warps = chain_to_reference(frames, 1)
    np.testing.assert_allclose(warps[1], np.eye(3))
    assert warps[0][0, 0] == pytest.approx(0.98, abs=0.002) and warps[2][0, 0] == pytest.approx(1.02, abs=0.002)

"""The artifact measures of benchmarks/quality.py.

Each measure is checked on an image built to have exactly the fault it names, next to the same image without
it: the instrument must see the fault and must not see it where it is absent.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.quality import (
    ArtifactScales,
    artifact_maps,
    artifact_regions,
    artifact_scores,
    band_psnr,
    edge_regions,
    edge_step,
    frame_baseline,
    tile_energy,
    unit_luma,
)

SHAPE = (320, 400)


def _board(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark green textured board with white strokes 14-20 px wide and a bright pad; (image float32 [0, 1]
    BGR, stroke-and-pad mask float32 with anti-aliased edges)."""
    mask = np.zeros((SHAPE[0] * 4, SHAPE[1] * 4), np.uint8)
    cv2.rectangle(mask, (4 * 40, 4 * 60), (4 * 360, 4 * 76), 255, -1)  # a 16 px line
    cv2.rectangle(mask, (4 * 60, 4 * 120), (4 * 80, 4 * 280), 255, -1)  # a 20 px bar
    cv2.circle(mask, (4 * 200, 4 * 200), 4 * 50, 255, 4 * 14)  # a 14 px ring
    cv2.rectangle(mask, (4 * 290, 4 * 150), (4 * 370, 4 * 260), 255, -1)  # a pad
    mask = cv2.resize(mask, SHAPE[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    grain = cv2.GaussianBlur(rng.standard_normal(SHAPE).astype(np.float32), (0, 0), 0.8)
    board = np.array([0.10, 0.25, 0.08], np.float32) * (1 + 0.3 * grain / grain.std())[..., None]
    white = np.array([0.92, 0.92, 0.90], np.float32)
    return board + mask[..., None] * (white - board), mask


def _u8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _scores(images: dict[str, np.ndarray], baseline: np.ndarray) -> dict[str, dict[str, float]]:
    """Scores of each image against regions found on ``baseline`` (as if it were every frame)."""
    base = artifact_maps(baseline)
    regions = artifact_regions(base, base.roughness, np.ones(SHAPE, bool))
    return {label: artifact_scores(artifact_maps(image), regions) for label, image in images.items()}


@pytest.fixture(scope="module")
def board():
    return _board(np.random.default_rng(0))


def test_edge_regions_know_the_dark_side() -> None:
    luma = np.zeros((60, 80), np.float32)
    luma[:, 40:] = 0.8  # bright right half
    regions = edge_regions(*edge_step(luma, 2.0), 0.25)
    assert regions.edges[:, 38:42].any(axis=1).all()  # one thin line where the step is
    assert regions.edges.sum() == regions.edges.shape[0] and not regions.edges[:, :38].any()
    assert regions.dark_side[:, :35].all() and not regions.dark_side[:, 45:].any()
    assert regions.distance[10, 20] == pytest.approx(20, abs=1)  # the edge line lies at column 39.5 +- 0.5


def test_edge_step_measures_the_step_height() -> None:
    luma = np.zeros((60, 80), np.float32)
    luma[:, 40:] = 0.6
    for sigma in (1.5, 2.0, 3.0):
        step, _, _ = edge_step(luma, sigma)
        assert step.max() == pytest.approx(0.6, rel=0.1)


def test_halo_sees_glow_around_bright_strokes(board) -> None:
    image, mask = board
    glow = cv2.GaussianBlur(mask, (0, 0), 10.0)
    glowing = image + 0.25 * np.clip(glow - mask, 0, None)[..., None]
    scores = _scores({"clean": _u8(image), "glowing": _u8(glowing)}, _u8(image))
    assert scores["clean"]["halo"] == 0.0  # the baseline adds nothing to itself
    # The glow is 0.25 x the tail of a 10 px Gaussian: 8-32 px from the strokes it averages about 1.2 %.
    assert 0.8 < scores["glowing"]["halo"] < 2.0
    assert abs(scores["glowing"]["hollow"] - scores["clean"]["hollow"]) < 5.0  # glow is not hollowness


def test_hollowness_sees_grey_stroke_interiors(board) -> None:
    image, mask = board
    inside = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    hollow = image.copy()
    hollow[inside >= 5] *= 0.6  # interior 40 % darker, a rim 5 px wide left bright
    scores = _scores({"clean": _u8(image), "hollow": _u8(hollow)}, _u8(image))
    assert scores["clean"]["hollow"] < 5.0
    assert scores["hollow"]["hollow"] > scores["clean"]["hollow"] + 20.0


def test_mottling_sees_blotches_in_flat_regions_only() -> None:
    rng = np.random.default_rng(1)
    flat = np.full((*SHAPE, 3), 0.8, np.float32) + 0.004 * rng.standard_normal((*SHAPE, 3)).astype(np.float32)
    blotches = cv2.GaussianBlur(rng.standard_normal((*SHAPE, 3)).astype(np.float32), (0, 0), 6.0)
    blotchy = flat * (1 + 0.015 * blotches / blotches.std())
    scores = _scores({"flat": _u8(flat), "blotchy": _u8(blotchy)}, _u8(flat))
    assert scores["blotchy"]["mottle"] > 3 * scores["flat"]["mottle"]
    assert np.isnan(scores["flat"]["halo"])  # no strong edges, no halo band


def test_detail_falls_with_blur(board) -> None:
    image, _ = board
    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)
    scores = _scores({"sharp": _u8(image), "blurred": _u8(blurred)}, _u8(image))
    assert scores["blurred"]["detail"] < 0.7 * scores["sharp"]["detail"]


def test_band_psnr_looks_only_beside_strong_edges(board) -> None:
    image, mask = board
    truth = _u8(image)
    far = cv2.distanceTransform((mask < 0.5).astype(np.uint8), cv2.DIST_L2, 5) > 60
    damaged_far, damaged_near = truth.copy(), truth.copy()
    damaged_far[far] = 0
    near = ~far & (mask < 0.1)
    damaged_near[near] = np.clip(damaged_near[near].astype(int) + 20, 0, 255).astype(np.uint8)
    assert band_psnr(damaged_far, truth) == float("inf")
    assert band_psnr(damaged_near, truth) < 25.0


def test_baseline_takes_each_tile_from_its_sharpest_frame(board) -> None:
    image, _ = board
    sharp = _u8(image)
    soft = _u8(cv2.GaussianBlur(image, (0, 0), 3.0))
    scales = ArtifactScales(tile=80)
    left_sharp = soft.copy()
    left_sharp[:, :200] = sharp[:, :200]
    frames = [soft, left_sharp, sharp]
    baseline = frame_baseline(lambda: iter(frames), scales)
    assert baseline.sharpest_index == 2
    assert (baseline.owner[:, :2] != 0).all() and (baseline.owner[:, 3:] == 2).all()
    np.testing.assert_array_equal(baseline.per_tile.gradient2, artifact_maps(sharp, scales).gradient2)
    np.testing.assert_array_equal(baseline.roughest, np.maximum.reduce([artifact_maps(f).roughness for f in frames]))


def test_tile_energy_is_the_mean_per_tile() -> None:
    values = np.arange(35, dtype=np.float32).reshape(5, 7)
    energy = tile_energy(values, 3)
    assert energy.shape == (2, 3)
    assert energy[0, 0] == pytest.approx(values[:3, :3].mean())
    assert energy[1, 2] == pytest.approx(values[3:, 6:].mean())


def test_unit_luma_is_in_unit_range() -> None:
    assert unit_luma(np.full((2, 2, 3), 65535, np.uint16)).max() == pytest.approx(1.0)
    assert unit_luma(np.full((2, 2, 3), 255, np.uint8)).dtype == np.float32

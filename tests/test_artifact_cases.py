"""The synthetic artifact cases (benchmarks/artifact_cases.py): what each must contain to provoke its artifact."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.artifact_cases import ARTIFACT_CASES, make_artifact_stack
from benchmarks.quality import artifact_maps, artifact_regions, psnr

SIZE = (640, 480)


@pytest.fixture(scope="module")
def cases():
    return {name: make_artifact_stack(name, size=SIZE) for name in ARTIFACT_CASES}


def test_shapes_dtypes_and_frame_counts(cases) -> None:
    for name, case in cases.items():
        assert case.truth.shape == (480, 640, 3), name
        assert len(case.frames) == ARTIFACT_CASES[name]["n_frames"], name
    assert cases["long"].truth.dtype == np.uint16 and not cases["long"].jpeg_bytes
    assert cases["strokes"].jpeg_bytes and cases["smooth"].jpeg_bytes
    assert make_artifact_stack("long", size=(320, 240), dtype=np.uint8).jpeg_bytes  # the 8-bit JPEG variant


def test_strokes_defocus_far_wider_than_the_strokes_with_breathing(cases) -> None:
    case = cases["strokes"]
    assert case.blur_scale * float(np.ptp(case.depth)) >= 38.0  # px; strokes are 6-32 px wide
    # 1 %/frame breathing: the last frame is 7 % larger than the first (rotation changes [0, 0] by < 1e-5).
    assert case.homographies[-1][0, 0] / case.homographies[0][0, 0] == pytest.approx(1.035 / 0.965, abs=1e-4)
    # Two depth levels at least: the component (near) and the board (far), with an edge between them.
    assert (case.depth < 0.1).mean() > 0.1 and (case.depth > 0.5).mean() > 0.5
    # White strokes on a dark board: strong edges with a dark side, and stroke interiors to judge.
    maps = artifact_maps(case.truth)
    regions = artifact_regions(maps, maps.roughness, np.ones(case.truth.shape[:2], bool))
    assert regions.halo_band.mean() > 0.1 and regions.interior.mean() > 0.02


def test_smooth_has_large_flat_regions_noise_and_gain_drift(cases) -> None:
    case = cases["smooth"]
    maps = artifact_maps(case.truth)
    regions = artifact_regions(maps, maps.roughness, np.ones(case.truth.shape[:2], bool))
    assert regions.flat.mean() > 0.08  # after a 45 px margin from anything not flat, at 640x480
    off = np.abs(np.delete(case.gains, (len(case.gains) - 1) // 2, axis=0) - 1.0)
    assert off.min() >= 0.01 and off.max() <= 0.04
    # Signal-dependent noise: brighter flat areas are noisier.
    reference = (len(case.frames) - 1) // 2
    noise = case.frames[reference].astype(float) - case.in_frame_geometry(case.truth, reference).astype(float)
    assert psnr(case.frames[reference], case.in_frame_geometry(case.truth, reference)) < 45.0
    bright = case.in_frame_geometry(case.truth, reference).mean(axis=2) > 200
    dark = case.in_frame_geometry(case.truth, reference).mean(axis=2) < 170
    assert noise[bright].std() > noise[dark & regions.flat].std()


def test_long_ends_far_defocused(cases) -> None:
    case = cases["long"]
    # Blur (px) at the sharpest point of each frame: the last four have nothing within 2.5 px of focus.
    sharpest = np.array([case.blur_scale * float(np.abs(case.depth - d).min()) for d in case.focus_depths])
    assert len(case.frames) == 14 and (sharpest > 2.5).sum() == 4 and (sharpest[-4:] > 2.5).all()
    assert sharpest.max() > 9.0

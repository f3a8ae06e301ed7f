"""Stacking quality measured against ground truth on synthetic focal stacks (benchmarks/synthetic.py).

Every case has a known all-in-focus image, depth map and per-frame transforms. Scores are taken in the reference
frame's geometry; the "camera oracle" is each pixel from the frame focused nearest its true depth, perfectly
aligned: the best a stacker can do from these frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality import corner_error_rms, psnr
from benchmarks.synthetic import CASES, make_focal_stack, write_stack
from watcher.config import StackingSettings
from watcher.stacking.blend import BLENDS
from watcher.stacking.pipeline import reference_index, stack, stack_each_blend

SIZE = (640, 480)
FRAMES = 6


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (FocalStack, frame paths, reference index, truth and oracle in reference geometry)."""
    root = tmp_path_factory.mktemp("synthetic")
    ref = reference_index(FRAMES, StackingSettings().reference)
    built = {}
    for name in CASES:
        case = make_focal_stack(name, size=SIZE, n_frames=FRAMES)
        paths = write_stack(case, root / name)
        built[name] = (case, paths, ref, case.in_frame_geometry(case.truth, ref), case.camera_oracle(ref))
    return built


@pytest.fixture(scope="module")
def results(cases):
    """name -> blend -> StackResult, with the default settings otherwise (each case measured once)."""
    return {name: dict(zip(BLENDS, stack_each_blend(paths, StackingSettings(), BLENDS), strict=True))
            for name, (_, paths, *_rest) in cases.items()}


@pytest.fixture(scope="module")
def default_results(results):
    return {name: by_blend[StackingSettings().blend] for name, by_blend in results.items()}


def test_default_blend_is_close_to_the_oracle(cases, default_results):
    gaps = {name: psnr(default_results[name].image, truth) - psnr(oracle, truth)
            for name, (_, _, _, truth, oracle) in cases.items()}
    assert np.mean(list(gaps.values())) > -1.5, gaps
    assert min(gaps.values()) > -3.0, gaps


def test_alignment_matches_the_known_transforms(cases, default_results):
    for name, (case, _, ref, truth, _) in cases.items():
        frames = default_results[name].record["frames"]
        errors = [corner_error_rms(np.array(f["transform"]), case.true_alignment(i, ref), truth.shape)
                  for i, f in enumerate(frames) if i != ref]
        rms = float(np.sqrt(np.mean(np.square(errors))))
        assert rms < 0.3, f"{name}: corner RMS {rms:.3f} px, per frame {np.round(errors, 2)}"
        assert all(f["model"] != "identity" for i, f in enumerate(frames) if i != ref)


@pytest.mark.parametrize("blend", BLENDS)
def test_every_blend_clearly_beats_the_best_single_frame(cases, results, blend):
    for name, (case, _paths, _ref, truth, _) in cases.items():
        fused = psnr(results[name][blend].image, truth)
        best_single = max(psnr(frame, case.in_frame_geometry(case.truth, i)) for i, frame in enumerate(case.frames))
        assert fused > best_single + 0.75, f"{name}: {blend} {fused:.2f} dB vs best single frame {best_single:.2f} dB"


def test_16_bit_frames_give_a_16_bit_result_of_the_same_quality(tmp_path):
    case = make_focal_stack("coffee_tilt", size=SIZE, n_frames=FRAMES, dtype=np.uint16)
    paths = write_stack(case, tmp_path, ext=".png")
    settings = StackingSettings(output_format="png")
    result = stack(paths, settings)
    ref = reference_index(FRAMES, settings.reference)
    truth = case.in_frame_geometry(case.truth, ref)
    assert result.image.dtype == np.uint16 and result.record["output_bit_depth"] == 16
    assert len(np.unique(result.image[..., 1])) > 4096  # far more levels than 8 bits could hold
    assert psnr(result.image, truth) > psnr(case.camera_oracle(ref), truth) - 1.5

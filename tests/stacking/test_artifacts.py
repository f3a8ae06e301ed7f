"""Artifacts on synthetic ground truth: halos, hollow strokes, mottled flat regions and unaligned frames.

The cases of benchmarks/artifact_cases.py (strokes, smooth, long) are rendered small and stacked with the default
settings, then scored by benchmarks.artifacts.score_stack, as the benchmark table scores them. The "sharpest frame"
row carries the best PSNR of any single frame (in its own geometry); the camera oracle takes each pixel from the
frame focused nearest its true depth; "per tile" is the sharpest frame of each tile (the no-reference stand-in for
the oracle, against which halo, hollow, mottle and detail are measured).
Thresholds come from measurements, noted at each test, with the failure each one catches.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.artifact_cases import make_artifact_stack
from benchmarks.artifacts import score_stack, unaligned
from benchmarks.quality import corner_error_rms
from benchmarks.registration import chain_to_reference
from benchmarks.synthetic import write_stack
from watcher.config import StackingSettings
from watcher.stacking.pipeline import reference_index, stack

SIZE = (640, 480)
CASES = ("strokes", "smooth", "long")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """case -> (rows by image label, the stack's record, the FocalStack, reference index)."""
    root = tmp_path_factory.mktemp("artifact-cases")
    out = {}
    for name in CASES:
        case = make_artifact_stack(name, size=SIZE)
        sixteen = case.truth.dtype == np.uint16
        paths = write_stack(case, root / name, ext=".png" if sixteen else ".jpg")
        settings = StackingSettings(output_format="png") if sixteen else StackingSettings()
        result = stack(paths, settings)
        ref = reference_index(len(paths), settings.reference)
        warps = [case.true_alignment(i, ref) for i in range(len(paths))]
        ours = {"ours": (result.image, np.ones(result.image.shape[:2], bool), {"unaligned": unaligned(result.record)})}
        rows, _, _ = score_stack(name, paths, ref, warps, ours, case=case)
        by_label = {row["image"].split(" (")[0]: row for row in rows}
        out[name] = (by_label, result.record, case, ref)
    return out


# Measured: today's engine 4.4 (strokes), 2.5 (smooth) and 7.5 dB (long) above the best single frame.
@pytest.mark.parametrize("name", CASES)
def test_default_beats_the_best_single_frame(scored, name):
    rows = scored[name][0]
    assert rows["ours"]["psnr"] > rows["sharpest frame"]["psnr"] + 0.5, {k: r.get("psnr") for k, r in rows.items()}


# Halos and ghost bands (blurred frames' light beside strong edges) or misaligned far-defocused frames put an engine
# several dB below the oracle in the band (a one-pass depth-weighted merge: strokes 7.8 dB, long 2.8 dB). Measured
# here: strokes 0.4 dB below, smooth 2.7 dB above, and long 1.2 dB below at this size (0.8 dB at 1280x1280,
# benchmarks.artifacts): its four frames focused past the scene are placed to 1.9 px here, a plain ECC chain to
# 2.0 px, so that band keeps a little of their misplacement.
_BAND_TOLERANCE = {"strokes": 1.0, "smooth": 1.0, "long": 1.5}


@pytest.mark.parametrize("name", CASES)
def test_beside_strong_edges_close_to_the_frame_in_focus_there(scored, name):
    rows = scored[name][0]
    assert rows["ours"]["band"] > rows["camera oracle"]["band"] - _BAND_TOLERANCE[name], {
        k: r.get("band") for k, r in rows.items()}


# Measured: the camera oracle adds 0.0-0.1 % of full scale, the engine below 0.3 % everywhere (an engine that lets a
# defocused frame's glow through adds 4.6 % on strokes).
@pytest.mark.parametrize("name", CASES)
def test_no_halo_added(scored, name):
    rows = scored[name][0]
    assert rows["ours"]["halo"] < rows["camera oracle"]["halo"] + 0.5, {k: r["halo"] for k, r in rows.items()}


# Measured: today's engine +0.4 points against the frame in focus per tile on strokes (the real PCB stacks show
# +7 to +20 in benchmarks.artifacts: their strokes are wider and their board smoother).
def test_strokes_are_solid(scored):
    rows = scored["strokes"][0]
    assert rows["ours"]["hollow"] < rows["frame in focus per tile"]["hollow"] + 5.0, {
        k: r["hollow"] for k, r in rows.items()}


# Frames of different exposure and white balance winning in turn leave blotches (measured without photometric
# matching: 0.289 % against 0.180 % for the frame in focus per tile, x1.6). With the frames matched: below a single
# frame's.
def test_flat_regions_are_no_blotchier_than_the_frames(scored):
    rows = scored["smooth"][0]
    assert rows["ours"]["mottle"] < rows["frame in focus per tile"]["mottle"], {
        k: r["mottle"] for k, r in rows.items()}


# Measured: today's engine 1.02-1.03 x the frame in focus per tile; the margin lets a fix trade a little detail.
@pytest.mark.parametrize("name", CASES)
def test_detail_is_kept(scored, name):
    rows = scored[name][0]
    assert rows["ours"]["detail"] > 0.9 * rows["frame in focus per tile"]["detail"], {
        k: r["detail"] for k, r in rows.items()}


@pytest.mark.parametrize("name", CASES)
def test_every_frame_is_aligned(scored, name):
    _, record, _case, ref = scored[name]
    frames = record["frames"]
    assert all(f["model"] != "identity" for i, f in enumerate(frames) if i != ref), [f["model"] for f in frames]


# Measured max corner errors of the engine: strokes 1.8 px, smooth 1.4, long 1.9 (ECC on the strongest half of the
# gradients; on the strongest tenth it was 4.2, 2.5 and 4.0 px, twice the chain's 2.2, 1.3 and 2.0).
@pytest.mark.parametrize("name", CASES)
def test_alignment_at_least_as_good_as_a_plain_ecc_chain(scored, name):
    """Large defocus leaves too little detail for any homography to land exactly on the true transform (a plain
    pyramid-ECC chain between neighbours, benchmarks/registration.py, is off by 1-2 px at the corners of the
    most defocused frames here), so the engine is held to what that chain reaches, not to zero."""
    _, record, case, ref = scored[name]
    chain = chain_to_reference(case.frames, ref)
    engine = [np.array(f["transform"]) for f in record["frames"]]
    errors = {who: [corner_error_rms(w, case.true_alignment(i, ref), case.truth.shape) for i, w in enumerate(ws)]
              for who, ws in (("engine", engine), ("chain", chain))}
    assert max(errors["engine"]) < 1.25 * max(errors["chain"]) + 0.25, {k: np.round(v, 2) for k, v in errors.items()}

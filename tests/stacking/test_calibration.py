"""Calibrate once per scan: a stack's transforms reused for the next stack of the same rig, checked per frame,
and re-estimated where the check fails (a bump mid-stack, a changed focus range)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from benchmarks.quality import corner_error_rms
from benchmarks.synthetic import make_focal_stack, write_stack
from watcher.config import StackingSettings
from watcher.stacking.calibration import Calibration
from watcher.stacking.pipeline import reference_index, stack

SIZE, FRAMES = (640, 480), 7
# A rig whose camera stands still: the same focus steps (breathing) at every position.
RIG = {"size": SIZE, "n_frames": FRAMES, "scale_step": 0.006, "max_shift_px": 0.0, "max_rotation_deg": 0.0}
REF = reference_index(FRAMES, "middle")


def transforms(record: dict) -> list[np.ndarray]:
    return [np.array(frame["transform"]) for frame in record["frames"]]


def corner_errors(record: dict, case) -> list[float]:
    return [corner_error_rms(w, case.true_alignment(i, REF), case.truth.shape)
            for i, w in enumerate(transforms(record))]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """Two positions of one scan: the same focus steps (breathing), different objects."""
    root = tmp_path_factory.mktemp("scan")
    first = make_focal_stack("astronaut_dome", seed=0, **RIG)
    second = make_focal_stack("coffee_tilt", seed=1, **RIG)
    measured = stack(write_stack(first, root / "p000"), StackingSettings())
    return Calibration.from_record(measured.record, "scan01/p000"), second, write_stack(second, root / "p001")


def test_the_next_position_reuses_the_calibration_and_matches_its_own_alignment(scan):
    calibration, case, paths = scan
    own = stack(paths, StackingSettings()).record
    reused = stack(paths, StackingSettings(), calibration=calibration).record
    placed = [f for i, f in enumerate(reused["frames"]) if i != REF]
    assert all(f["placement"] == "calibrated" for f in placed), [f["placement"] for f in placed]
    assert all(f["calibration"]["held"] and f["calibration"]["source"] == "scan01/p000" for f in placed)
    for mine, theirs in zip(transforms(reused), transforms(own)):
        assert corner_error_rms(mine, theirs, case.truth.shape) < 0.2
    assert max(corner_errors(reused, case)) < 0.3


def test_a_bump_mid_stack_fails_the_check_there_and_that_frame_is_estimated_anew(scan, tmp_path):
    calibration, case, _ = scan
    bump = np.array([[1.0, 0.0, 6.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])  # the rig knocked before frame 5
    frames = [cv2.warpPerspective(f, bump, SIZE, borderMode=cv2.BORDER_REFLECT) if i >= 5 else f
              for i, f in enumerate(case.frames)]
    homographies = [bump @ h if i >= 5 else h for i, h in enumerate(case.homographies)]
    bumped = dataclasses.replace(case, frames=frames, homographies=homographies, jpeg_bytes=())
    record = stack(write_stack(bumped, tmp_path / "bumped"), StackingSettings(), calibration=calibration).record
    checks = [f.get("calibration", {}).get("held") for f in record["frames"]]
    assert checks[5] is False and record["frames"][5]["placement"] == "estimated"
    assert all(checks[i] for i in (0, 1, 2, 4, 6))  # the other steps did not change
    assert max(corner_errors(record, bumped)) < 0.3


def test_a_changed_focus_range_fails_every_check(scan, tmp_path):
    calibration, _, _ = scan
    other = make_focal_stack("coffee_tilt", seed=1, **{**RIG, "scale_step": 0.012})
    record = stack(write_stack(other, tmp_path / "other"), StackingSettings(), calibration=calibration).record
    placed = [f for i, f in enumerate(record["frames"]) if i != REF]
    assert not any(f["calibration"]["held"] for f in placed)
    assert all(f["placement"] == "estimated" for f in placed)
    assert max(corner_errors(record, other)) < 0.3


def test_a_calibration_for_other_frames_is_not_used(scan, tmp_path):
    calibration, _, _ = scan
    small = make_focal_stack("coffee_tilt", seed=1, **{**RIG, "size": (320, 240)})
    record = stack(write_stack(small, tmp_path / "small"), StackingSettings(), calibration=calibration).record
    assert all("calibration" not in f for f in record["frames"])


def test_a_record_without_transforms_gives_no_calibration():
    assert Calibration.from_record({"status": "failed"}, "x") is None
    unaligned = {"width": 4, "height": 3, "reference": {"index": 0},
                 "frames": [{"placement": "reference", "transform": np.eye(3).tolist()},
                            {"placement": "unaligned", "transform": np.eye(3).tolist()}]}
    assert Calibration.from_record(unaligned, "x") is None

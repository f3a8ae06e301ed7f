"""Focus-range feedback from real stacking runs: synthetic stacks made to stop short at the near end, to repeat a
focus position and to waste a frame each get the advice a user needs, and a well-covered stack gets none."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.synthetic import make_focal_stack, write_stack
from watcher.config import StackingSettings
from watcher.focus_range import DUPLICATE, EXTEND_NEAR, UNUSED
from watcher.stacking.pipeline import stack

SIZE = (480, 360)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """10 frames of a tilted scene focused evenly from its nearest to its farthest point, and a frame focused far
    past it (every pixel out of focus)."""
    folder = tmp_path_factory.mktemp("range")
    case = make_focal_stack("coffee_tilt", size=SIZE, n_frames=10)
    paths = write_stack(case, folder / "range")
    beyond = make_focal_stack("coffee_tilt", size=SIZE, n_frames=10, focus_range=(0.0, 2.0))
    extra = write_stack(beyond, folder / "beyond")[-1]
    return paths, extra


def kinds(paths) -> dict[str, list]:
    record = stack(paths, StackingSettings())
    advice = record.record["focus_range"]
    return {item["kind"]: list(item["frames"]) for item in advice}


def test_a_range_that_covers_the_scene_gets_no_advice(frames):
    paths, _ = frames
    assert kinds(paths) == {}


def test_a_range_short_at_the_near_end_is_told_to_extend_towards_near(frames):
    paths, _ = frames
    assert EXTEND_NEAR in kinds(paths[3:])


def test_the_same_focus_position_twice_is_found(frames, tmp_path):
    paths, _ = frames
    repeated = tmp_path / "repeat_05b.jpg"
    shutil.copyfile(paths[5], repeated)
    found = kinds([*paths[:6], repeated, *paths[6:]])
    assert found.get(DUPLICATE) == [5, 6]


def test_a_frame_focused_past_the_scene_is_wasted(frames):
    paths, extra = frames
    assert kinds([*paths, extra]).get(UNUSED) == [10]

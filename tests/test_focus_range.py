"""Focus-range feedback on synthetic scans: a range short at the near end, a repeated frame, a wasted frame.

Each synthetic position is an object whose surface depths are spread over a range (wobbling as the turntable
turns) and photographed at the given focus distances. A frame's log focus energy at a pixel falls with the
square of its defocus; the engine's weights are that energy to a power, normalised per pixel, so a frame's share
is its mean weight, and the focus change between neighbours is the median absolute difference of their log
energies (plus noise), as the record contract defines them.
"""

from __future__ import annotations

import numpy as np
import pytest

from watcher.focus_range import (
    DUPLICATE,
    EXTEND_FAR,
    EXTEND_NEAR,
    UNUSED,
    FrameMetrics,
    edge_share_limit,
    frame_metrics,
    scan_advice,
    stack_advice,
)

EVEN = np.linspace(0.0, 10.0, 8)  # focus distances (mm) of a range that covers the object's 0..10 mm


def synthetic_scan(focus, depth_ranges=((0.0, 10.0),), positions=40, seed=0, power=8.0, depth_of_field=1.0):
    """The per-frame metrics of ``positions`` stacks of an object with surface depths in ``depth_ranges``."""
    rng = np.random.default_rng(seed)
    focus = np.asarray(focus, np.float64)
    scan = []
    for position in range(positions):
        wobble = 0.3 * np.sin(2 * np.pi * position / positions)
        depths = np.concatenate([rng.uniform(lo, hi, 4000) for lo, hi in depth_ranges]) + wobble
        log_energy = -(((depths[:, None] - focus[None, :]) / depth_of_field) ** 2)
        log_energy += rng.normal(0.0, 0.05, log_energy.shape)  # sensor noise on the focus measure
        weights = np.exp(power * (log_energy - log_energy.max(axis=1, keepdims=True)))
        weights /= weights.sum(axis=1, keepdims=True)
        shares = weights.mean(axis=0)
        changes = [None] + [float(np.median(np.abs(log_energy[:, i] - log_energy[:, i - 1])))
                            for i in range(1, len(focus))]
        scan.append(FrameMetrics(tuple(float(s) for s in shares), tuple(changes)))
    return scan


def kinds(advice):
    return sorted((a.kind, a.frames) for a in advice)


def test_a_range_that_covers_the_object_gives_no_advice():
    scan = synthetic_scan(EVEN)
    assert scan_advice(scan) == []
    assert all(stack_advice(metrics) == [] for metrics in scan)
    assert all(sum(metrics.shares) == pytest.approx(1.0) for metrics in scan)


def test_a_range_short_at_the_near_end_says_extend_towards_near():
    scan = synthetic_scan(np.linspace(3.0, 10.0, 8))  # the object starts at 0 mm, the range at 3 mm
    advice = scan_advice(scan)
    assert kinds(advice) == [(EXTEND_NEAR, (0,))]
    (near,) = advice
    assert near.message.startswith("Extend the focus range towards near: the nearest frame (1 of 8)")
    assert near.positions == near.of == 40
    per_stack = stack_advice(scan[0])
    assert kinds(per_stack) == [(EXTEND_NEAR, (0,))] and "nearer than it" in per_stack[0].message


def test_a_range_short_at_the_far_end_says_extend_towards_far():
    scan = synthetic_scan(np.linspace(0.0, 6.0, 8))
    assert kinds(scan_advice(scan)) == [(EXTEND_FAR, (7,))]


def test_a_short_range_at_a_few_positions_is_not_a_scan_setting():
    scan = synthetic_scan(EVEN, positions=36) + synthetic_scan(np.linspace(3.0, 10.0, 8), positions=4, seed=1)
    assert scan_advice(scan) == []
    assert kinds(stack_advice(scan[-1])) == [(EXTEND_NEAR, (0,))]  # the position itself still says so


def test_a_repeated_focus_position_is_found_as_two_frames_that_look_the_same():
    focus = [*EVEN[:3], EVEN[2], *EVEN[3:]]  # the rig took the third focus position twice: 9 frames
    scan = synthetic_scan(focus)
    advice = scan_advice(scan)
    assert kinds(advice) == [(DUPLICATE, (2, 3))]
    assert advice[0].message.startswith("Frames 3 and 4 look the same at 40 of 40 positions")
    assert kinds(stack_advice(scan[5])) == [(DUPLICATE, (2, 3))]


def test_a_frame_that_wins_nothing_anywhere_is_wasted_capture_time():
    # A hollow object: nothing between 3.5 and 5.5 mm, where frame 4 of 8 (4.29 mm) focuses.
    scan = synthetic_scan(EVEN, depth_ranges=((0.0, 3.2), (5.4, 10.0)))
    advice = scan_advice(scan)
    assert kinds(advice) == [(UNUSED, (3,))]
    assert advice[0].message.startswith("Frame 4 of 8 adds nothing at 40 of 40 positions")


def test_a_range_beyond_the_object_says_where_to_end_it():
    scan = synthetic_scan(np.linspace(0.0, 14.0, 8))  # the object ends at 10 mm; frames 7 and 8 focus beyond
    advice = scan_advice(scan)
    assert kinds(advice) == [(UNUSED, (6, 7))]  # blurred-everywhere frames look alike, but are not a repeat
    assert advice[0].message.startswith("Frames 7 and 8 of 8 add nothing at 40 of 40 positions: the focus range "
                                        "ends beyond the object")
    near = synthetic_scan(np.linspace(-6.0, 10.0, 8))
    assert [a.message.split(":")[0] for a in scan_advice(near)] == ["Frames 1 to 3 of 8 add nothing at 40 of 40 "
                                                                    "positions"]


def test_the_scan_judges_the_usual_frame_count_only():
    scan = synthetic_scan(EVEN, positions=10) + synthetic_scan(np.linspace(3.0, 10.0, 5), positions=3)
    assert scan_advice(scan) == []
    assert scan_advice([]) == []


def test_edge_limit_is_relative_to_a_fair_share():
    assert edge_share_limit(3) == pytest.approx(0.5)
    assert edge_share_limit(10) == pytest.approx(0.2)
    assert edge_share_limit(30) == pytest.approx(0.2)


def test_frame_metrics_reads_the_record_contract_and_refuses_what_is_missing():
    frames = [{"name": "a", "share": 0.5, "focus_change": None},
              {"name": "b", "share": 0.3, "focus_change": 1.2},
              {"name": "c", "share": 0.2, "focus_change": 0.9}]
    assert frame_metrics(frames) == FrameMetrics((0.5, 0.3, 0.2), (None, 1.2, 0.9))
    assert frame_metrics([{"name": "a"}, {"name": "b"}]) is None  # a record from before the engine measured them
    assert frame_metrics([{"share": 1.5}]) is None
    assert frame_metrics([{"share": "x"}]) is None
    assert frame_metrics([]) is None
    assert stack_advice(FrameMetrics((1.0,), (None,))) == []

"""Completeness rules of the tracker, with an injected clock: no files, no sleeping."""

from __future__ import annotations

import pytest

from watcher.config import CompletenessSettings, NamingSettings
from watcher.service.naming import ScanInfo, StackId
from watcher.service.tracker import FileState, StackTracker

SETTLE, TIMEOUT = 5.0, 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **naming) -> StackTracker:
    return StackTracker(NamingSettings(**naming), CompletenessSettings(settle_seconds=SETTLE,
                                                                       stack_timeout_seconds=TIMEOUT), clock)


def state(size: int = 100, mtime: int = 1, complete: bool = True, age: float = 0.0) -> FileState:
    return FileState(size=size, mtime_ns=mtime, complete=complete, age=age)


def settle(tracker: StackTracker, clock: Clock, seconds: float = SETTLE) -> None:
    """Let time pass and look again at every file due for a look (unchanged)."""
    clock.now += seconds
    folder = tracker._scans
    for scan, name in tracker.to_recheck():
        tracker.observe(scan, name, folder[scan].files[name].state)


def ids(tracker: StackTracker) -> dict[str, str]:
    return {str(r.stack): r.reason for r in tracker.ready()}


def test_expected_count_makes_a_settled_stack_ready(clock):
    tracker = make(clock, mode="fixed", stack_size=3)
    for i in range(3):
        tracker.observe("", f"img{i}.jpg", state(mtime=i))
    assert ids(tracker) == {}  # not settled yet
    clock.now += SETTLE - 1
    assert tracker.to_recheck() == []  # quiet period not over
    settle(tracker, clock, 1)
    assert ids(tracker) == {"img0": "count"}


def test_a_file_still_growing_is_never_read(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    tracker.observe("", "a.jpg", state())
    tracker.observe("", "b.jpg", state(size=10, complete=False))
    for size in range(20, 80, 10):  # written in chunks over 30 s: every look sees a new size
        clock.now += SETTLE
        tracker.observe("", "a.jpg", state())
        tracker.observe("", "b.jpg", state(size=size, complete=False))
        assert tracker.ready() == []
    tracker.observe("", "b.jpg", state(size=90, complete=True))
    assert tracker.ready() == []  # just changed: must stay unchanged for the settle time
    settle(tracker, clock)
    assert ids(tracker) == {"a": "count"}


def test_open_writer_blocks_until_closed_or_long_quiet(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state(), writing=True)
    settle(tracker, clock)
    assert tracker.ready() == []  # stable and complete, but a writer still has it open
    tracker.observe("", "a.jpg", state(), writing=False)
    assert ids(tracker) == {"a": "count"}
    tracker2 = make(clock, mode="fixed", stack_size=1)
    tracker2.observe("", "b.jpg", state(), writing=True)  # the close event was lost
    settle(tracker2, clock, TIMEOUT)
    assert ids(tracker2) == {"b": "count"}


def test_truncated_frame_unblocks_its_stack_after_the_timeout(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    tracker.observe("", "a.jpg", state())
    tracker.observe("", "b.jpg", state(complete=False))  # writer died: no end marker, never changes again
    settle(tracker, clock)
    assert tracker.ready() == []
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker) == {"a": "count"}  # stacked now, so that the stack fails with a clear record


def test_next_stack_started_scan_ended_and_timeout(clock):
    tracker = make(clock)  # auto naming, no expected count
    tracker.observe("s", "pos1_f0.jpg", state(mtime=10))
    tracker.observe("s", "pos1_f1.jpg", state(mtime=11))
    settle(tracker, clock)
    assert tracker.ready() == []  # nothing says it is complete yet
    tracker.observe("s", "pos2_f0.jpg", state(mtime=12))
    assert ids(tracker) == {"s/pos1": "next stack started"}
    tracker.set_scan_info("s", ScanInfo(focus_stacks=None, status="completed"))
    settle(tracker, clock)
    assert ids(tracker) == {"s/pos1": "next stack started", "s/pos2": "scan ended"}
    tracker.set_scan_info("s", ScanInfo(focus_stacks=None, status="running"))
    assert "s/pos2" not in ids(tracker)
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker)["s/pos2"] == "timeout"


def test_with_a_known_count_a_short_stack_waits_for_the_timeout_not_the_next_stack(clock):
    tracker = make(clock, stack_size=3)
    tracker.observe("s", "pos1_f0.jpg", state(mtime=10))  # frames 1 and 2 not seen yet (events dropped)
    tracker.observe("s", "pos2_f0.jpg", state(mtime=20))
    settle(tracker, clock)
    assert tracker.ready() == []
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker) == {"s/pos1": "timeout", "s/pos2": "timeout"}


def test_a_finished_scan_copied_in_slowly_waits_for_each_stacks_count(clock):
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status="completed"))  # scan.json came first
    tracker.observe("p/scan01", "scan01_001_fs00.jpg", state(mtime=1))
    settle(tracker, clock)
    assert tracker.ready() == []  # ended scan, but 1 of 3 frames: the rest is still being copied
    tracker.observe("p/scan01", "scan01_001_fs01.jpg", state(mtime=2))
    tracker.observe("p/scan01", "scan01_001_fs02.jpg", state(mtime=3))
    settle(tracker, clock)
    assert ids(tracker) == {"p/scan01/scan01_001": "count"}


def test_openscan3_scan_json_gives_the_count(clock):
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status="running"))
    for k in range(3):
        tracker.observe("p/scan01", f"scan01_007_fs{k:02d}.jpg", state(mtime=k))
    settle(tracker, clock)
    ready = tracker.ready()
    assert [(str(r.stack), r.reason, r.expected, r.frames[-1]) for r in ready] == [
        ("p/scan01/scan01_007", "count", 3, "scan01_007_fs02.jpg")]


def test_files_found_at_start_are_backdated_by_their_age(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "old.jpg", state(age=3600))
    assert tracker.ready() == []  # one look proves nothing
    assert tracker.to_recheck() == [("", "old.jpg")]  # ... but it is due for a second look right away
    tracker.observe("", "old.jpg", state(age=3600))
    assert ids(tracker) == {"old": "count"}


def test_claimed_done_and_changed_inputs(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state(mtime=1))
    settle(tracker, clock)
    [ready] = tracker.ready()
    tracker.claim(ready.stack)
    assert tracker.ready() == [] and tracker.in_flight() == 1 and tracker.pending() == 0
    tracker.release(ready.stack, done=ready.signature)
    assert tracker.ready() == [] and tracker.pending() == 0  # done: never queued twice
    tracker.observe("", "a.jpg", state(mtime=2))  # the frame was replaced
    settle(tracker, clock)
    assert ids(tracker) == {"a": "count"} and tracker.pending() == 1


def test_release_with_backoff(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state())
    settle(tracker, clock)
    stack = StackId("", "a")
    tracker.claim(stack)
    tracker.release(stack, retry_in=30)
    assert tracker.ready() == []
    clock.now += 31
    assert ids(tracker) == {"a": "count"}


def test_deleted_files_leave_their_stack(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    tracker.observe("", "a.jpg", state())
    tracker.observe("", "b.jpg", state())
    tracker.observe("", "b.jpg", None)
    settle(tracker, clock)
    assert tracker.ready() == []  # one frame of two: not complete by count
    assert tracker.known("") == {"a.jpg"}


def test_unplaced_files_are_reported_once(clock):
    tracker = make(clock)
    tracker.observe("", "IMG_0001.jpg", state())
    tracker.observe("", "x_f1.jpg", state())
    first = tracker.take_unplaced()
    assert [(scan, u.name) for scan, u in first] == [("", "IMG_0001.jpg")]
    assert tracker.take_unplaced() == []
    tracker.observe("", "IMG_0001.jpg", None)
    tracker.observe("", "IMG_0001.jpg", state())
    assert len(tracker.take_unplaced()) == 1  # came back: reported again

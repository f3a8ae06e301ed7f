"""Completeness rules of the tracker, with an injected clock: no files, no sleeping."""

from __future__ import annotations

import pytest

from watcher.config import CompletenessSettings, NamingSettings
from watcher.service.naming import ScanInfo, StackId
from watcher.service.tracker import MAX_BACKOFF_SECONDS, FileState, StackTracker

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


def state(size: int = 100, mtime: int = 1, complete: bool = True) -> FileState:
    return FileState(size=size, mtime_ns=mtime, complete=complete)


def settle(tracker: StackTracker, clock: Clock, seconds: float = SETTLE) -> None:
    """Let time pass and look again at every file due for a look (unchanged)."""
    clock.now += seconds
    folder = tracker._scans
    for scan, name in tracker.to_recheck():
        tracker.observe(scan, name, folder[scan].files[name].state)


def ids(tracker: StackTracker) -> dict[str, str]:
    return {str(r.stack): r.reason for r in tracker.ready()}


def ready_list(tracker: StackTracker) -> list:
    return list(tracker.ready())


def test_expected_count_makes_a_settled_stack_ready(clock):
    tracker = make(clock, mode="fixed", stack_size=3)
    for i in range(3):
        tracker.observe("", f"img{i}.jpg", state(mtime=i))
    assert ids(tracker) == {}  # not settled yet
    clock.now += SETTLE - 1
    assert list(tracker.to_recheck()) == []  # quiet period not over
    settle(tracker, clock, 1)
    assert ids(tracker) == {"img0": "count"}


def test_a_file_still_growing_is_never_read(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    tracker.observe("", "a1.jpg", state())
    tracker.observe("", "a2.jpg", state(size=10, complete=False))
    for size in range(20, 80, 10):  # written in chunks over 30 s: every look sees a new size
        clock.now += SETTLE
        tracker.observe("", "a1.jpg", state())
        tracker.observe("", "a2.jpg", state(size=size, complete=False))
        assert ready_list(tracker) == []
    tracker.observe("", "a2.jpg", state(size=90, complete=True))
    assert ready_list(tracker) == []  # just changed: must stay unchanged for the settle time
    settle(tracker, clock)
    assert ids(tracker) == {"a1": "count"}


def test_open_writer_blocks_until_closed_or_long_quiet(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state(), writing=True)
    settle(tracker, clock)
    assert ready_list(tracker) == []  # stable and complete, but a writer still has it open
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
    assert ready_list(tracker) == []
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker) == {"a": "count"}  # stacked now, so that the stack fails with a clear record


@pytest.mark.parametrize("status", ["completed", "cancelled", "error", "interrupted"])
def test_a_frame_without_its_end_marker_goes_at_once_when_the_scan_ended(clock, status):
    """Once scan.json says the scan ended, no writer will finish a truncated frame: its stack, with its count
    reached, is ready at once ("scan ended", not "count") instead of holding for the stack timeout."""
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status="running"))
    tracker.observe("p/scan01", "scan01_000_fs00.jpg", state())
    tracker.observe("p/scan01", "scan01_000_fs01.jpg", state(complete=False))  # the firmware died mid-write
    tracker.observe("p/scan01", "scan01_000_fs02.jpg", state())
    settle(tracker, clock)
    assert ready_list(tracker) == []  # the scan is still going: the frame may yet be finished
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status=status))
    [ready] = ready_list(tracker)
    assert (str(ready.stack), ready.reason, ready.expected) == ("p/scan01/scan01_000", "scan ended", 3)
    assert clock.now - 1000.0 < TIMEOUT


def test_a_truncated_frame_still_settles_first_and_a_short_stack_still_waits_when_the_scan_ended(clock):
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status="completed"))
    tracker.observe("p/scan01", "scan01_000_fs00.jpg", state())
    tracker.observe("p/scan01", "scan01_000_fs01.jpg", state(complete=False))
    assert ready_list(tracker) == []  # not settled: it may still be growing
    tracker.observe("p/scan01", "scan01_001_fs00.jpg", state(complete=False))
    settle(tracker, clock)
    assert ready_list(tracker) == []  # two of three frames: the third may not have been seen yet
    tracker.observe("p/scan01", "scan01_000_fs02.jpg", state())
    settle(tracker, clock)
    assert ids(tracker) == {"p/scan01/scan01_000": "scan ended"}
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker)["p/scan01/scan01_001"] == "timeout"


def test_without_a_count_a_truncated_frame_goes_when_the_scan_ended_not_when_the_next_stack_started(clock):
    tracker = make(clock)  # auto naming, no expected count
    tracker.observe("s", "pos1_f0.jpg", state(mtime=10))
    tracker.observe("s", "pos1_f1.jpg", state(mtime=11, complete=False))
    settle(tracker, clock)
    tracker.observe("s", "pos2_f0.jpg", state(mtime=12))
    settle(tracker, clock)
    assert "s/pos1" not in ids(tracker)  # the rig moved on, but a writer may still finish that frame
    tracker.set_scan_info("s", ScanInfo(focus_stacks=None, status="completed"))
    assert ids(tracker) == {"s/pos1": "scan ended", "s/pos2": "scan ended"}


def test_next_stack_started_scan_ended_and_timeout(clock):
    tracker = make(clock)  # auto naming, no expected count
    tracker.observe("s", "pos1_f0.jpg", state(mtime=10))
    tracker.observe("s", "pos1_f1.jpg", state(mtime=11))
    settle(tracker, clock)
    assert ready_list(tracker) == []  # nothing says it is complete yet
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
    assert ready_list(tracker) == []
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker) == {"s/pos1": "timeout", "s/pos2": "timeout"}


def test_a_finished_scan_copied_in_slowly_waits_for_each_stacks_count(clock):
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=3, status="completed"))  # scan.json came first
    tracker.observe("p/scan01", "scan01_001_fs00.jpg", state(mtime=1))
    settle(tracker, clock)
    assert ready_list(tracker) == []  # ended scan, but 1 of 3 frames: the rest is still being copied
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
    ready = list(tracker.ready())
    assert [(str(r.stack), r.reason, r.expected, r.frames[-1]) for r in ready] == [
        ("p/scan01/scan01_007", "count", 3, "scan01_007_fs02.jpg")]


def test_claimed_done_and_changed_inputs(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state(mtime=1))
    settle(tracker, clock)
    [ready] = list(tracker.ready())
    tracker.claim(ready.stack)
    assert ready_list(tracker) == [] and tracker.in_flight() == 1 and tracker.pending() == 0
    tracker.release(ready.stack, done=ready.signature)
    assert ready_list(tracker) == [] and tracker.pending() == 0  # done: never queued twice
    tracker.observe("", "a.jpg", state(mtime=2))  # the frame was replaced
    settle(tracker, clock)
    assert ids(tracker) == {"a": "count"} and tracker.pending() == 1


def test_release_with_backoff(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state())
    settle(tracker, clock)
    stack = StackId("", "a")
    tracker.claim(stack)
    assert tracker.release(stack, retry=True) == SETTLE
    assert ready_list(tracker) == []
    clock.now += SETTLE
    assert ids(tracker) == {"a": "count"}


def test_deleted_files_leave_their_stack(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    tracker.observe("", "a.jpg", state())
    tracker.observe("", "b.jpg", state())
    tracker.observe("", "b.jpg", None)
    settle(tracker, clock)
    assert ready_list(tracker) == []  # one frame of two: not complete by count
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


def test_files_found_together_at_start_wait_for_their_count_or_the_timeout(clock):
    """One walk finds everything at once, so it says nothing about what arrived first: no stack is 'moved on'
    by another found in the same walk, whatever the files' mtimes (copies keep old ones)."""
    tracker = make(clock)
    for k in range(2):
        tracker.observe("s", f"pos1_f{k}.jpg", state(mtime=10**18 + k))  # newest mtimes: still being copied?
        tracker.observe("s", f"pos2_f{k}.jpg", state(mtime=k))
    settle(tracker, clock)
    assert ids(tracker) == {}
    tracker.observe("s", "pos3_f0.jpg", state(mtime=5))  # a later arrival: the others were complete
    assert ids(tracker) == {"s/pos1": "next stack started", "s/pos2": "next stack started"}


def test_quiet_periods_and_timeouts_count_from_the_first_look(clock):
    """Six frames copied in one every 2 s (cp -p: old mtimes): nothing is ready until the timeout after the
    last one, and then with all six."""
    tracker = make(clock)
    for k in range(6):
        tracker.observe("s", f"pos1_f{k}.jpg", state(mtime=k))
        settle(tracker, clock, 2.0)
        assert ids(tracker) == {}
    settle(tracker, clock, TIMEOUT - 2.0 - 0.1)
    assert ids(tracker) == {}
    settle(tracker, clock, 0.1)
    [stack] = ready_list(tracker)
    assert (stack.reason, len(stack.frames)) == ("timeout", 6)


@pytest.mark.parametrize("status", ["running", "paused", "pending"])
def test_a_scan_still_going_with_a_known_count_is_never_cut_short_by_the_timeout(clock, status):
    """OpenScan3 paused with 3 of 5 frames of a position: the scan may resume hours later."""
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=5, status=status))
    for k in range(3):
        tracker.observe("p/scan01", f"scan01_002_fs{k:02d}.jpg", state(mtime=k))
    settle(tracker, clock, 10 * TIMEOUT)
    assert ready_list(tracker) == []
    for k in (3, 4):  # resumed
        tracker.observe("p/scan01", f"scan01_002_fs{k:02d}.jpg", state(mtime=k))
    settle(tracker, clock)
    [stack] = ready_list(tracker)
    assert (stack.reason, len(stack.frames), stack.expected) == ("count", 5, 5)


def test_a_short_stack_of_an_ended_scan_goes_after_the_timeout(clock):
    tracker = make(clock)
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=5, status="paused"))
    tracker.observe("p/scan01", "scan01_002_fs00.jpg", state())
    settle(tracker, clock, TIMEOUT)
    assert ready_list(tracker) == []
    tracker.set_scan_info("p/scan01", ScanInfo(focus_stacks=5, status="cancelled"))
    assert ids(tracker) == {"p/scan01/scan01_002": "timeout"}


def test_fixed_naming_waits_for_a_gap_in_the_names_to_fill(clock):
    """a1 a2 a4 settled, then a3: the stack is a1 a2 a3 (natural order), never a1 a2 a4."""
    tracker = make(clock, mode="fixed", stack_size=3)
    for name in ("a1.jpg", "a2.jpg", "a4.jpg"):
        tracker.observe("", name, state())
    settle(tracker, clock, 2 * SETTLE)
    assert ready_list(tracker) == []  # a gap before a4: a name may still arrive in between
    tracker.observe("", "a3.jpg", state())
    settle(tracker, clock)
    [stack] = ready_list(tracker)
    assert stack.frames == ("a1.jpg", "a2.jpg", "a3.jpg")


def test_fixed_naming_with_a_gap_that_never_fills_goes_after_the_timeout(clock):
    tracker = make(clock, mode="fixed", stack_size=2)
    for name in ("IMG_0001.jpg", "IMG_0002.jpg", "IMG_0004.jpg", "IMG_0005.jpg"):  # IMG_0003 deleted on camera
        tracker.observe("", name, state())
    settle(tracker, clock)
    assert ids(tracker) == {"IMG_0001": "count"}  # before the gap: settled
    settle(tracker, clock, TIMEOUT)
    assert ids(tracker) == {"IMG_0001": "count", "IMG_0004": "count"}


def test_a_regex_scan_group_names_the_stack_but_frames_are_read_where_they_were_found(clock):
    tracker = make(clock, mode="regex", pattern=r"(?P<scan>[a-z]+)_(?P<stack>\d+)_(?P<frame>\d+)", stack_size=2)
    for k in range(2):
        tracker.observe("proj", f"owl_7_{k}.jpg", state())
    settle(tracker, clock)
    [stack] = ready_list(tracker)
    assert (str(stack.stack), stack.namespace) == ("proj/owl/7", "proj")


def test_retries_back_off_up_to_a_bound(clock):
    tracker = make(clock, mode="fixed", stack_size=1)
    tracker.observe("", "a.jpg", state())
    settle(tracker, clock)
    delays = []
    for _ in range(10):
        [stack] = ready_list(tracker)
        tracker.claim(stack.stack)
        delays.append(tracker.release(stack.stack, retry=True))
        clock.now += delays[-1] - 0.01
        assert ready_list(tracker) == []
        clock.now += 0.01
    assert delays[:4] == [SETTLE, 2 * SETTLE, 4 * SETTLE, 8 * SETTLE]
    assert max(delays) == MAX_BACKOFF_SECONDS
    [stack] = ready_list(tracker)
    tracker.claim(stack.stack)
    tracker.release(stack.stack, done=stack.signature)
    tracker.observe("", "a.jpg", state(mtime=2))
    settle(tracker, clock)
    [stack] = ready_list(tracker)
    tracker.claim(stack.stack)
    assert tracker.release(stack.stack, retry=True) == SETTLE  # done resets the backoff


def test_everything_about_a_scan_is_forgotten_when_its_files_go(clock):
    """Memory follows what is in the hot folder, not the nights the daemon has run."""
    tracker = make(clock)
    for night in range(3):
        scan = f"p/scan{night:02d}"
        tracker.set_scan_info(scan, ScanInfo(focus_stacks=2, status="running"))
        for position in range(20):
            for k in range(2):
                tracker.observe(scan, f"scan{night:02d}_{position:03d}_fs{k:02d}.jpg", state())
        tracker.observe(scan, "IMG_1.jpg", state())
        tracker.take_unplaced()
        settle(tracker, clock)
        for stack in ready_list(tracker):
            tracker.claim(stack.stack)
            tracker.release(stack.stack, done=stack.signature)
        assert tracker.pending() == 0 and all(tracker.is_done(stack) for stack, _sig in tracker.stacks())
        assert len(tracker._done) == 20
        stacks = sorted(stack for stack, _sig in tracker.stacks())
        for name in tracker.known(scan):  # the user clears the scan away
            tracker.observe(scan, name, None)
        tracker.set_scan_info(scan, None)
        assert list(tracker.stacks()) == [] and tracker.scans() == [] and tracker.unsettled() == 0
        assert sorted(tracker.take_dropped()) == stacks  # what the daemon keeps of them can go too
    tracker.take_unplaced()
    sizes = [len(getattr(tracker, attr)) for attr in ("_scans", "_where", "_open", "_done", "_backoff", "_reported",
                                                       "_unsettled", "_stale", "_claimed", "_regrouped", "_dropped")]
    assert sizes == [0] * 11


def test_files_of_one_walk_arrive_together_however_many_passes_it_takes(clock):
    """A walk spread over passes finds pos1 in one pass and pos2 in the next: pos2 was not 'the next stack'."""
    tracker = make(clock)
    walk_began = clock.now
    for k in range(2):
        tracker.observe("s", f"pos1_f{k}.jpg", state(), found_together=walk_began)
    settle(tracker, clock)
    tracker.observe("s", "pos2_f0.jpg", state(), found_together=walk_began)  # later in the same walk
    settle(tracker, clock)
    assert ids(tracker) == {}
    tracker.observe("s", "pos3_f0.jpg", state())  # a real arrival
    assert set(ids(tracker)) == {"s/pos1", "s/pos2"}

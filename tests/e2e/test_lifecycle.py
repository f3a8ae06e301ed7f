"""Starting again: ``once`` and ``status``, and restarts that must (not) redo work."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import (
    count_by_stack,
    openscan3_name,
    write_frame,
    write_openscan3_stacks,
)


def status(rig) -> dict:
    result = rig.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_once_stacks_what_is_complete_and_status_counts_done_failed_pending(rig, frames):
    """``focus-watcher once`` on a folder written a moment ago: waits for the frames to settle, stacks the four
    complete stacks and the corrupt one (failed), leaves the incomplete one, and exits 1 because work failed (the
    README's promise); a second ``once`` with nothing new to do exits 0. ``status --json`` counts them before and
    after, and lists the failure."""
    complete = write_openscan3_stacks(rig.hot, "cat", 1, {p: frames.stack(3, offset=p) for p in (4, 1, 3, 2)})
    corrupt_frames = frames.stack(3, offset=5)
    corrupt_frames[1] = b"this is not a JPEG at all \xff\xd9"  # ends like one: usable at once, fails to decode
    corrupt = write_openscan3_stacks(rig.hot, "cat", 2, {7: corrupt_frames})
    waiting = write_openscan3_stacks(rig.hot, "cat", 3, {9: frames.stack(2)}, focus_stacks=3)  # 2 of 3 frames
    write_frame(rig.hot / "IMG_0001.jpg", frames.small[0])

    before = status(rig)
    assert (before["done"], before["failed"], before["pending"], before["unplaced"]) == (0, 0, 6, 1), before

    once = rig.start(command="once")
    assert once.wait_exit(30) == 1, once.tail()
    assert count_by_stack(once.events(), "stack.done") == dict.fromkeys(complete, 1)
    assert count_by_stack(once.events(), "stack.failed") == {corrupt[0]: 1}
    assert once.events("daemon.stopped")[0]["pending"] == 1
    records = rig.records()
    assert set(records) == {*complete, *corrupt}
    assert records[corrupt[0]]["error"].startswith(openscan3_name(2, 7, 1) + ": ")

    after = status(rig)
    assert (after["done"], after["failed"], after["pending"], after["unplaced"]) == (4, 1, 1, 1), after
    assert [error[1] for error in after["last_errors"]] == corrupt
    assert waiting[0] not in records

    text = rig.cli("status")
    assert text.returncode == 0 and "done 4  failed 1  pending 1" in text.stdout, text.stdout

    again = rig.start(command="once")
    assert again.wait_exit(30) == 0, again.tail()
    assert again.events("stack.started") == []


def test_once_on_finished_stacks_of_unknown_size_waits_out_their_timeout_then_stacks_them_all(rig, frames):
    """A folder of finished stacks with no frame count anywhere (no scan.json, no ``stack_size``): files found at
    start are new to ``once`` too, so only the stack timeout completes them. ``once`` waits it out (and says so)
    instead of leaving them pending, then stacks every one; with one worker, the scan's stacks after the first
    reuse the alignment the first one measured, though all were queued together."""
    for position in range(3):
        for index, data in enumerate(frames.small):  # the same focus steps at every position, as on a rig
            write_frame(rig.hot / "owl" / f"scan01_{position:03d}_fs{index:02d}.jpg", data)
    timeout = 3.0
    config = rig.config(completeness={"settle_seconds": 0.5, "stack_timeout_seconds": timeout},
                        workers={"count": 1, "stop_grace_seconds": 20.0})
    started = time.monotonic()
    once = rig.start(config, command="once")
    assert once.wait_exit(60) == 0, once.tail()
    assert time.monotonic() - started >= timeout
    [told] = once.events("once.awaiting_timeout")
    assert told["stacks"] == 3 and told["first"] == "owl/scan01_000", told
    records = rig.records()
    assert sorted(records) == [f"owl/scan01_{p:03d}" for p in range(3)]
    assert {r["status"] for r in records.values()} == {"ok"}
    assert {len(r["frames"]) for r in records.values()} == {len(frames.small)}
    assert {r["complete_because"] for r in records.values()} == {"timeout"}
    assert {f["placement"] for f in records["owl/scan01_000"]["frames"]} == {"reference", "estimated"}
    for later in ("owl/scan01_001", "owl/scan01_002"):
        assert {f["placement"] for f in records[later]["frames"]} == {"reference", "calibrated"}, later


def test_a_restart_redoes_nothing_but_stacks_again_a_stack_whose_frame_was_replaced(rig, frames):
    """Everything done, then: one frame replaced while the daemon was down (other content and size) -> the
    restart stacks that one stack and skips the others; one frame rewritten while it runs (same size, new
    mtime) -> that stack is stacked again; nothing else is."""
    config = rig.config(logging={"level": "debug"})  # debug: the restart logs every skipped stack
    daemon = rig.start(config)
    stacks = write_openscan3_stacks(rig.hot, "dog", 1, {p: frames.stack(3, offset=p) for p in (1, 2, 3, 4)})
    daemon.wait_for(lambda: rig.ok_records(stacks), 20, "first run")
    assert daemon.terminate() == 0
    first = rig.records()

    folder = rig.hot / "dog" / "scan01"
    replaced = folder / openscan3_name(1, 2, 1)
    write_frame(replaced, frames.ring[0])
    assert len(frames.ring[0]) != first[stacks[1]]["inputs"][1]["size"]

    restarted = rig.start(config)
    restarted.wait_for(lambda: rig.records()[stacks[1]]["inputs"][1]["size"] == len(frames.ring[0]), 20,
                       "the stack with the replaced frame stacked again")
    restarted.wait_event("stack.skipped", count=3)
    assert {e["stack"] for e in restarted.events("stack.skipped")} == {stacks[0], stacks[2], stacks[3]}
    assert [e["stack"] for e in restarted.events("stack.started")] == [stacks[1]]
    second = rig.records()
    for stack in (stacks[0], stacks[2], stacks[3]):
        assert second[stack] == first[stack]
    assert second[stacks[1]]["status"] == "ok"
    assert second[stacks[1]]["inputs"][1]["mtime_ns"] == replaced.stat().st_mtime_ns

    rewritten = folder / openscan3_name(1, 4, 0)
    old = rewritten.stat()
    time.sleep(0.01)
    write_frame(rewritten, rewritten.read_bytes())  # same bytes, same size: only the mtime changes
    assert rewritten.stat().st_mtime_ns != old.st_mtime_ns
    restarted.wait_event("stack.done", stack=stacks[3])
    assert rig.records()[stacks[3]]["inputs"][0] == {"name": rewritten.name, "size": old.st_size,
                                                     "mtime_ns": rewritten.stat().st_mtime_ns}
    time.sleep(0.7)  # more than the settle time and a loop pass: nothing else is stacked again
    assert count_by_stack(restarted.events(), "stack.started") == {stacks[1]: 1, stacks[3]: 1}
    assert restarted.terminate() == 0

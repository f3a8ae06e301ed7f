"""Things going wrong: the daemon killed, a worker killed, corrupt frames, a stop with stacks in flight."""

from __future__ import annotations

import os
import random
import signal
import socket
import time

from tests.e2e.conftest import (
    cmdline,
    count_by_stack,
    living_in_group,
    paused,
    process_gone,
    the_worker,
    wait_until,
    write_openscan3_stacks,
)
from watcher.atomic import temp_name_for


def write_big(rig, frames) -> str:
    """One stack of 7 frames of 800x600 (~1.5 s of stacking here): long enough to be caught running (and held
    running with :func:`~tests.e2e.conftest.paused` where the test needs it to stay so)."""
    return write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})[0]


def write_small(rig, frames, positions) -> list[str]:
    """Stacks of 3 frames of 320x240 (a fraction of a second each) in ``small/scan01``."""
    return write_openscan3_stacks(rig.hot, "small", 1, {p: frames.stack(3, offset=p) for p in positions})


def test_kill_9_mid_run_then_restart_leaves_whole_results_and_finishes_the_rest(rig, frames):
    """``kill -9`` of the daemon while a long stack runs and others are queued, then an immediate restart: no
    visible result is ever partial, and the restart stacks exactly the stacks that had no record, once each,
    leaving one ok record per stack and no temp file."""
    daemon = rig.start()
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big)
    with paused(the_worker(daemon)):  # still running at the kill, however fast the machine
        small = write_small(rig, frames, range(1, 9))
        daemon.wait_event("stack.done", count=3)
        daemon.kill9()
    started_before = {e["stack"] for e in daemon.events("stack.started")}
    done_before = {e["stack"] for e in daemon.events("stack.done")}
    assert big in started_before - done_before, "the big stack should have been running at the kill"
    assert set(small) - started_before, "some small stacks should have been waiting at the kill"
    rig.assert_results_sound()
    recorded = set(rig.records())
    assert done_before <= recorded
    assert all(r["status"] == "ok" for r in rig.records().values())
    # What a kill in the middle of an atomic write leaves: a hidden temp file beside the final name.
    stale = temp_name_for(rig.results / "small" / "scan01" / "scan01_008.jpg")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(frames.small[0][:1000])

    restarted = rig.start()
    assert restarted.events("daemon.start")[0]["stale_temp_files_removed"] >= 1
    assert not stale.exists()
    everything = {big, *small}
    restarted.wait_for(lambda: rig.ok_records(everything), 30, "every stack ok after the restart")
    assert restarted.terminate() == 0
    records = rig.records()
    assert set(records) == everything
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in records.values())
    # Exactly the stacks without a record were stacked again, each once.
    assert count_by_stack(restarted.events(), "stack.started") == dict.fromkeys(everything - recorded, 1)
    # Workers of the killed daemon end themselves within moments (see the next test); let them before the last check.
    wait_until(lambda: not living_in_group(daemon.pid), 30, "the killed daemon's orphaned workers to end")
    assert rig.temp_files() == []
    assert rig.assert_results_sound() == len(everything)


def test_kill_9_of_the_daemon_takes_its_running_workers_with_it(rig, frames):
    """worker.py promises: 'a kill -9'd daemon leaves no orphan stacking on'. An orphan keeps CPU and memory,
    and writes its result image into the results folder after the daemon is gone (possibly over the result of
    the restarted daemon, from older inputs)."""
    daemon = rig.start()
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big)
    worker = the_worker(daemon)
    daemon.kill9()
    wait_until(lambda: process_gone(worker), 30, f"worker {worker} to end",
               lambda: f"worker cmdline: {cmdline(worker)!r}")
    # An orphan would have lived until its stack was done, and written its image into the results folder; a worker
    # that ends with its daemon never gets there, however fast or slow the machine.
    image = rig.results / "big" / "scan01" / "scan01_001.jpg"
    assert not image.exists()


def test_a_killed_worker_is_retried_and_its_stack_then_succeeds(rig, frames):
    """SIGKILL to the worker of a running stack (as the OOM killer would): ``stack.retry``, then a second
    attempt that succeeds (record ``attempts: 2``); stacks arriving meanwhile are stacked normally."""
    daemon = rig.start()
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big, attempt=1)
    os.kill(the_worker(daemon), signal.SIGKILL)
    assert big not in rig.records()
    small = write_small(rig, frames, [3, 1, 2])
    retry = daemon.wait_event("stack.retry", stack=big)[0]
    assert retry["attempt"] == 1 and "worker killed by SIGKILL" in retry["error"], retry
    daemon.wait_event("stack.started", stack=big, attempt=2)
    daemon.wait_done([big, *small], 30, "the retried stack and the others")
    records = rig.records()
    assert records[big]["attempts"] == 2 and records[big]["error"] is None, records[big]
    assert all(records[s]["attempts"] == 1 for s in small)
    assert count_by_stack(daemon.events(), "stack.done") == dict.fromkeys([big, *small], 1)
    assert daemon.events("stack.failed") == []
    assert rig.temp_files() == []
    assert daemon.terminate() == 0


def test_a_worker_killed_on_every_attempt_fails_its_stack_with_a_record_saying_so(rig, frames):
    """With ``workers.retries = 1``, a stack whose worker is killed twice gets a ``failed`` record naming the
    kill and the attempts; the daemon carries on."""
    daemon = rig.start(rig.config(workers={"retries": 1}))
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big, attempt=1)
    os.kill(the_worker(daemon), signal.SIGKILL)
    daemon.wait_event("stack.started", stack=big, attempt=2)
    second = the_worker(daemon)
    os.kill(second, signal.SIGKILL)
    failed = daemon.wait_event("stack.failed", stack=big)[0]
    record = rig.records()[big]
    assert record["status"] == "failed" and record["attempts"] == 2 and record["output"] is None, record
    assert "worker killed by SIGKILL" in record["error"] and "2 attempts" in record["error"], record
    assert failed["error"] == record["error"]
    # The worker it failed on: the one killed last.
    assert record["worker"] == {"host": socket.gethostname(), "name": f"local pid {second}"}, record
    assert failed["worker"] == f"local pid {second}"
    assert len(daemon.events("stack.retry", stack=big)) == 1
    small = write_small(rig, frames, [1])
    daemon.wait_for(lambda: rig.ok_records(small), 15, "a later stack ok")
    assert daemon.terminate() == 0


def test_corrupt_frames_fail_only_their_own_stacks_and_the_daemon_carries_on(rig, frames):
    """A truncated JPEG, random bytes, and random bytes that end like a JPEG: each fails its own stack (after
    the stack timeout for the two without an end marker) with a ``failed`` record naming the file; their
    inputs stay where they are; the good stacks are ok (and, with ``after_success = "delete"``, their inputs
    deleted); the daemon keeps running and stops with exit status 0."""
    daemon = rig.start(rig.config(completeness={"stack_timeout_seconds": 2.0},
                                  results={"after_success": "delete"}))
    rng = random.Random(5)
    garbage = bytes(rng.getrandbits(8) for _ in range(5000)).rstrip(b"\xd9")
    bad = {
        3: (1, frames.small[1][: len(frames.small[1]) // 2], "truncated"),  # position: (focus, bytes, reason)
        4: (0, garbage, "not a JPEG"),
        5: (2, garbage + b"\xff\xd9", "not a JPEG"),
    }
    stacks = {}
    for position in range(1, 6):
        data = frames.stack(3, offset=position)
        if position in bad:
            data[bad[position][0]] = bad[position][1]
        stacks[position] = data
    ids = dict(zip(stacks, write_openscan3_stacks(rig.hot, "lab", 1, stacks)))
    folder = rig.hot / "lab" / "scan01"

    daemon.wait_for(lambda: set(rig.records()) == set(ids.values()), 20, "a record for every stack")
    time.sleep(0.5)  # nothing is retried or re-stacked afterwards
    records = rig.records()
    for position, stack in ids.items():
        record = records[stack]
        names = [f"scan01_{position:03d}_fs{k:02d}.jpg" for k in range(3)]
        if position in bad:
            focus, data, reason = bad[position]
            assert record["status"] == "failed" and record["output"] is None, record
            assert record["error"].startswith(names[focus] + ": ") and reason in record["error"], record
            assert record["worker"]["name"].startswith("local pid "), record  # the worker that found it bad
            assert [(folder / n).read_bytes() for n in names] == stacks[position], "inputs of a failed stack"
        else:
            assert record["status"] == "ok", record
            assert not any((folder / n).exists() for n in names), "after_success = delete"
    assert count_by_stack(daemon.events(), "stack.started") == dict.fromkeys(ids.values(), 1)
    assert len(daemon.events("stack.failed")) == 3
    assert rig.assert_results_sound() == 2
    assert daemon.alive
    assert daemon.terminate() == 0
    stopped = daemon.events("daemon.stopped")[0]
    assert (stopped["done"], stopped["failed"]) == (2, 3)


def test_sigterm_with_a_stack_past_the_grace_period_exits_0_and_leaves_it_for_the_next_start(rig, frames):
    """SIGTERM while a stack runs longer than ``stop_grace_seconds``: the daemon cancels it at the end of the
    grace period, exits 0 (logging ``daemon.stopped``), writes no record for it; the next start stacks it."""
    grace = 0.2
    config = rig.config(workers={"stop_grace_seconds": grace})
    daemon = rig.start(config)
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big)
    worker = the_worker(daemon)
    with paused(worker):  # it cannot finish within the grace period, however fast the machine
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(grace + 30) == 0
    assert daemon.events("daemon.stopping")[0]["running"] == 1
    stopped = daemon.events("daemon.stopped")
    assert len(stopped) == 1 and stopped[0]["done"] == 0 and stopped[0]["pending"] == 1, stopped
    assert big not in rig.records()
    assert process_gone(worker)

    restarted = rig.start(config)
    restarted.wait_for(lambda: rig.ok_records([big]), 20, "the cancelled stack ok after the restart")
    assert rig.records()[big]["attempts"] == 1
    assert restarted.terminate() == 0
    assert rig.temp_files() == []


def test_sigterm_lets_a_running_stack_finish_within_the_grace_period(rig, frames):
    """SIGTERM while a stack runs and two wait in the queue (one worker): the running one finishes within the
    grace period (ok record), exit status 0; the queued ones get no record and are stacked at the next start
    (and the finished one is not stacked again)."""
    grace = 20.0
    config = rig.config(workers={"count": 1, "stop_grace_seconds": grace})
    daemon = rig.start(config)
    big = write_big(rig, frames)
    daemon.wait_event("stack.started", stack=big)
    with paused(the_worker(daemon)):  # still running when the others are queued and at the signal, however loaded
        small = write_small(rig, frames, [1, 2])
        for stack in small:
            daemon.wait_event("stack.queued", stack=stack)
        assert big not in rig.records()
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait_event("daemon.stopping")
    assert daemon.wait_exit(grace + 30) == 0
    stopping = daemon.events("daemon.stopping")[0]
    assert (stopping["running"], stopping["queued"]) == (1, 2), stopping
    stopped = daemon.events("daemon.stopped")[0]
    assert (stopped["done"], stopped["pending"]) == (1, 2), stopped
    assert set(rig.records()) == {big} and rig.records()[big]["status"] == "ok"
    assert [e["stack"] for e in daemon.events("stack.started")] == [big]

    restarted = rig.start(config)
    restarted.wait_for(lambda: rig.ok_records(small), 20, "the queued stacks ok after the restart")
    assert restarted.terminate() == 0
    assert sorted(e["stack"] for e in restarted.events("stack.started")) == sorted(small)
    assert rig.temp_files() == []

"""The faults a real user causes: old mtimes, a second daemon, unreadable frames, frames replaced mid-stack,
malformed records, deleted results, paused scans, zips that lie, Ctrl-C in a terminal."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    count_by_stack,
    openscan3_name,
    openscan3_stack,
    paused,
    the_worker,
    write_frame,
    write_openscan3_stacks,
    write_scan_json,
)
from watcher.atomic import temp_name_for


def daemon_peak_rss_mb(daemon) -> float:
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_frames_copied_in_with_their_old_mtimes_are_stacked_once_with_all_frames(rig, frames, tmp_path):
    """``cp -p`` of an old stack, one frame every 0.6 s (longer than the settle time): quiet periods and the
    stack timeout count from when the daemon first saw each frame, not from its three-hour-old mtime, so the
    stack is fused once, from all its frames -- not from 1, then 2, ..."""
    daemon = rig.start(rig.config(completeness={"stack_timeout_seconds": 2.0}))
    old = tmp_path / "card"
    old.mkdir()
    three_hours_ago = time.time() - 3 * 3600
    for k in range(4):
        write_frame(old / f"bug_f{k}.jpg", frames.small[k])
        os.utime(old / f"bug_f{k}.jpg", (three_hours_ago, three_hours_ago + k))
    for k in range(4):
        shutil.copy2(old / f"bug_f{k}.jpg", rig.hot / f"bug_f{k}.jpg")
        time.sleep(0.6)
    daemon.wait_for(lambda: rig.ok_records(["bug"]), 15, "the stack")
    time.sleep(0.5)
    record = rig.records()["bug"]
    assert [i["name"] for i in record["inputs"]] == [f"bug_f{k}.jpg" for k in range(4)]
    assert record["complete_because"] == "timeout"
    assert [e["frames"] for e in daemon.events("stack.ready")] == [4]
    assert daemon.terminate() == 0


def test_one_daemon_per_results_folder(rig, frames):
    """A second ``run`` and a ``once`` beside a running daemon exit 2 naming its pid, without touching the
    results folder (its temp files mid-write survive); status, config and doctor still work; after a kill -9
    the lock is gone with the process."""
    first = rig.start()
    stale = temp_name_for(rig.results / "scan.jpg")
    stale.write_bytes(b"the first daemon is writing this")
    for command in ("run", "once"):
        second = rig.start(command=command, wait_ready=False)
        assert second.wait_exit(20) == 2, second.tail()
        message = second.stderr_path.read_text()
        assert f"is in use by focus-watcher (pid {first.pid})" in message, message
        assert second.events() == []
    assert stale.exists()
    for command in ("status", "config", "doctor"):
        done = rig.cli(command)
        assert done.returncode in (0, 1) and "in use" not in done.stderr, (command, done.stderr)
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {1: frames.stack(3)})
    first.wait_for(lambda: rig.ok_records(stacks), 15, "the first daemon still stacking")
    first.kill9()
    rig.start().terminate()


def test_a_regex_scan_group_is_stacked_once_from_where_its_frames_are(rig, frames):
    """``naming.pattern`` with a ``scan`` group names the stack ``<folder>/<scan>/<stack>``, but its frames are
    read from the folder they are in -- not from a folder named after the group, which would fail, and be
    picked up again on every pass, forking a worker each time."""
    config = rig.config(naming={"mode": "regex", "pattern": r"(?P<scan>[a-z]+)_(?P<stack>\d+)_(?P<frame>\d+)",
                                "stack_size": 3})
    daemon = rig.start(config)
    for k in range(3):
        write_frame(rig.hot / "proj" / f"owl_7_{k}.jpg", frames.small[k])
    daemon.wait_for(lambda: rig.ok_records(["proj/owl/7"]), 15, "the stack")
    time.sleep(1.0)  # several passes: it must not be started again
    assert count_by_stack(daemon.events(), "stack.started") == {"proj/owl/7": 1}
    assert (rig.results / "proj" / "owl" / "7.jpg").is_file()
    assert daemon.terminate() == 0


def zip_bomb_member(size: int) -> bytes:
    """A deflated zip member body: a real JPEG's start, then ``size`` zero bytes (compresses ~1000:1)."""
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    parts = [packer.compress(b"\xff\xd8")] + [packer.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def test_a_zip_member_that_inflates_to_512_mib_fails_its_stack_and_is_never_inflated_in_the_daemon(rig, frames):
    """OpenScan2 zip with two good stacks and one whose first frame claims 512 MiB (a 0.5 MB member): the daemon
    sizes stacks from headers only, so it never holds the member; the worker refuses it from its claimed sizes;
    the other stacks are stacked."""
    daemon = rig.start()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for position in (1, 2, 3):
            for focus in range(3):
                name = f"owl_1_{position}-{focus}.jpg"
                if position == 2 and focus == 0:
                    with archive.open(name, "w", force_zip64=True) as member:
                        member.write(frames.small[0][:-2])
                        zeros = bytes(1 << 20)
                        for _ in range(512):
                            member.write(zeros)
                else:
                    archive.writestr(name, frames.small[(position + focus) % 7])
    zip_name = "2024-03-05_10.11.12-owl.zip"
    write_frame(rig.hot / zip_name, buffer.getvalue())
    stacks = [f"{zip_name}/owl_1_{p}" for p in (1, 2, 3)]
    daemon.wait_for(lambda: set(stacks) <= set(rig.records()), 30, "a record for each stack")
    records = rig.records()
    assert records[stacks[0]]["status"] == records[stacks[2]]["status"] == "ok"
    assert records[stacks[1]]["status"] == "failed"
    assert "owl_1_2-0.jpg: the zip says it inflates" in records[stacks[1]]["error"], records[stacks[1]]
    assert daemon_peak_rss_mb(daemon) < 300  # it held 512 MiB and more when it inflated members to read a header
    assert daemon.terminate() == 0


def test_a_1000_member_zip_does_not_stall_the_main_loop(rig, frames):
    """A scan zip of 1000 members: its directory is read once per change, not once per member and pass (which
    held the loop for seconds per pass: past the watchdog). The daemon measures its own passes: the main thread's
    CPU in its busiest one, whatever else the machine is doing."""
    config = rig.config(naming={"stack_size": 4})  # 3 frames per position: waits, nothing is stacked
    daemon = rig.start(config)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(1000):
            archive.writestr(f"owl_1_{index // 3}-{index % 3}.jpg", frames.small[index % 7][:2000] + b"\xff\xd9")
    write_frame(rig.hot / "2024-03-05_10.11.12-owl.zip", buffer.getvalue())
    time.sleep(3.0)  # the members settle (0.5 s) and are confirmed, pass after pass
    assert daemon.alive
    assert daemon.terminate() == 0
    [stopped] = daemon.events("daemon.stopped")
    assert stopped["passes"] > 0 and stopped["longest_pass_cpu_ms"] < 250, stopped


def test_a_frame_replaced_while_its_stack_is_fused_is_not_archived_but_stacked_again(rig, frames):
    """``after_success = "archive"``: frame 3 is replaced by other content while the stack runs. Whichever way
    the run meets it -- the old frame read and stacked (its result then describes the old frame, which is not
    what is on disk: ``inputs.changed``), or the new frame found changed when the engine reads it a second time
    (``inputs.unavailable``) -- the new frame is never archived with a result that did not stack it: the stack is
    stacked again with the new frame, and only then are all its inputs archived -- each archived file is one
    that a record stacked."""
    archive = rig.root / "archive"
    daemon = rig.start(rig.config(results={"after_success": "archive", "archive_folder": str(archive)}))
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})
    daemon.wait_event("stack.started", stack=stack)
    replaced = rig.hot / "big" / "scan01" / openscan3_name(1, 1, 3)
    new = frames.medium[5]
    with paused(the_worker(daemon)):  # replaced while the stack runs, however fast the machine
        write_frame(replaced, new)
    daemon.wait_for(lambda: not list((rig.hot / "big" / "scan01").glob("*.jpg")), 40, "inputs archived")
    assert daemon.events("inputs.changed", stack=stack) or daemon.events("inputs.unavailable", stack=stack)
    record = rig.records()[stack]
    archived = {p.name: p.stat() for p in (archive / "big" / "scan01").iterdir()}
    assert {i["name"]: (i["size"], i["mtime_ns"]) for i in record["inputs"]} == {
        name: (info.st_size, info.st_mtime_ns) for name, info in archived.items()}
    assert (archive / "big" / "scan01" / replaced.name).read_bytes() == new
    assert daemon.terminate() == 0


def test_an_unreadable_frame_waits_and_is_stacked_once_readable_never_failed(rig, frames):
    """EACCES while a worker reads (a permission fixed a minute later, a share that blips) is an error of the
    environment: the stack waits and is tried again with a backoff -- no failed record, which nothing would
    ever redo (chmod changes neither size nor mtime)."""
    daemon = rig.start(unprivileged=True)
    [stack] = write_openscan3_stacks(rig.hot, "lab", 1, {1: frames.medium})
    folder = rig.hot / "lab" / "scan01"
    ends = [folder / openscan3_name(1, 1, k) for k in (0, 6)]  # read last, whatever the reference
    daemon.wait_event("stack.started", stack=stack)
    with paused(the_worker(daemon)):  # before the worker has read them a second time, however fast it is
        for path in ends:
            path.chmod(0)
    unavailable = daemon.wait_event("inputs.unavailable", stack=stack, timeout=20)[0]
    assert "Permission denied" in unavailable["error"] and unavailable["retry_in"] >= 1.0, unavailable
    assert stack not in rig.records()
    for path in ends:
        path.chmod(0o644)
    daemon.wait_for(lambda: rig.ok_records([stack]), 30, "the stack once readable")
    assert daemon.events("stack.failed") == []
    assert daemon.terminate() == 0


def test_malformed_records_count_as_absent_and_never_crash_the_loop(rig, frames):
    """Records that do not parse as ours -- a JSON list, one without ``inputs``, inputs of the wrong type,
    not JSON -- are logged and count as absent: the stacks are stacked and their records replaced."""
    bad = {1: "[]", 2: '{"stack": "x", "status": "ok"}', 3: '{"stack": "x", "status": "ok", "inputs": [{"name": 1}]}',
           4: "{not json"}
    stacks = write_openscan3_stacks(rig.hot, "cat", 1, {p: frames.stack(3, offset=p) for p in bad})
    for position, text in bad.items():
        path = rig.results / "cat" / "scan01" / f"scan01_{position:03d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    daemon = rig.start()
    daemon.wait_event("stack.done", count=len(stacks))
    assert rig.ok_records(stacks)
    assert {e["stack"] for e in daemon.events("record.unreadable")} == set(stacks)
    assert daemon.terminate() == 0


def test_inputs_are_disposed_of_after_a_stop_between_record_and_disposal_and_after_a_failed_disposal(rig, frames):
    """A stack recorded while inputs were kept (as when the daemon stops right after the record) has its inputs
    deleted at the next start, without being stacked again; a disposal that fails (a read-only scan folder) is
    tried again until it succeeds."""
    stacks = write_openscan3_stacks(rig.hot, "dog", 1, {p: frames.stack(3, offset=p) for p in (1, 2)})
    first = rig.start()
    first.wait_for(lambda: rig.ok_records(stacks), 20, "both stacks")
    assert first.terminate() == 0
    folder = rig.hot / "dog" / "scan01"
    folder.chmod(0o555)
    try:
        config = rig.config(results={"after_success": "delete"})
        second = rig.start(config, unprivileged=True)
        second.wait_event("inputs.not_disposed", count=2)
        assert len(list(folder.glob("*.jpg"))) == 6
    finally:
        folder.chmod(0o755)
    second.wait_event("inputs.deleted", count=2, timeout=20)  # once the folder is writable
    assert not list(folder.glob("*.jpg"))
    assert second.events("stack.started") == []
    assert count_by_stack(second.events(), "inputs.deleted") == dict.fromkeys(stacks, 1)
    assert second.terminate() == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_lets_running_stacks_finish(rig, frames, signum):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group (``kill -TERM -PGID`` SIGTERM): the
    workers and their forkserver ignore it, the daemon drains the running stack and exits 0 with its result."""
    daemon = rig.start()
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})
    daemon.wait_event("stack.started", stack=stack)
    os.killpg(daemon.pid, signum)
    assert daemon.wait_exit(30) == 0
    assert rig.ok_records([stack]), daemon.tail()
    assert daemon.events("stack.retry") == [] and daemon.events("stack.failed") == []


def test_a_paused_scan_is_never_cut_short_by_the_stack_timeout(rig, frames):
    """OpenScan3 paused with 2 of 3 frames of a position: the stack waits past its timeout (a scan may resume
    hours later) and is stacked once, with 3 frames, when the scan resumes."""
    daemon = rig.start(rig.config(completeness={"stack_timeout_seconds": 1.0}))
    folder = rig.hot / "owl" / "scan01"
    write_scan_json(folder, "paused", 3)
    for k in range(2):
        write_frame(folder / openscan3_name(1, 2, k), frames.small[k])
    time.sleep(2.5)  # settle + timeout, twice over
    assert daemon.events("stack.ready") == []
    write_scan_json(folder, "running", 3)
    write_frame(folder / openscan3_name(1, 2, 2), frames.small[2])
    stack = openscan3_stack("owl", 1, 2)
    daemon.wait_for(lambda: rig.ok_records([stack]), 15, "the resumed stack")
    assert [(e["frames"], e["reason"]) for e in daemon.events("stack.ready")] == [(3, "count")]
    assert daemon.terminate() == 0


def test_a_deleted_result_is_made_again_and_status_does_not_count_it_done(rig, frames):
    """Done means the record matches the inputs *and* its outputs are there with the recorded size: a result
    deleted by hand (or by OpenScan's "delete photos") is noticed at the next rescan and made again."""
    config = rig.config(observer={"rescan_seconds": 1.0})
    daemon = rig.start(config)
    stacks = write_openscan3_stacks(rig.hot, "fox", 1, {1: frames.stack(3), 2: frames.stack(3, 1)})
    daemon.wait_for(lambda: rig.ok_records(stacks), 20, "both stacks")
    image = rig.results / rig.records()[stacks[0]]["output"]
    assert daemon.terminate() == 0
    image.unlink()
    status = json.loads(rig.cli("status", "--json", config=config).stdout)
    assert (status["done"], status["pending"]) == (1, 1), status
    restarted = rig.start(config)
    restarted.wait_event("result.missing", stack=stacks[0])  # found at start
    restarted.wait_event("stack.done", stack=stacks[0])  # and made again
    assert image.is_file()
    image.unlink()
    restarted.wait_event("result.missing", stack=stacks[0], count=2)  # found while running
    restarted.wait_event("stack.done", stack=stacks[0], count=2)
    assert image.is_file() and count_by_stack(restarted.events(), "stack.done") == {stacks[0]: 2}
    assert restarted.terminate() == 0

"""How frames arrive: slowly, out of order, in chunks, in zips, with odd names, on shares without inotify."""

from __future__ import annotations

import io
import json
import random
import threading
import time
import zipfile

from tests.e2e.conftest import (
    count_by_stack,
    event_time,
    openscan3_name,
    openscan3_stack,
    write_frame,
    write_openscan3_stacks,
    write_scan_json,
    write_slowly,
)

SCANS, POSITIONS, FOCUS = 3, 10, 3


def test_frames_copied_slowly_and_out_of_order_are_each_stacked_exactly_once(rig, frames):
    """3 OpenScan3 scans x 10 positions x 3 frames arrive at once, each scan from its own writer: positions in
    shuffled order (the rig's path optimiser), the frames of a position in shuffled order, some frames written
    in two pieces with a pause. Each of the 30 stacks must get exactly one ok record and one ``stack.done``."""
    daemon = rig.start()
    project = rig.hot / "owl"
    rng = random.Random(1234)
    plans = {}
    for scan in range(1, SCANS + 1):
        positions = list(range(1, POSITIONS + 1))
        rng.shuffle(positions)
        plans[scan] = [(position, rng.sample(range(FOCUS), FOCUS)) for position in positions]
    errors = []

    def capture(scan: int) -> None:
        try:
            folder = project / f"scan{scan:02d}"
            write_scan_json(folder, "running", FOCUS)
            local = random.Random(scan)
            for position, order in plans[scan]:
                for focus in order:
                    data = frames.small[(position + focus) % len(frames.small)]
                    path = folder / openscan3_name(scan, position, focus)
                    if local.random() < 0.25:  # a slow frame: half of it, a pause, the rest
                        write_slowly(path, data, [len(data) // 2], pause=local.uniform(0.05, 0.2))
                    else:
                        write_frame(path, data)
                    time.sleep(local.uniform(0.0, 0.04))
            write_scan_json(folder, "completed", FOCUS)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    writers = [threading.Thread(target=capture, args=(scan,)) for scan in range(1, SCANS + 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors, errors

    stacks = {openscan3_stack("owl", scan, position)
              for scan in range(1, SCANS + 1) for position in range(1, POSITIONS + 1)}
    daemon.wait_for(lambda: rig.ok_records(stacks), 60, f"ok records for all {len(stacks)} stacks")
    # A short look for late duplicates (a stack stacked again after its record was written), then stop cleanly.
    time.sleep(1.0)
    assert daemon.terminate() == 0

    records = rig.records()
    assert set(records) == stacks
    for stack, record in records.items():
        assert record["status"] == "ok", record
        assert record["complete_because"] == "count", record
        assert [i["name"] for i in record["inputs"]] == [
            openscan3_name(int(stack.split("/")[1][4:]), int(stack[-3:]), k) for k in range(FOCUS)]
    assert all((rig.results / record["output"]).is_file() for record in records.values())
    done = count_by_stack(rig.log_events(), "stack.done")
    assert done == dict.fromkeys(stacks, 1), {s: n for s, n in done.items() if n != 1}
    assert count_by_stack(rig.log_events(), "stack.started") == dict.fromkeys(stacks, 1)
    assert rig.temp_files() == []
    assert rig.assert_results_sound() == len(stacks)


def test_a_stack_whose_frames_arrive_after_another_stacks_frames_waits_for_its_count(rig, frames):
    """A scan folder copied in another order than captured (``cp -r``, a file manager over SMB): position 1's
    first frame, then all of positions 2 and 3, then the rest of position 1. scan.json says 3 frames per stack,
    so position 1 waits for its 3 frames -- it is not stacked with 1 frame because position 2 has newer files
    (which, with ``after_success = "delete"``, would also delete that frame before the final stacking)."""
    daemon = rig.start(rig.config(results={"after_success": "delete"}))
    folder = rig.hot / "owl" / "scan01"
    write_scan_json(folder, "running", 3)
    order = [(1, 0), *[(p, k) for p in (2, 3) for k in range(3)], (1, 1), (1, 2)]
    for position, focus in order:
        write_frame(folder / openscan3_name(1, position, focus), frames.small[(position + focus) % 7])
        time.sleep(0.15)  # 9 frames in 1.35 s: position 1's first frame is settled long before its last
    stacks = [openscan3_stack("owl", 1, p) for p in (1, 2, 3)]
    daemon.wait_done(stacks, 15)
    daemon.wait_for(lambda: not list(folder.glob("*.jpg")), 15, "the stacked inputs deleted")
    time.sleep(0.5)
    records = rig.records()
    for position, stack in zip((1, 2, 3), stacks):
        assert [i["name"] for i in records[stack]["inputs"]] == [openscan3_name(1, position, k) for k in range(3)]
        assert records[stack]["complete_because"] == "count"
    assert count_by_stack(daemon.events(), "stack.done") == dict.fromkeys(stacks, 1)
    assert daemon.terminate() == 0


def test_a_finished_scan_copied_in_slowly_is_stacked_once_with_all_frames(rig, frames):
    """A finished OpenScan3 scan copied from the rig over a slow link: rsync's name order puts ``scan.json``
    (status ``completed``) before ``scan01_*``, and each frame takes longer than the settle time. The stack
    must wait for its 3 frames (scan.json says 3), as with a running scan; stacking it early and again per
    frame, with ``after_success = "delete"``, leaves a final result made of the last frame only."""
    daemon = rig.start(rig.config(results={"after_success": "delete"}))
    folder = rig.hot / "owl" / "scan01"
    write_scan_json(folder, "completed", 3)
    for focus in range(3):
        if focus:
            time.sleep(1.2)  # longer than the settle time (0.5 s)
        write_frame(folder / openscan3_name(1, 1, focus), frames.small[focus])
    stack = openscan3_stack("owl", 1, 1)
    daemon.wait_done([stack], 15)
    daemon.wait_for(lambda: not list(folder.glob("*.jpg")), 15, "the stacked inputs deleted")
    time.sleep(0.5)
    assert [i["name"] for i in rig.records()[stack]["inputs"]] == [openscan3_name(1, 1, k) for k in range(3)]
    assert count_by_stack(daemon.events(), "stack.done") == {stack: 1}


def with_fake_end_marker(jpeg: bytes) -> tuple[bytes, int]:
    """``jpeg`` with a comment segment ending in FF D9 right after SOI, and the offset just past those bytes.

    A file cut there ends like a complete JPEG -- as a real camera file cut right after its EXIF thumbnail does.
    """
    payload = b"focus-watcher e2e: looks like an end marker \xff\xd9"
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:], 2 + len(segment)


def test_a_frame_written_in_chunks_is_not_read_before_its_writer_is_done(rig, frames):
    """Two stacks get their last frame written in 4 pieces over ~3 s, with pauses longer than the settle time.
    In ``plain`` the pieces end anywhere; in ``tricky`` the first piece ends with bytes FF D9 (a comment
    segment, like an EXIF thumbnail's end), so only the open writer tells the daemon the file is not done.
    Each stack is started only after its last write, and its record has the frame's full size."""
    daemon = rig.start(rig.config(naming={"stack_size": 3}))
    slow = {}
    for name in ("plain", "tricky"):
        for k in range(2):
            write_frame(rig.hot / f"{name}_f{k}.jpg", frames.small[k])
    plain = frames.small[2]
    tricky, marker_end = with_fake_end_marker(frames.small[3])
    assert tricky[:marker_end].endswith(b"\xff\xd9")
    cuts = {"plain": [len(plain) // 4, len(plain) // 2, 3 * len(plain) // 4],
            "tricky": [marker_end, len(tricky) // 2, 3 * len(tricky) // 4]}
    data = {"plain": plain, "tricky": tricky}

    def writer(name: str) -> None:
        slow[name] = write_slowly(rig.hot / f"{name}_f2.jpg", data[name], cuts[name], pause=1.0)

    threads = [threading.Thread(target=writer, args=(name,)) for name in data]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    daemon.wait_for(lambda: rig.ok_records(["plain", "tricky"]), 20, "both stacks ok")
    records = rig.records()
    for name, content in data.items():
        record = records[name]
        assert record["inputs"][2] == {"name": f"{name}_f2.jpg", "size": len(content),
                                       "mtime_ns": (rig.hot / f"{name}_f2.jpg").stat().st_mtime_ns}, record
        started = daemon.events("stack.started", stack=name)
        assert len(started) == 1, started
        assert event_time(started[0]) > slow[name], (name, started[0], slow[name])
        assert len(daemon.events("stack.ready", stack=name)) == 1
        assert record["complete_because"] == "count"
    assert daemon.terminate() == 0


def test_an_openscan2_zip_is_stacked_from_the_zip_without_extracting(rig, frames):
    """An OpenScan2 scan zip ``<date>-<project>.zip`` (members ``{project}_{pass}_{position}-{focus}.jpg``),
    copied into the hot folder in two pieces, is stacked member by member into ``results/<zip stem>/``; the hot
    folder holds nothing but the zip afterwards."""
    daemon = rig.start()
    zip_name = "2024-03-05_10.11.12-owl.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for position in (1, 2, 3):
            for focus in range(3):
                archive.writestr(f"owl_1_{position}-{focus}.jpg", frames.small[(position + focus) % 7])
        archive.writestr("owl_1_3-3.jpg", frames.small[6])  # a 4-frame stack: counts come from the zip itself
    data = buffer.getvalue()
    write_slowly(rig.hot / zip_name, data, [len(data) // 2], pause=0.8)

    stacks = [f"{zip_name}/owl_1_{p}" for p in (1, 2, 3)]
    daemon.wait_done(stacks, 20, "the zip's three stacks")
    records = rig.records()
    assert set(records) == set(stacks)
    for position in (1, 2, 3):
        record = records[f"{zip_name}/owl_1_{position}"]
        focus = range(4 if position == 3 else 3)
        assert [i["name"] for i in record["inputs"]] == [f"owl_1_{position}-{k}.jpg" for k in focus]
        assert record["scan"] == zip_name and record["complete_because"] == "scan ended"
        assert record["output"] == f"2024-03-05_10.11.12-owl/owl_1_{position}.jpg"
        assert (rig.results / "2024-03-05_10.11.12-owl" / f"owl_1_{position}.json").is_file()
    assert rig.assert_results_sound() == 3
    assert rig.hot_files() == [zip_name]
    assert sorted(p.name for p in rig.hot.iterdir()) == [zip_name]
    assert count_by_stack(daemon.events(), "stack.done") == dict.fromkeys(stacks, 1)
    assert daemon.terminate() == 0
    status = json.loads(rig.cli("status", "--json").stdout)
    assert (status["done"], status["failed"], status["pending"]) == (3, 0, 0), status


def test_unplaced_names_are_logged_once_and_never_stacked(rig, frames):
    """Camera names like ``IMG_0001.jpg`` match no rule of mode ``auto``: each is reported once as
    ``file.unplaced`` and never becomes a stack, even after the stack timeout; a real stack beside them is
    stacked."""
    timeout = 1.0
    daemon = rig.start(rig.config(completeness={"stack_timeout_seconds": timeout}))
    scan = rig.hot / "bird" / "scan01"
    write_scan_json(scan, "running", 3)
    strays = {"": ["IMG_0001.jpg", "IMG_0002.JPG"], "bird/scan01": ["DSC01234.jpg"]}
    for folder, names in strays.items():
        for k, name in enumerate(names):
            write_frame(rig.hot / folder / name, frames.small[k])
    for k in range(3):
        write_frame(scan / openscan3_name(1, 7, k), frames.small[k])
    written = time.monotonic()

    daemon.wait_for(lambda: rig.ok_records(["bird/scan01/scan01_007"]), 15, "the real stack")
    expected = {(folder, name) for folder, names in strays.items() for name in names}
    daemon.wait_event("file.unplaced", count=len(expected), timeout=5)
    # Past the stack timeout (and a loop pass or two): nothing may be stacked from the strays, nor reported twice.
    time.sleep(max(0.0, written + timeout + 0.8 - time.monotonic()))
    unplaced = daemon.events("file.unplaced")
    assert sorted((e["scan"], e["file"]) for e in unplaced) == sorted(expected)
    assert {e["reason"] for e in unplaced} == {"name matches no known stack pattern"}
    assert set(rig.records()) == {"bird/scan01/scan01_007"}
    assert {e["stack"] for e in daemon.events("stack.ready")} == {"bird/scan01/scan01_007"}
    assert daemon.alive
    assert daemon.terminate() == 0


def test_polling_mode_works_end_to_end(rig, frames):
    """``observer.mode = "polling"`` (network shares): a scan folder created after the start, frames written
    into it, and a whole scan folder moved in, are noticed by polling alone (rescan far away) and stacked
    once each."""
    daemon = rig.start(rig.config(observer={"mode": "polling", "poll_interval_seconds": 0.2}))
    assert daemon.events("daemon.ready")[0]["observer"] == "polling"
    scan = rig.hot / "fox" / "scan02"
    write_scan_json(scan, "running", 3)
    positions = [5, 2, 9, 1]
    for position in positions:
        for k in range(3):
            write_frame(scan / openscan3_name(2, position, k), frames.small[(position + k) % 7])
            time.sleep(0.03)
    stacks = [openscan3_stack("fox", 2, p) for p in positions]
    moved = write_openscan3_stacks(rig.root / "elsewhere", "fox", 3, {1: frames.stack(3), 2: frames.stack(3, 2)})
    (rig.root / "elsewhere" / "fox" / "scan03").rename(rig.hot / "fox" / "scan03")
    stacks += moved
    daemon.wait_done(stacks, 20, "all polled stacks")
    time.sleep(0.5)
    assert set(rig.records()) == set(stacks)
    assert count_by_stack(daemon.events(), "stack.done") == dict.fromkeys(stacks, 1)
    assert rig.assert_results_sound() == len(stacks)
    assert daemon.terminate() == 0

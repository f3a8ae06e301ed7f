"""Months, not nights: a real Daemon (in this process, with its real worker pool) forgets what it knew of a scan
once the scan is stacked and cleared away, and a scan that comes back unchanged is still found done from its
records on disk, not stacked again."""

from __future__ import annotations

import io
import json
import operator
import os
import shutil
import time
import zipfile

import cv2
import pytest

from watcher.config import Settings
from watcher.service.daemon import Daemon

POSITIONS, FOCUS = 2, 3


@pytest.fixture(scope="module")
def jpegs(pcb_stack) -> list[bytes]:
    return [cv2.imencode(".jpg", cv2.resize(cv2.imread(str(p)), (320, 240)))[1].tobytes() for p in pcb_stack[:FOCUS]]


def write_openscan3(folder, jpegs) -> None:
    folder.mkdir(parents=True)
    (folder / "scan.json").write_text(json.dumps({"status": "completed", "settings": {"focus_stacks": FOCUS}}))
    for position in range(POSITIONS):
        for focus, data in enumerate(jpegs):
            (folder / f"{folder.name}_{position:03d}_fs{focus:02d}.jpg").write_bytes(data)


def write_zip(path, jpegs) -> None:
    """An OpenScan2 scan zip (``<project>_<n>_<position>-<focus>.jpg`` members)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for position in range(POSITIONS):
            for focus, data in enumerate(jpegs):
                archive.writestr(f"owl_1_{position}-{focus}.jpg", data)
    path.write_bytes(buffer.getvalue())


def run_until(daemon: Daemon, predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: {daemon.counts} {daemon.tracker.unfinished()}"
        daemon.step(wait=0.05)


def stacked(daemon: Daemon, count: int):
    return lambda: (daemon.counts["done"] + daemon.counts["failed"] >= count and not daemon.queue
                    and not daemon.pool.running and daemon.tracker.pending() == 0 and not daemon.tracker.unsettled())


def walk_and_check(daemon: Daemon) -> None:
    """A walk of the hot folder, then the check of the results it starts (what every rescan does)."""
    daemon.intake.next_walk = 0.0
    daemon.step(wait=0.0)  # begins the walk (a small hot folder is walked in this one pass)
    run_until(daemon, lambda: not daemon.intake.walking and operator.length_hint(daemon._outputs_to_check) == 0,
              "the walk and the check of the results")


def kept(daemon: Daemon) -> dict[str, int]:
    """What the daemon keeps per scan, per stack and per file."""
    tracker, intake = daemon.tracker, daemon.intake
    sizes = {name: len(getattr(tracker, name)) for name in (
        "_scans", "_unsettled", "_stale", "_where", "_open", "_claimed", "_done", "_backoff", "_reported",
        "_regrouped")}
    sizes.update(archives=len(intake.archives), archive_states=len(intake._archive_states),
                 refused=len(intake._refused), outputs=len(daemon.outputs), queue=len(daemon.queue))
    return sizes


def forgotten(daemon: Daemon, nothing: dict[str, int], what: str) -> None:
    """Wait for the daemon to keep nothing again (it regroups what a walk changed over the next passes)."""
    deadline = time.monotonic() + 30.0
    while kept(daemon) != nothing:
        assert time.monotonic() < deadline, f"{what} is gone from the hot folder, but not from memory: {kept(daemon)}"
        daemon.step(wait=0.05)


def test_a_scan_stacked_and_cleared_away_is_forgotten_and_found_done_if_it_comes_back(tmp_path, jpegs):
    hot, results = tmp_path / "hot", tmp_path / "results"
    settings = Settings(hot_folder=hot, results_folder=results, workers={"count": 1},
                        completeness={"settle_seconds": 0.1}, observer={"rescan_seconds": 3600})
    daemon = Daemon(settings, once=True)
    try:
        daemon.start()
        run_until(daemon, lambda: not daemon.intake.walking, "the first walk")
        nothing = kept(daemon)
        assert set(nothing.values()) == {0}

        # Night 1: an OpenScan3 scan; night 2: an OpenScan2 zip. Each is stacked, then cleared away.
        write_openscan3(hot / "night1" / "scan01", jpegs)
        walk_and_check(daemon)
        run_until(daemon, stacked(daemon, POSITIONS), "night 1 stacked")
        assert daemon.counts == {"done": POSITIONS}
        assert len(daemon.tracker._done) == POSITIONS and len(daemon.outputs) == POSITIONS
        mtimes = {name: os.stat(hot / "night1" / "scan01" / name).st_mtime_ns
                     for name in os.listdir(hot / "night1" / "scan01")}
        archive = tmp_path / "scan01"
        shutil.copytree(hot / "night1" / "scan01", archive)  # copies the mtimes too, as `cp -a` does
        shutil.rmtree(hot / "night1")
        walk_and_check(daemon)
        forgotten(daemon, nothing, "night 1's scan")

        write_zip(hot / "2024-01-02_10.00.00-owl.zip", jpegs)
        walk_and_check(daemon)
        run_until(daemon, stacked(daemon, 2 * POSITIONS), "night 2 stacked")
        assert daemon.counts == {"done": 2 * POSITIONS}
        assert daemon.intake.archives and len(daemon.outputs) == POSITIONS
        (hot / "2024-01-02_10.00.00-owl.zip").unlink()
        walk_and_check(daemon)
        forgotten(daemon, nothing, "night 2's zip")

        # Night 1's scan comes back as it was (same names, sizes, mtimes): its records say it is done.
        records = {path: path.stat().st_mtime_ns for path in (results / "night1" / "scan01").glob("*.json")}
        assert len(records) == POSITIONS
        shutil.copytree(archive, hot / "night1" / "scan01")
        assert {name: os.stat(hot / "night1" / "scan01" / name).st_mtime_ns for name in mtimes} == mtimes
        walk_and_check(daemon)
        run_until(daemon, lambda: len(daemon.tracker._done) == POSITIONS and daemon.tracker.pending() == 0,
                  "the returned scan found done")
        assert daemon.counts == {"done": 2 * POSITIONS}, "a scan stacked before was stacked again"
        assert {path: path.stat().st_mtime_ns for path in (results / "night1" / "scan01").glob("*.json")} == records
    finally:
        daemon.shutdown()
        daemon.lock.release()


def test_a_project_deleted_photo_by_photo_takes_its_records_with_it(tmp_path, jpegs):
    """With the openscan layout the records are kept apart from the project (.focus-watcher/stacks/) and go when
    its folder goes. A project is deleted file by file: when its photos and results go first, the daemon forgets
    its stacks before their folder goes, and the folder's removal alone must still take the records with it."""
    hot = tmp_path / "projects"
    settings = Settings(hot_folder=hot, results_folder=hot, results={"layout": "openscan"}, workers={"count": 1},
                        completeness={"settle_seconds": 0.1}, observer={"rescan_seconds": 3600})
    daemon = Daemon(settings)  # watching: the folder's removal is an event, as in the service
    try:
        daemon.start()
        run_until(daemon, lambda: not daemon.intake.walking, "the first walk")
        nothing = kept(daemon)
        scan = hot / "owl" / "scan01"
        write_openscan3(scan, jpegs)
        run_until(daemon, stacked(daemon, POSITIONS), "the scan stacked")
        records = hot / ".focus-watcher" / "stacks" / "owl" / "scan01"
        assert len(list(records.glob("stacked_*.json"))) == POSITIONS

        for path in sorted(scan.rglob("*"), reverse=True):  # files first, as `rm -r` does; the folders stay
            if path.is_file():
                path.unlink()
        walk_and_check(daemon)
        forgotten(daemon, nothing, "the scan's photos")
        assert len(list(records.glob("stacked_*.json"))) == POSITIONS, "the folder is still there"

        shutil.rmtree(hot / "owl")
        deadline = time.monotonic() + 30.0
        while records.exists():
            assert time.monotonic() < deadline, f"the project is gone, its records are not: {sorted(records.iterdir())}"
            daemon.step(wait=0.05)
        assert not any((hot / ".focus-watcher" / "stacks").iterdir()), "the project's folder of records stays"
    finally:
        daemon.shutdown()
        daemon.lock.release()

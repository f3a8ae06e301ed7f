"""What a scan leaves besides its results: the morning report, refreshed by the running daemon, with thumbnails
made by the workers; and the scan's alignment, calibrated on its first stack and reused for the next ones."""

from __future__ import annotations

import json

from tests.e2e.conftest import write_openscan3_stacks
from watcher.report.refresher import QUIET_SECONDS


def test_the_daemon_keeps_the_report_up_to_date_and_reuses_a_scans_alignment(rig, frames):
    daemon = rig.start()
    [first] = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.small}, status="running")
    daemon.wait_event("stack.done", stack=first)
    later = write_openscan3_stacks(rig.hot, "owl", 1, {1: frames.small, 2: frames.small}, status="running")
    for stack in later:
        daemon.wait_event("stack.done", stack=stack)

    records = rig.records()
    placements = {stack: {f["placement"] for f in records[stack]["frames"]} for stack in [first, *later]}
    assert placements[first] == {"reference", "estimated"}  # measured on the scan's first stack ...
    for stack in later:  # ... and reused, each frame checked
        assert placements[stack] == {"reference", "calibrated"}, placements[stack]
        checks = [f["calibration"] for f in records[stack]["frames"] if "calibration" in f]
        assert all(c["held"] and c["source"] == first for c in checks), checks

    index = rig.results / "index.html"
    scan_page = rig.results / ".focus-watcher" / "report" / "owl" / "scan01" / "index.html"
    # A refresh writes the scan's page, then the index: wait for both (each is replaced whole, atomically).
    daemon.wait_for(lambda: scan_page.is_file() and all(f"scan01_{p:03d}.html" in scan_page.read_text()
                                                           for p in range(3))
                    and index.is_file() and "owl/scan01" in index.read_text(),
                    QUIET_SECONDS + 30, "the report to show the scan's three positions")
    for position in range(3):
        thumbnail = rig.results / ".focus-watcher" / "report" / "owl" / "scan01" / f"scan01_{position:03d}.thumb.jpg"
        assert thumbnail.read_bytes().endswith(b"\xff\xd9")
        assert f'src="scan01_{position:03d}.thumb.jpg"' in scan_page.read_text()
    assert daemon.events("report.refreshed")
    assert not (rig.results / "owl" / "scan01" / "scan01_000.thumb.jpg").exists()  # never beside the results
    assert daemon.terminate() == 0
    assert json.loads((rig.results / "owl" / "scan01" / "scan01_000.json").read_text())["status"] == "ok"

"""``focus-watcher report``: a real process rebuilds the pages from the records, with what the hot folder still
holds shown as pending; exit status 0, 1 (cannot write) or 2 (bad settings)."""

from __future__ import annotations

import subprocess
import sys

from tests.report.conftest import Night


def report(night: Night, *flags: str) -> subprocess.CompletedProcess:
    hot = night.results.parent / "hot"
    return subprocess.run([sys.executable, "-m", "watcher.cli", "report", "--results", str(night.results),
                           "--hot", str(hot), *flags], capture_output=True, text=True, timeout=120)


def test_report_rebuilds_from_the_records_and_shows_the_hot_folders_stacks_as_pending(night):
    hot = night.results.parent / "hot" / "proj" / "scan01"
    hot.mkdir(parents=True)
    for frame in range(3):  # frames of a position not stacked yet (OpenScan3 names)
        (hot / f"scan01_024_fs{frame:02d}.jpg").write_bytes(b"\xff\xd8 not yet stacked \xff\xd9")
    done = report(night)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{night.results / 'index.html'}: 3 scans, 39 stacks; 38 records read")
    scan01 = (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()
    assert scan01.count('class="tile pending"') == 1 and '<span class="label">024</span>' in scan01
    again = report(night)
    assert again.returncode == 0 and "; 0 records read, 0 pages written" in again.stdout, again.stdout


def test_report_exits_2_without_a_results_folder_and_1_when_it_cannot_write(night, tmp_path):
    missing = subprocess.run([sys.executable, "-m", "watcher.cli", "report", "--results", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "results_folder" in missing.stderr, missing.stderr
    (night.results / "index.html").mkdir()  # the index's place is taken: the write fails (even for root)
    failed = report(night)
    assert failed.returncode == 1, failed.stderr
    assert "index.html could not be drawn: IsADirectoryError" in failed.stderr, failed.stderr
    assert (night.results / ".focus-watcher/report/proj/scan01/index.html").is_file()  # the other pages are drawn

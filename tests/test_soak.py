"""The overnight promise, compressed: a 1.5-minute night of faults against a real daemon (benchmarks/soak.py)."""

from __future__ import annotations

import os

from benchmarks.soak import run_night


def test_a_night_of_faults_loses_nothing_and_does_nothing_twice(tmp_path):
    night = run_night(tmp_path / "night", minutes=1.0, stacks=90, workers=max(1, (os.cpu_count() or 1) - 1))
    report = night.report(night.seconds)
    rows = night.rows
    assert rows["lost"] == 0, report
    assert rows["duplicated"] == 0, report
    assert rows["partial files visible"] == 0, report
    assert rows["failures unexplained"] == 0 and rows["failures"] >= 5, report
    assert rows["processed but must not be"] == 0, report  # the symlinked stack outside the hot folder
    assert rows["files written outside results"] == 0, report
    assert rows["read before fully written"] == 0, report
    assert rows["unsafe names refused"] >= 1, report
    assert rows["results ok"] >= rows["planned ok"], report
    assert night.counts["sigkill"] >= 3 and night.counts["starts"] >= 5, report
    assert night.counts["workers_killed"] >= 1 and rows["retries after worker death"] >= 1, report
    assert night.notify.longest_gap < 4.0, report  # the main loop never stalled past the watchdog
    if night.counts["tmpfs"]:  # running as root: read-only and full results folder were injected too
        assert night.counts["readonly_periods"] == 1 and night.counts["full_periods"] == 1, report
        assert rows["results unwritable (retried)"] >= 1, report

"""The overnight promise, compressed: a 1-minute night of faults against a real daemon (benchmarks/soak.py)."""

from __future__ import annotations

import os

from benchmarks.soak import run_night
from benchmarks.soak_report import MUST_BE_ZERO
from benchmarks.soak_report import report as format_report


def test_a_night_of_faults_loses_nothing_and_does_nothing_twice(tmp_path):
    night = run_night(tmp_path / "night", minutes=1.0, stacks=90, workers=max(1, (os.cpu_count() or 1) - 1))
    report = format_report(night, night.seconds)
    rows, counts = night.rows, night.counts
    assert {key: rows[key] for key in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), report
    assert rows["failures"] >= 6, report  # five corruptions twice, and the zip bomb
    assert rows["unsafe names refused"] >= 1, report
    assert rows["results ok"] >= rows["planned ok"], report
    assert counts["sigkill"] >= 3 and counts["sigint"] >= 1 and counts["starts"] >= 6, report
    assert counts["second_daemons"] == counts["second_daemons_refused"] == 2, report
    assert counts["workers_killed"] >= 1 and rows["retries after worker death"] >= 1, report
    # A frame replaced mid-stack is caught when the engine reads it (inputs.unavailable: stacked again with the new
    # frame) or at disposal (inputs.changed: kept); either way it is never archived unstacked ("archived but not
    # what was stacked" is in MUST_BE_ZERO).
    assert counts["frames_replaced"] == 1, report
    # A deleted result is noticed and made again ("lost" counts an ok record whose output is missing).
    assert counts["results_deleted"] == 1 and rows["results found deleted (running)"] == 1, report
    assert counts["unreadable_periods"] == 1 and rows["inputs unavailable (retried)"] >= 1, report  # EACCES
    assert rows["records not ours (ignored)"] >= 3, report
    assert night.notify.longest_gap < 4.0, report  # the main loop never stalled past the watchdog
    assert night.peak_rss_mb() < 250, report  # the zip member that inflates to 512 MiB never entered it
    if night.counts["tmpfs"]:  # running as root: read-only and full results folder were injected too
        assert night.counts["readonly_periods"] == 1 and night.counts["full_periods"] == 1, report
        assert rows["results unwritable (retried)"] >= 1, report

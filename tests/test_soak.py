"""The overnight promise, compressed: a night of faults against a real daemon (benchmarks/soak.py).

The default run has a shorter night (24 s of writing, 40 stacks, a smaller burst); ``pytest -m slow`` (CI) the
one-minute night, and a short night on a plain Dask cluster. Each injects every fault of the campaign, and must
reconcile to nothing lost, doubled or partial.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import run_night
from benchmarks.soak_report import MUST_BE_ZERO, busiest_pass_ms
from benchmarks.soak_report import report as format_report

WORKERS = max(1, (os.cpu_count() or 1) - 1)


def test_a_short_night_of_faults_loses_nothing_and_does_nothing_twice(tmp_path):
    check(run_night(tmp_path / "night", minutes=0.4, stacks=40, workers=WORKERS, burst=10))


@pytest.mark.slow
def test_a_night_of_faults_loses_nothing_and_does_nothing_twice(tmp_path):
    check(run_night(tmp_path / "night", minutes=1.0, stacks=90, workers=WORKERS))


@pytest.mark.slow
def test_a_night_on_a_plain_dask_cluster_loses_nothing_and_does_nothing_twice(tmp_path):
    """The night's faults in half a minute of writing (60 stacks) on two plain ``dask worker`` processes (no memory
    resource declared), with a worker killed mid-stack twice and the scheduler restarted once instead of the local
    pool's worker kills; reconciled the same way."""
    night = run_night(tmp_path / "night", minutes=0.5, stacks=60, workers=2, burst=10, executor="dask")
    check(night)
    report = format_report(night, night.seconds)
    assert night.counts["workers_killed"] == 2 and night.counts["scheduler_restarts"] == 1, report
    assert night.rows["workers called unusable"] == 0, report  # every worker runs focus-watcher


def check(night) -> None:
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
    # A deleted result is noticed (once more per restart or retry before it is made) and made again ("lost" counts
    # an ok record whose output is missing).
    assert counts["results_deleted"] == 1 and rows["results found deleted"] >= 1, report
    assert counts["unreadable_periods"] == 1 and rows["inputs unavailable (retried)"] >= 1, report  # EACCES
    assert rows["records not ours (ignored)"] >= 3, report
    # No pass of the main loop did too much (the daemon's own figure, whatever the machine's load: far under the
    # systemd watchdog's 4 s here).
    assert busiest_pass_ms(night) < 500, report
    assert night.peak_rss_mb() < 250, report  # the zip member that inflates to 512 MiB never entered it
    if night.counts["tmpfs"]:  # running as root: read-only and full results folder were injected too
        assert night.counts["readonly_periods"] == 1 and night.counts["full_periods"] == 1, report
        assert rows["results unwritable (retried)"] >= 1, report

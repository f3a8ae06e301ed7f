"""``status``'s per-scan progress: how far a scan is, its stacking rate, and when it should be all stacked."""

from __future__ import annotations

from datetime import datetime, timedelta

from watcher.service.naming import ScanInfo, parse_scan_json
from watcher.service.status import progress

NOW = datetime(2026, 11, 30, 22, 0).astimezone()


def finished_every(seconds: float, count: int) -> list[str]:
    return [(NOW - timedelta(seconds=seconds * (count - 1 - k))).isoformat(timespec="seconds") for k in range(count)]


def test_a_running_scan_is_stacked_by_when_its_remaining_positions_take_at_its_rate():
    info = ScanInfo(focus_stacks=5, status="running", positions=40)
    scan = progress("proj/scan01", finished_every(12.0, 10), pending=1, info=info, now=NOW)
    assert (scan.stacked, scan.pending, scan.positions, scan.status) == (10, 1, 40, "running")
    assert scan.per_minute == 5.0  # one every 12 s
    assert datetime.fromisoformat(scan.eta) == NOW + timedelta(minutes=6)  # 30 positions to go at 5 a minute


def test_without_a_position_count_the_pending_stacks_are_what_remains():
    scan = progress("macro", finished_every(30.0, 3), pending=4, info=None, now=NOW)
    assert scan.positions is None and datetime.fromisoformat(scan.eta) == NOW + timedelta(minutes=2)


def test_no_rate_no_estimate():
    scan = progress("macro", finished_every(30.0, 1), pending=4, info=None, now=NOW)
    assert scan.per_minute is None and scan.eta is None


def test_scan_json_gives_the_number_of_positions():
    text = '{"status": "running", "settings": {"points": 130, "focus_stacks": 5}}'
    assert parse_scan_json(text) == ScanInfo(focus_stacks=5, status="running", positions=130)
    assert parse_scan_json('{"status": "running", "settings": {"points": true}}').positions is None


def test_records_with_and_without_a_utc_offset_and_unreadable_times_mix():
    # A record written without an offset (by hand, or by an older tool) is local time; one that is no time is skipped.
    local = (NOW - timedelta(seconds=60)).replace(tzinfo=None).isoformat(timespec="seconds")
    finished = [local, *finished_every(30.0, 2), "yesterday", ""]
    scan = progress("macro", finished, pending=1, info=None, now=NOW)
    assert scan.stacked == 5 and scan.per_minute == 2.0  # three in 60 s

"""The report of odd names and odd records: pages in valid UTF-8 whose links reach their files, and one page that
cannot be drawn never holding up the others."""

from __future__ import annotations

import json
import os

from tests.report.conftest import healthy_shares
from tests.report.pages import link_target, read_page
from watcher.report import Report

LATIN1_SCAN = os.fsdecode(b"caf\xe9")  # "caf\udce9": a latin-1 folder from a Samba share
NAMES = [os.fsdecode(b"d\xe9j\xe0"), "x10", "x9", "x1\u00b2", "pos\u0663", "it's \"q\" #1 ?x %20 <b> & co",
         "caf\u00e9", "cafe\u0301"]


def test_odd_names_are_shown_escaped_and_every_link_reaches_its_file(night):
    for index, name in enumerate(NAMES):
        night.ok(LATIN1_SCAN, name, index, *healthy_shares(night.rng))
    failed = os.fsdecode(b"f\xe9il")
    night.failed(LATIN1_SCAN, failed, 20, f"/hot/{LATIN1_SCAN}/{failed}_f1.jpg: truncated JPEG")
    night.waiting(LATIN1_SCAN, os.fsdecode(b"p\xe9nding"))
    stats = Report(night.results).rebuild(night.pending)
    assert stats.failures == {}
    scan_page = night.results / ".focus-watcher" / "report" / LATIN1_SCAN / "index.html"
    pages = sorted(night.results.rglob("*.html"))
    assert scan_page in pages and len(pages) == 1 + 4 + 38 + len(NAMES) + 1
    for page in pages:
        parsed, _source = read_page(page)  # strict UTF-8
        assert parsed.errors == [] and parsed.open == [], (page, parsed.errors)
        for url in parsed.links:
            assert link_target(page, url).is_file(), (page, url)
    parsed, source = read_page(scan_page)
    text = "".join(parsed.text)
    assert "caf\\xe9" in text and "d\\xe9j\\xe0" in text and "p\\xe9nding" in text and "\ufffd" not in text
    assert "f\\xe9il_f1.jpg: truncated JPEG" in text  # a record's reason: valid text, no absolute path
    assert 'href="d%E9j%E0.html"' in source  # the bytes as they are, percent-encoded
    assert 'href="it%27s%20%22q%22%20%231%20%3Fx%20%2520%20%3Cb%3E%20%26%20co.html"' in source
    assert source.index('href="x9.html"') < source.index('href="x10.html"')  # natural order
    index, _source = read_page(night.results / "index.html")
    assert "caf\\xe9" in "".join(index.text)


def test_a_page_that_cannot_be_drawn_is_named_and_skipped_and_tried_again_by_every_refresh(night):
    report = Report(night.results)
    report.rebuild(night.pending)
    bad = night.record_path("proj/scan01", "scan01_005")
    record = json.loads(bad.read_text())
    # The engine's part of a record is free-form: a number no float holds is valid JSON, and its page fails.
    bad.write_text(json.dumps(record | {"timings": {"align": 10**400}}))
    new = night.ok("proj/scan03", "scan03_008", 48, *healthy_shares(night.rng))
    page = ".focus-watcher/report/proj/scan01/scan01_005.html"
    stats = report.refresh([bad, new], night.pending)
    assert stats.failures == {page: "OverflowError: int too large to convert to float"}
    assert stats.scans_rendered == 2 and stats.index_rendered  # scan01 without that page, and scan03
    assert (night.results / ".focus-watcher/report/proj/scan03/scan03_008.html").is_file()

    again = report.refresh([], None)  # nothing new: the failed page alone is tried again
    assert again.failures == stats.failures and (again.records_read, again.stack_pages) == (1, 0)
    bad.write_text(json.dumps(record | {"frames": [{"name": "a", "warnings": 5}]}))
    assert report.refresh([], None).failures == {page: "TypeError: 'int' object is not iterable"}

    bad.write_text(json.dumps(record))  # mended
    mended = report.refresh([], None)
    assert mended.failures == {} and mended.stack_pages == 1 and (night.results / page).is_file()
    assert report.refresh([], None).scans_rendered == 0  # and no longer tried
    parsed, _source = read_page(night.results / page)
    assert parsed.errors == []


def test_a_stack_whose_entry_cannot_be_made_is_left_out_of_its_scan_and_named(night):
    bad = night.record_path("proj/scan01", "scan01_005")
    bad.write_text(json.dumps(json.loads(bad.read_text()) | {"duration_seconds": 10**400}))
    stats = Report(night.results).rebuild(night.pending)
    assert stats.failures == {
        ".focus-watcher/report/proj/scan01/scan01_005.html": "OverflowError: int too large to convert to float"}
    scan01 = (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()
    assert "scan01_005.html" not in scan01 and "scan01_006.html" in scan01

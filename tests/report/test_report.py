"""The report of a night with ok, failed and pending stacks: content, links, no leaked paths, increments."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.report.conftest import Night, healthy_shares
from tests.report.pages import link_target, read_page
from watcher.report import PendingStack, Report
from watcher.report.build import FORMAT
from watcher.report.model import ScanSummary, StackEntry, summarize
from watcher.report.pages import RECENT_SCANS, render_index


def html_pages(results: Path) -> list[Path]:
    return sorted(results.rglob("*.html"))


def build(night: Night) -> Report:
    report = Report(night.results, night.layout)
    report.rebuild(night.pending)
    return report


def stack_page(results: Path, scan: str, stem: str) -> Path:
    return results / ".focus-watcher" / "report" / scan / f"{stem}.html"


# --- content -------------------------------------------------------------------------------------------------


def test_every_stack_appears_once_on_its_scan_page_and_failures_show_their_reason(night):
    build(night)
    scan01 = (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()
    for index in range(25):
        assert scan01.count(f'<span class="label">{index:03d}</span>') == 1, index  # tiles show the position
    assert scan01.count('class="tile bad"') == 2 and scan01.count('class="tile pending"') == 2
    for index in range(24):  # every stack with a record links to its page: from its tile, failures also above
        assert scan01.count(f'href="scan01_{index:03d}.html"') == (2 if index in (7, 15) else 1), index
    assert "scan01_024.html" not in scan01  # pending and never stacked: nothing to open yet
    reason = "scan01_007_fs03.jpg: truncated JPEG (no end marker FF D9)"
    assert scan01.count(reason) == 2  # in the failures box and in the tile's tooltip
    assert "✗ fs03.jpg: truncated JPEG" in scan01  # the tile itself has no room for the stack's name again
    assert reason in (night.results / ".focus-watcher/report/proj/scan01/scan01_007.html").read_text()
    index = (night.results / "index.html").read_text()
    assert "✗ scan01_007: fs03.jpg: truncated JPEG" in index and "internal error: ValueError: bad shape" in index
    assert index.index("proj/scan01") < index.index("proj/scan03")  # the scan with failures comes first
    assert re.search(r"<b>39</b>stacks</div>.*<b>35</b>ok.*<b>2</b>failed.*<b>2</b>pending", index)
    for scan, count in (("scan02", 6), ("scan03", 8)):
        page = (night.results / f".focus-watcher/report/proj/{scan}/index.html").read_text()
        assert page.count('class="tile"') == count
    assert (night.results / ".focus-watcher/report/proj/scan02/index.html").read_text().count("no thumbnail") == 6


def test_a_stack_page_shows_result_depth_map_shares_alignment_warnings_and_timings(night):
    build(night)
    page = stack_page(night.results, "proj/scan01", "scan01_011").read_text()
    assert '<img src="../../../../proj/scan01/scan01_011.jpg" width="2048" height="1536"' in page
    assert 'src="scan01_011.depth.thumb.png"' in page
    assert 'href="../../../../proj/scan01/scan01_011.depth.png"' in page
    shares = night.stacks["proj/scan01/scan01_011.json"]["frames"]
    assert f"{100 * shares[2]['share']:.1f} %" in page
    assert "reference" in page and "homography" in page
    assert "alignment fell back to affine" in page
    assert "<h2>Timings</h2>" in page and "align" in page
    assert 'href="scan01_010.html">← scan01_010' in page and 'href="scan01_012.html">scan01_012 →' in page


def test_focus_range_advice_is_said_on_the_scan_and_the_index_once(night):
    build(night)
    advice = "Extend the focus range towards near: the nearest frame (1 of 7) gave a large share"
    scan03 = (night.results / ".focus-watcher/report/proj/scan03/index.html").read_text()
    assert scan03.count(advice) == 1 and "<svg" in scan03
    assert "⚠" not in scan03.split("<h2>Positions</h2>")[1]  # said once for the scan, not on every tile
    assert advice in (night.results / "index.html").read_text()
    pages = night.results / ".focus-watcher/report/proj"
    assert "Focus range looks right" in (pages / "scan01/index.html").read_text()
    assert "Focus range" not in (pages / "scan02/index.html").read_text()  # no shares recorded
    assert "nearer than it are probably not sharp" in stack_page(night.results, "proj/scan03", "scan03_002").read_text()


def test_every_link_resolves_and_every_page_is_well_formed(night):
    build(night)
    pages = html_pages(night.results)
    assert len(pages) == 1 + 3 + 38  # index, 3 scans, 38 stacks with records
    for path in pages:
        parsed, _source = read_page(path)
        assert parsed.doctype and parsed.tags[:2] == ["html", "head"], path
        assert parsed.errors == [] and parsed.open == [], (path, parsed.errors, parsed.open)
        assert parsed.tags.count("title") == 1 and len(parsed.ids) == len(set(parsed.ids)), path
        for url in parsed.links:
            target = link_target(path, url)
            assert target.is_file(), (path, url)
            assert night.results.resolve() in target.parents, (path, url)


def test_no_absolute_path_of_the_machine_reaches_a_page(night):
    build(night)
    machine = {str(night.results.parent), str(Path.home()), str(Path(__file__).resolve().parents[2]), "/tmp/",
               "/work/", "/home/", "/root/"}
    for path in html_pages(night.results):
        text = path.read_text()
        assert not [leak for leak in machine if leak in text], path
    assert "…/scan01_007_fs03.jpg" in (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()


def test_names_from_files_are_escaped_and_outputs_outside_the_results_are_not_linked(night):
    record_path = night.ok("proj/scan04", "scan04_000", 60)
    record = json.loads(record_path.read_text())
    record |= {"name": "<script>alert(1)</script>", "output": "/etc/passwd"}
    record_path.write_text(json.dumps(record))
    build(night)
    for path in html_pages(night.results):
        assert "<script" not in path.read_text(), path
    page = stack_page(night.results, "proj/scan04", "scan04_000").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "passwd" not in page
    scan04 = (night.results / ".focus-watcher/report/proj/scan04/index.html").read_text()
    assert 'src="scan04_000.thumb.jpg"' in scan04


# --- incremental ---------------------------------------------------------------------------------------------


def snapshot(results: Path) -> dict[str, int]:
    """The report's files (not the thumbnails: the worker writes those) and their mtimes."""
    return {str(p.relative_to(results)): p.stat().st_mtime_ns
            for p in (results / ".focus-watcher" / "report").rglob("*") if p.is_file() and ".thumb." not in p.name}


def test_a_refresh_after_one_stack_renders_that_stack_its_neighbour_its_scan_and_the_index(night):
    report = build(night)
    before = snapshot(night.results)
    path = night.ok("proj/scan01", "scan01_024", 24, *healthy_shares(night.rng))
    still = [p for p in night.pending if p.name != "scan01_024"]
    stats = report.refresh([path], still)
    assert (stats.scans_rendered, stats.records_read, stats.stack_pages) == (1, 2, 2)  # 024, and 023's next link
    assert stats.index_rendered
    after = snapshot(night.results)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {f".focus-watcher/report/proj/scan01/{name}"
                       for name in ("index.html", "scan01_024.html", "scan01_023.html", ".stacks.json")
                       } | {".focus-watcher/report/.index.json"}
    scan01 = (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()
    assert 'href="scan01_024.html"' in scan01 and scan01.count('class="tile pending"') == 1
    assert 'scan01_024 →' in stack_page(night.results, "proj/scan01", "scan01_023").read_text()
    again = report.rebuild(still)
    assert (again.scans_rendered, again.records_read, again.stack_pages, again.index_rendered) == (0, 0, 0, False)


def test_pending_stacks_come_and_go_without_reading_records(night):
    report = build(night)
    stats = report.refresh([], [])  # nothing pending any more
    assert (stats.scans_rendered, stats.records_read, stats.stack_pages) == (1, 0, 0)
    assert 'class="tile pending"' not in (night.results / ".focus-watcher/report/proj/scan01/index.html").read_text()
    late = PendingStack(night.record_path("proj/scan05", "scan05_000"), "scan05_000")
    stats = report.refresh([], [late])
    assert stats.scans_rendered == 1 and "proj/scan05" in (night.results / "index.html").read_text()
    assert report.refresh([], None).scans_rendered == 0  # None: the pending stacks shown before stay


def test_removed_records_and_scans_take_their_pages_with_them(night):
    report = build(night)
    (night.results / "proj/scan01/scan01_010.json").unlink()
    stats = report.rebuild(night.pending)
    assert stats.pages_removed == 1 and stats.stack_pages == 2  # 009 and 011 now link to each other
    assert not stack_page(night.results, "proj/scan01", "scan01_010").exists()
    assert 'href="scan01_011.html"' in stack_page(night.results, "proj/scan01", "scan01_009").read_text()
    shutil.rmtree(night.results / "proj/scan02")
    report.rebuild(night.pending)
    assert not (night.results / ".focus-watcher/report/proj/scan02").exists()
    assert "proj/scan02" not in (night.results / "index.html").read_text()
    for path in html_pages(night.results):
        assert "scan01_010.html" not in path.read_text() and "scan02" not in path.read_text(), path


def test_a_lost_or_outdated_state_rebuilds_everything(night):
    report = build(night)
    shutil.rmtree(night.results / ".focus-watcher" / "report")
    stats = report.rebuild(night.pending)
    assert (stats.scans_rendered, stats.stack_pages) == (3, 38)
    state = night.results / ".focus-watcher/report/.index.json"
    state.write_text(state.read_text().replace(FORMAT, "an older format"))
    for scan_state in (night.results / ".focus-watcher" / "report").rglob(".stacks.json"):
        scan_state.write_text("{broken")
    assert report.rebuild(night.pending).stack_pages == 38


def test_the_openscan_layout_reads_only_its_own_records_and_keeps_its_pages_out_of_every_project(tmp_path, fused):
    """In OpenScan3's projects folder: the records are read from focus-watcher's folder alone (none of the
    firmware's JSON files is opened), and pages and thumbnails go there too, even beside a project named
    ``report``; the results in ``stacked/`` and the depth maps beside the records are linked."""
    night = Night(tmp_path / "projects", fused, layout="openscan")
    for index in range(5):
        night.ok("owl/scan01", f"scan01_{index:03d}", index, *healthy_shares(night.rng))
    night.ok("report/scan01", "scan01_000", 9, *healthy_shares(night.rng))  # a project named "report"
    metadata = night.results / "owl/scan01/metadata"
    metadata.mkdir()
    for index in range(50):  # OpenScan3's per-photo metadata, and its scan.json: not records
        (metadata / f"scan01_{index:03d}_fs00.json").write_text('{"stack": "no", "status": "ok"}')
    (night.results / "owl/scan01/scan.json").write_text('{"stack": "no", "status": "ok"}')
    (night.results / "report/openscan_project.json").write_text('{"stack": "no", "status": "ok"}')
    stats = Report(night.results, "openscan").rebuild()
    assert stats.records_read == 6 and stats.scans_rendered == 2
    page = (night.results / ".focus-watcher/report/owl/scan01/index.html").read_text()
    assert 'src="stacked_scan01_000.thumb.jpg"' in page
    assert 'href="stacked_scan01_004.html"' in page
    stack = (night.results / ".focus-watcher/report/owl/scan01/stacked_scan01_004.html").read_text()
    assert 'href="../../../../owl/scan01/stacked/stacked_scan01_004.jpg"' in stack
    assert 'href="../../../stacks/owl/scan01/stacked_scan01_004.depth.png"' in stack
    for project in ("owl", "report"):  # nothing of ours in a project: only the results, in stacked/
        ours = [p.relative_to(night.results / project).as_posix() for p in (night.results / project).rglob("*")
                if p.is_file() and p.parent.name not in ("metadata",)]
        assert all((p.startswith("scan01/stacked/stacked_") and p.endswith(".jpg")) or p in (
            "scan01/scan.json", "openscan_project.json") for p in ours), ours
    assert "report/scan01" in (night.results / "index.html").read_text()


def test_after_months_of_scans_the_index_keeps_cards_for_the_recent_ones_only():
    scans = [ScanSummary(f"proj/scan{n:03d}", ok=400, failed=1 if n == 2 else 0,
                         started_at=f"2024-{1 + n // 28:02d}-{1 + n % 28:02d}T21:00:00+02:00",
                         finished_at=f"2024-{1 + n // 28:02d}-{1 + n % 28:02d}T23:00:00+02:00") for n in range(200)]
    page = render_index(scans)
    assert page.count('<a class="scan') == RECENT_SCANS
    assert "<h2>Older scans (170)</h2>" in page and page.count("<li>") == 170
    assert page.index("proj/scan199") < page.index("proj/scan170") < page.index("Older scans") < page.index(
        "proj/scan002")  # an old failure does not sit on top for ever
    assert len(page) < 80_000


def test_a_failed_stack_counts_as_failed_only_not_also_with_warnings():
    """A failed openscan stack carries the upload-gap warning; the index counted it twice (failed, and with
    warnings). Only ok stacks count under 'with warnings'."""
    entries = [StackEntry("s/a.json", "a", "failed", error="truncated", warnings=["no image in stacked/: ..."]),
               StackEntry("s/b.json", "b", "ok", warnings=["fell back to affine"]),
               StackEntry("s/c.json", "c", "ok"),
               StackEntry("s/d.json", "d", "pending", warnings=["from its last run"])]
    summary = summarize("s", entries, [])
    assert (summary.ok, summary.failed, summary.pending, summary.warned) == (2, 1, 1, 1)
    index = render_index([summary])
    assert re.search(r"<b>1</b>failed.*<b>1</b>with warnings", index) and "1 with warnings" in index

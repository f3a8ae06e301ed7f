"""Odd names from cameras, Samba shares and USB sticks: every stack is stacked or clearly refused, and the log,
the records, ``status`` and the report stay valid UTF-8 with links that reach their files.

Names are made as bytes (``os.fsencode``), the way a latin-1 folder from a Samba share arrives on the disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest

from tests.e2e.conftest import select
from tests.report.pages import link_target, read_page
from watcher.service.naming import StackId
from watcher.service.records import build_record

LATIN1_SCAN = b"caf\xe9"  # a latin-1 folder name: not UTF-8
ODD_SCAN = b"r #2 ?%&<'\""
LONGEST = "é" * 100  # 200 bytes: the longest stack name (watcher.service.naming.MAX_NAME_BYTES)
TOO_LONG = "é" * 121 + "e"  # 243 bytes; its frames' names are 250 bytes long
NO_PATTERN = "name matches no known stack pattern"
# (scan folder, stack name) as bytes -> the stack id as the log and the records show it
STACKS = {
    (LATIN1_SCAN, b"pos"): "caf\\xe9/pos",
    (b"", b"d\xe9j\xe0"): "d\\xe9j\\xe0",
    (b"", "caf\u00e9".encode()): "caf\u00e9",  # NFC and NFD: two names, two stacks
    (b"", "cafe\u0301".encode()): "cafe\u0301",
    (b"", "x1\u00b2".encode()): "x1\u00b2",  # ² is no digit: a name like any other
    (b"", "pos\u0663".encode()): "pos\u0663",  # Arabic-Indic three
    (b"", b"it's \"q\" #1 ?x %20 <b> & co"): "it's \"q\" #1 ?x %20 <b> & co",
    (ODD_SCAN, b"p"): "r #2 ?%&<'\"/p",
    (b"", LONGEST.encode()): LONGEST,
}
SCANS = {"": b"", "caf\\xe9": LATIN1_SCAN, ODD_SCAN.decode(): ODD_SCAN}  # as records show them -> as they are
# frames that are no frame (only ASCII digits number frames) and frames of a stack whose name is too long
REFUSED = {"sq_f\u00b2.jpg": NO_PATTERN, "sq_f\u0663.jpg": NO_PATTERN,
           **{f"{TOO_LONG}_f{k}.jpg": "243 bytes long, over 200" for k in (1, 2, 3)}}


def _write(hot: Path, frames: list[bytes]) -> None:
    for (scan, stack), _shown in STACKS.items():
        folder = os.path.join(bytes(hot), scan) if scan else bytes(hot)
        os.makedirs(folder, exist_ok=True)
        for k, data in enumerate(frames, 1):
            with open(os.path.join(folder, stack + b"_f%d.jpg" % k), "wb") as handle:
                handle.write(data)
    for name in REFUSED:
        (hot / name).write_bytes(frames[0])


def _valid_json_lines(path: Path) -> list[dict]:
    """The JSON lines of a log: the whole file strict UTF-8, every string in every event valid Unicode."""
    text = path.read_bytes().decode("utf-8")  # strict: raises on any byte that is not UTF-8
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for event in events:
        json.dumps(event, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return events


def _exact(item: dict, key: str) -> bytes:
    """The exact name a record keeps: ``<key>_bytes`` percent-decoded when present, else ``<key>`` as UTF-8."""
    return unquote_to_bytes(item[f"{key}_bytes"]) if f"{key}_bytes" in item else item[key].encode("utf-8")


@pytest.mark.parametrize("layout", ["mirror", "openscan"])
def test_odd_names_are_stacked_or_refused_and_log_records_status_and_report_stay_valid(rig, frames, layout):
    results = rig.hot if layout == "openscan" else rig.results
    config = rig.config(results_folder=results, naming={"stack_size": 3}, stacking={"depthmap": True},
                        results={"layout": layout})
    daemon = rig.start(config)
    _write(rig.hot, frames.stack(3))
    for shown in STACKS.values():
        daemon.wait_event("stack.done", timeout=60, stack=shown)
    for name, reason in REFUSED.items():
        [unplaced] = daemon.wait_event("file.unplaced", file=name)
        assert reason in unplaced["reason"], unplaced
    report = results / ".focus-watcher" / "report"
    prefix = b"stacked_" if layout == "openscan" else b""
    pages = [report / os.fsdecode(os.path.join(scan, prefix + stack + b".html")) for scan, stack in STACKS]
    daemon.wait_for(lambda: all(page.is_file() for page in pages), 60, "a page for every stack")
    assert daemon.terminate() == 0  # after a last refresh of the report

    # The log and stderr: valid UTF-8 JSON lines; the latin-1 name written as \xe9, never as a lone surrogate.
    events = _valid_json_lines(results / "focus-watcher.log")
    assert select(events, "stack.done", stack="caf\\xe9/pos") and not select(events, "report.failed")
    assert not select(events, "results.unwritable") and not select(events, "report.page_failed")
    assert select(_valid_json_lines(daemon.stderr_path), "stack.done", stack="caf\\xe9/pos")

    # Every record: strict UTF-8 JSON, and its exact names reach the inputs and outputs as they are now.
    records = {}
    for path in results.rglob("*.json"):
        if path.is_relative_to(report) or path.name.startswith("."):
            continue
        record = json.loads(path.read_bytes().decode("utf-8"))
        json.dumps(record, ensure_ascii=False).encode("utf-8")
        records[record["stack"]] = record
        scan_folder = os.path.join(bytes(rig.hot), SCANS[record["scan"]])
        assert all(os.path.isfile(os.path.join(scan_folder, _exact(i, "name"))) for i in record["inputs"]), record
        assert all(os.path.isfile(os.path.join(bytes(results), _exact(o, "path"))) for o in record["outputs"])
    assert set(records) == set(STACKS.values()) and all(r["status"] == "ok" for r in records.values())
    assert records["d\\xe9j\\xe0"]["inputs"][0] | {"size": 0, "mtime_ns": 0} == {
        "name": "d\\xe9j\\xe0_f1.jpg", "name_bytes": "d%E9j%E0_f1.jpg", "size": 0, "mtime_ns": 0}

    # status and report work, and say the same.
    status = rig.cli("status", "--json", config=config)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert (summary["done"], summary["pending"], summary["unplaced"]) == (len(STACKS), 0, len(REFUSED))
    assert rig.cli("status", config=config).returncode == 0
    rebuilt = rig.cli("report", config=config)
    assert rebuilt.returncode == 0 and not rebuilt.stderr, rebuilt.stderr

    # The report: UTF-8 pages, every link reaching its file, undecodable bytes shown as \xe9.
    html = sorted(results.rglob("*.html"))
    assert len(html) == 1 + 3 + len(STACKS)  # the index, the top folder, caf\xe9 and the odd folder, the stacks
    for page in html:
        parsed, _source = read_page(page)
        assert parsed.errors == [] and parsed.open == [], (page, parsed.errors)
        for url in parsed.links:
            assert link_target(page, url).is_file(), (page, url)
        assert "\ufffd" not in "".join(parsed.text), page
    index, _ = read_page(results / "index.html")
    assert len([url for url in index.links if url.endswith("index.html")]) == 3  # each scan's page
    latin1_page, _ = read_page(report / os.fsdecode(LATIN1_SCAN) / "index.html")
    assert "caf\\xe9" in "".join(latin1_page.text)
    for scan, stack in STACKS:
        assert os.path.isfile(os.path.join(bytes(report), scan, prefix + stack + b".thumb.jpg")), stack

    # Done is done: a second look at the same files stacks nothing again.
    again = rig.start(config, command="once", wait_ready=False)
    assert again.wait_exit(60) == 0, again.tail()
    assert again.events("daemon.stopped") and not again.events("stack.started"), again.tail()


def test_a_report_page_that_cannot_be_drawn_is_logged_once_and_every_other_page_is_refreshed(rig, frames):
    # A record left by an earlier version, which measured names in characters: 118 é are 236 bytes, and its page's
    # temp file (".<name>.html.tmp-<pid>-<hex>") cannot have a name that long.
    stem = "é" * 118
    (rig.results / "old").mkdir(parents=True)
    record = build_record(StackId("old", stem), ((f"{stem}_f1.jpg", 1, 1),), status="failed", reason="count",
                          attempts=1, started_at=0.0, finished_at=1.0, outputs=[], error="truncated JPEG")
    (rig.results / "old" / f"{stem}.json").write_text(json.dumps(record))
    page = f".focus-watcher/report/old/{stem}.html"
    daemon = rig.start(rig.config(naming={"stack_size": 3}))
    [first] = daemon.wait_event("report.page_failed", page=page)
    assert first["error"] == "OSError: File name too long"

    for refreshes, stack in enumerate("abc", start=2):
        if stack == "b":  # now its data fails the page first: a new reason, said once
            (rig.results / "old" / f"{stem}.json").write_text(json.dumps(record | {"frames": [{"warnings": 5}]}))
        for k, data in enumerate(frames.stack(3), 1):
            (rig.hot / f"{stack}_f{k}.jpg").write_bytes(data)
        daemon.wait_event("stack.done", stack=stack)
        daemon.wait_event("report.refreshed", timeout=30, count=refreshes)  # the rebuild, then one per stack
        assert (rig.results / ".focus-watcher" / "report" / f"{stack}.html").is_file()
    assert daemon.terminate() == 0
    assert [e["error"] for e in daemon.events("report.page_failed")] == [
        "OSError: File name too long", "TypeError: 'int' object is not iterable"]
    assert all(e["failed_pages"] == 1 for e in daemon.events("report.refreshed"))  # tried again by each refresh
    top, _source = read_page(rig.results / ".focus-watcher" / "report" / "index.html")
    assert {"a.html", "b.html", "c.html"} <= set(top.links)
    assert not daemon.events("report.failed") and not daemon.events("report.unwritable")

"""The hot folder's looks at files: what is read, and what is refused after opening."""

from __future__ import annotations

import json
import os
import threading

from watcher.service.naming import ScanInfo
from watcher.service.observer import HotFolder


def test_scan_json_is_read_safely_whatever_is_put_in_its_place(tmp_path):
    folder = HotFolder(tmp_path, (".jpg",))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "scan.json").write_text(json.dumps({"status": "paused", "settings": {"focus_stacks": 4}}))
    assert folder.scan_info(tmp_path / "a" / "scan.json") == ScanInfo(4, "paused")
    os.mkfifo(tmp_path / "fifo.json")  # a plain open() blocks until a writer comes: the loop would hang
    (tmp_path / "zero.json").symlink_to("/dev/zero")  # a plain read() never ends: the loop's memory would
    with open(tmp_path / "big.json", "wb") as handle:
        handle.truncate(2 << 20)
    results = {}
    reader = threading.Thread(target=lambda: results.update(
        {name: folder.scan_info(tmp_path / name) for name in ("fifo.json", "zero.json", "big.json")}), daemon=True)
    reader.start()
    reader.join(5)
    assert results == {"fifo.json": None, "zero.json": None, "big.json": None}


def test_a_frame_that_cannot_be_read_yet_counts_as_incomplete_and_is_read_again(tmp_path):
    folder = HotFolder(tmp_path, (".jpg",))
    path = tmp_path / "a_f0.jpg"
    path.write_bytes(b"\xff\xd8 partial")
    first = folder.look(path)
    assert first is not None and not first.complete
    with open(path, "ab") as handle:
        handle.write(b"\xff\xd9")
    os.utime(path, ns=(0, first.mtime_ns))  # same mtime, size changed: read again
    assert folder.look(path, first).complete
    link = tmp_path / "b_f0.jpg"
    link.symlink_to(path)
    assert folder.look(link) is None

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


def test_a_dng_is_complete_only_once_its_structure_is_whole(tmp_path):
    """DNG has no end marker: a look reads its IFDs and checks that every strip lies inside the file. Written as
    OpenScan3 writes it (straight to its name, 1 MiB at a time), it is incomplete until the last byte is there."""
    import numpy as np

    from benchmarks.picamera_dng import write_dng

    data = write_dng(None, np.full((600, 800, 3), 0.3, np.float32))
    folder = HotFolder(tmp_path, (".dng",))
    path = tmp_path / "scan01_000_fs00.dng"
    seen = None
    with open(path, "wb") as handle:
        for start in range(0, len(data), 1 << 18):
            handle.write(data[start : start + (1 << 18)])
            handle.flush()
            seen = folder.look(path, seen)
            assert seen.complete == (start + (1 << 18) >= len(data)), start
    path.write_bytes(data[:-1])  # truncated: never complete
    assert not folder.look(path).complete
    path.write_bytes(b"\xff\xd8 a JPEG named .dng \xff\xd9")  # no raw structure to wait for: its stack is not
    assert folder.look(path).complete  # kept waiting, and fails at once saying what the file is

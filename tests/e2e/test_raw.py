"""An OpenScan3 DNG scan dropped into the hot folder: one 16-bit result per position (and the JPEG the firmware
reads, in its layout), complete records; a DNG still being written waits; bad raw input fails its stack alone."""

from __future__ import annotations

import json
import os
import struct

import cv2
import numpy as np
from PIL import Image

from benchmarks.picamera_dng import SyntheticCamera, write_dng
from tests.e2e.conftest import (
    REPORT_FOLDER,
    STATE_FOLDER,
    event_time,
    openscan3_name,
    openscan3_stack,
    write_frame,
    write_openscan3_stacks,
    write_slowly,
)
from watcher.report.refresher import QUIET_SECONDS


def test_an_openscan3_dng_scan_gets_a_16_bit_result_per_position(rig, frames):
    """The default (mirror) layout: results/<project>/scan01/scan01_PPP.tif, 16-bit, with the reference frame's
    camera fields and an sRGB profile; records say how the frames were developed; the report has its thumbnails."""
    daemon = rig.start()
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.raw[:3], 1: frames.raw[3:6]}, status="completed",
                                    suffix=".dng")
    daemon.wait_done(stacks, 60)
    records = rig.records()
    for position, stack in enumerate(stacks):
        record = records[stack]
        image = rig.results / "owl" / "scan01" / f"scan01_{position:03d}.tif"
        assert record["outputs"] == [{"path": f"owl/scan01/scan01_{position:03d}.tif", "bytes": image.stat().st_size}]
        assert record["complete_because"] == "count" and record["output_bit_depth"] == 16
        assert record["raw"]["white_balance"] == "as shot" and record["raw"]["demosaic"] == "PPG"
        assert [i["name"] for i in record["inputs"]] == [openscan3_name(1, position, k, ".dng") for k in range(3)]
        assert cv2.imread(str(image), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        with Image.open(image) as result:
            assert (result.getexif()[271], result.getexif()[272]) == ("RaspberryPi", "imx519")
            assert "icc_profile" in result.info
    assert len(rig.result_files("*.tif")) == 2 and daemon.events("stack.failed") == []
    report = rig.results / REPORT_FOLDER / "owl" / "scan01"
    scan_page = report / "index.html"
    daemon.wait_for(lambda: scan_page.is_file() and all(f"scan01_{p:03d}.html" in scan_page.read_text()
                                                           for p in range(2)),
                    QUIET_SECONDS + 30, "the report to show the scan's two positions")
    for position in range(2):  # a browser cannot show the TIFF: the page shows its thumbnail and links the TIFF
        assert (report / f"scan01_{position:03d}.thumb.jpg").is_file()
        page = (report / f"scan01_{position:03d}.html").read_text()
        assert f"scan01_{position:03d}.thumb.jpg" in page and f"scan01_{position:03d}.tif" in page
    assert daemon.terminate() == 0


def test_the_openscan_layout_puts_the_jpeg_where_the_firmware_reads_it_and_the_16_bit_image_beside(rig, frames):
    config = rig.config(results_folder=rig.hot, results={"layout": "openscan"})
    daemon = rig.start(config)
    [stack] = write_openscan3_stacks(rig.hot, "owl", 1, {4: frames.raw[:3]}, status="completed", suffix=".dng")
    daemon.wait_event("stack.done", stack=stack, timeout=60)  # (its records are in hot/, not where rig looks)
    stacked = rig.hot / "owl" / "scan01" / "stacked"  # the two images, and nothing else of ours
    assert sorted(path.name for path in stacked.iterdir()) == ["stacked_scan01_004.jpg", "stacked_scan01_004.tif"]
    record = json.loads((rig.hot / STATE_FOLDER / "stacks" / "owl" / "scan01" / "stacked_scan01_004.json").read_text())
    assert [o["path"] for o in record["outputs"]] == ["owl/scan01/stacked/stacked_scan01_004.jpg",
                                                       "owl/scan01/stacked/stacked_scan01_004.tif"]
    jpeg = cv2.imread(str(stacked / "stacked_scan01_004.jpg"))
    deep = cv2.imread(str(stacked / "stacked_scan01_004.tif"), cv2.IMREAD_UNCHANGED)
    assert jpeg.shape == deep.shape == (240, 320, 3) and deep.dtype == np.uint16
    assert np.abs(jpeg.astype(float) - deep / 257).mean() < 3
    (stacked / "stacked_scan01_004.tif").unlink()  # an output deleted by hand: the stack is made again
    assert daemon.terminate() == 0
    daemon = rig.start(config)
    daemon.wait_event("stack.done", stack=stack, timeout=60)
    assert (stacked / "stacked_scan01_004.tif").is_file()
    assert daemon.terminate() == 0


def test_a_dng_that_is_still_being_written_is_not_stacked_until_it_is_whole(rig, frames):
    """On a share (polling: no close events), a DNG whose writer pauses longer than the settle time looks settled
    while half written; its structure says it is not whole, so the stack waits for it and succeeds."""
    daemon = rig.start(rig.config(observer={"mode": "polling", "poll_interval_seconds": 0.2},
                                  naming={"stack_size": 3}))
    folder = rig.hot / "owl" / "scan01"
    for k in range(2):
        write_frame(folder / openscan3_name(1, 0, k, ".dng"), frames.raw[k])
    data = frames.raw[2]
    done_writing = write_slowly(folder / openscan3_name(1, 0, 2, ".dng"), data, [len(data) // 3], pause=2.5)
    stack = openscan3_stack("owl", 1, 0)
    ready = daemon.wait_event("stack.ready", stack=stack, timeout=30)[0]
    assert event_time(ready) >= done_writing
    daemon.wait_done([stack], 60)
    assert daemon.events("stack.failed") == []
    assert daemon.terminate() == 0


def _bomb(dng: bytes) -> bytes:
    """A DNG whose header claims 60000 x 60000 px (3.6 Gpx), everything else unchanged."""
    from watcher.stacking.rawfile import walk_tiff

    data = bytearray(dng)
    ifd0 = walk_tiff(dng).ifds[0]
    for tag in (256, 257):
        struct.pack_into("<I", data, ifd0.offset + 2 + 12 * sorted(ifd0.tags).index(tag) + 8, 60_000)
    return bytes(data)


def test_bad_raw_input_fails_its_stack_with_one_line_and_the_daemon_carries_on(rig, frames):
    """Every kind of bad raw input gets a failed record with one clear line naming the file; the files are kept,
    and the good stack beside them is stacked."""
    jpeg_named_dng = frames.small[2]
    other_size = write_dng(None, np.full((120, 160, 3), 0.2, np.float32), camera=SyntheticCamera(model="imx519"))
    bad = {
        0: ((*frames.raw[:2], frames.raw[2][: len(frames.raw[2]) // 2]), "truncated or damaged"),
        1: ((*frames.raw[:2], jpeg_named_dng), "a JPEG file, not a raw file (renamed?)"),
        2: ((*frames.raw[:2], os.urandom(50_000)), "LibRaw"),  # garbage: not a TIFF, not anything LibRaw knows
        3: ((*frames.raw[:2], other_size), "size 160x120 differs from the reference"),
        4: ((*frames.raw[:2], _bomb(frames.raw[2])), "3600.0 MP, over the 120.0 MP limit"),
        5: (frames.raw[:3], None),
    }
    daemon = rig.start(rig.config(completeness={"settle_seconds": 0.5, "stack_timeout_seconds": 3.0}))
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {p: frames_ for p, (frames_, _) in bad.items()},
                                    status="completed", suffix=".dng")
    mixed = rig.hot / "owl" / "scan02"
    write_openscan3_stacks(rig.hot, "owl", 2, {0: frames.raw[:2]}, focus_stacks=3, status="completed", suffix=".dng")
    write_frame(mixed / openscan3_name(2, 0, 2), frames.small[2])
    stacks.append(openscan3_stack("owl", 2, 0))
    daemon.wait_for(lambda: set(stacks) <= set(rig.records()), 90, "a record for every stack")
    records = rig.records()
    for position, (_, message) in bad.items():
        record = records[stacks[position]]
        if message is None:
            assert record["status"] == "ok", record
            continue
        assert record["status"] == "failed" and message in record["error"], record
        assert "\n" not in record["error"] and record["error"].startswith("scan01_"), record["error"]
    assert "raw and other frames in one stack" in records[stacks[-1]]["error"]
    assert len(rig.hot_files()) >= 3 * 6 + 3  # every input kept
    assert daemon.alive
    assert daemon.terminate() == 0

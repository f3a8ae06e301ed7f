"""Object masks from a running daemon (``results.masks``): each mesher's naming, in both layouts, as outputs that
are made again when deleted; a template that would leave the results folder refused at start; a stack with
nothing in focus gets an empty mask and a warning."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.turntable import make_scene
from tests.e2e.conftest import REPORT_FOLDER, openscan3_name, write_frame, write_openscan3_stacks, write_scan_json
from watcher.report.refresher import QUIET_SECONDS
from watcher.stacking.mask import EMPTY_WARNING

LAYOUTS = ["colmap", "meshroom", "realitycapture", "metashape", "openmvs"]


def read_mask(path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2, path
    assert set(np.unique(mask)) <= {0, 255}, path
    return mask


def test_every_layout_names_the_mask_its_meshers_way_beside_mirror_results(rig, frames):
    config = rig.config(results={"masks": [*LAYOUTS, "{scan}/by-hand/{stem}-object.png"]},
                        observer={"rescan_seconds": 1.0})
    daemon = rig.start(config)
    [stack] = write_openscan3_stacks(rig.hot, "owl", 1, {7: frames.ring[:4]})
    daemon.wait_event("stack.done", stack=stack)

    scan = rig.results / "owl" / "scan01"
    expected = [
        rig.results / "masks" / "owl" / "scan01" / "scan01_007.jpg.png",  # colmap: a tree mirroring the images
        scan / "masks" / "scan01_007.png",  # meshroom
        scan / "scan01_007.jpg.mask.png",  # realitycapture: beside the image
        scan / "masks" / "scan01_007_mask.png",  # metashape
        scan / "masks" / "scan01_007.mask.png",  # openmvs
        scan / "by-hand" / "scan01_007-object.png",  # the template
    ]
    record = rig.records()[stack]
    result = cv2.imread(str(rig.results / record["output"]), cv2.IMREAD_COLOR)
    masks = [read_mask(path) for path in expected]
    assert all(mask.shape == result.shape[:2] for mask in masks)
    assert len({path.read_bytes() for path in expected}) == 1  # made once, written under each name
    assert 0.0 < record["mask"]["share"] < 1.0 and 0.0 <= record["mask"]["inferred_share"] <= 1.0
    listed = {entry["path"]: entry["bytes"] for entry in record["outputs"]}
    assert record["outputs"][0]["path"] == record["output"] == "owl/scan01/scan01_007.jpg"
    for path in expected:
        assert listed[str(path.relative_to(rig.results))] == path.stat().st_size

    assert [entry.get("kind") for entry in record["outputs"]] == [None] + ["mask"] * len(expected)

    page = rig.results / REPORT_FOLDER / "owl" / "scan01" / "scan01_007.html"  # the mask over the result
    daemon.wait_for(lambda: page.is_file() and "Object mask over the result" in page.read_text(),
                    QUIET_SECONDS + 30, "the stack's page with its mask")
    assert '<img class="mask" src="../../../../masks/owl/scan01/scan01_007.jpg.png"' in page.read_text()

    expected[0].unlink()  # a deleted mask is a deleted output: the stack is made again
    daemon.wait_event("result.missing", stack=stack)
    daemon.wait_event("stack.done", stack=stack, count=2)
    assert read_mask(expected[0]).shape == result.shape[:2]
    assert daemon.terminate() == 0


def test_in_the_openscan_layout_masks_go_to_the_scans_masks_folder_and_are_never_taken_for_frames(rig, frames):
    config = rig.config(results_folder=rig.hot, observer={"rescan_seconds": 1.0}, logging={"level": "debug"},
                        results={"layout": "openscan", "masks": [*LAYOUTS, "{scan}/masks/{name}.object.png"]})
    daemon = rig.start(config)
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.ring[:4], 1: frames.ring[1:5]})
    for stack in stacks:
        daemon.wait_event("stack.done", stack=stack, timeout=30)

    scan = rig.hot / "owl" / "scan01"
    names = {f"{stem}{suffix}" for stem in ("stacked_scan01_000", "stacked_scan01_001")
             for suffix in (".jpg.png", ".png", ".jpg.mask.png", "_mask.png", ".mask.png", ".jpg.object.png")}
    assert {path.name for path in (scan / "masks").iterdir()} == names
    assert {path.suffix for path in (scan / "stacked").iterdir()} == {".jpg"}  # the firmware's: no PNG, no record
    for name in names:
        read_mask(scan / "masks" / name)
    walks = len(daemon.events("scan.rescanned"))
    daemon.wait_event("scan.rescanned", count=walks + 1)  # a walk of the hot folder since, masks and all
    assert daemon.events("file.unplaced") == []
    assert {event["stack"] for event in daemon.events("stack.ready")} == set(stacks)  # masks are not frames
    assert daemon.terminate() == 0


def test_a_template_that_would_leave_the_results_folder_is_refused_at_start(rig):
    config = rig.config(results={"masks": ["colmap", "{scan}/../../{stem}.png"]})
    for command in ("config", "run"):
        done = rig.cli(command, config=config, timeout=30)
        assert done.returncode == 2, done
        assert "results.masks: '{scan}/../../{stem}.png'" in done.stderr
        assert "it leaves the results folder" in done.stderr
    assert not rig.results.exists() or not any(rig.results.rglob("*.png"))


def test_a_stack_with_nothing_in_focus_gets_an_empty_mask_and_a_warning(rig):
    """A lens cap: noise only. The stack is done; its mask is all backdrop, and the record says why."""
    scene = make_scene("capnoise", size=(480, 320))
    daemon = rig.start(rig.config(results={"masks": ["colmap"]}))
    folder = rig.hot / "cap" / "scan01"
    write_scan_json(folder, "running", len(scene.stack.frames))
    for focus, frame in enumerate(scene.stack.frames):
        data = (scene.stack.jpeg_bytes[focus] if scene.stack.jpeg_bytes
                else cv2.imencode(".jpg", frame)[1].tobytes())
        write_frame(folder / openscan3_name(1, 3, focus), data)
    stack = "cap/scan01/scan01_003"
    daemon.wait_event("stack.done", stack=stack)
    record = rig.records()[stack]
    assert record["status"] == "ok" and record["mask"]["empty"]
    assert EMPTY_WARNING in record["warnings"]
    mask = read_mask(rig.results / "masks" / "cap" / "scan01" / "scan01_003.jpg.png")
    assert mask.shape == (320, 480) and not mask.any()
    assert daemon.terminate() == 0

"""Where outputs go (watcher/layout.py, watcher/service/placement.py), and which links are followed on the way."""

from __future__ import annotations

import pytest

from watcher.service.naming import StackId
from watcher.service.observer import HotFolder
from watcher.service.placement import Placement, UnsafeFolder


def test_the_openscan_layout_keeps_records_and_depth_maps_out_of_the_scan_folder(tmp_path):
    paths = Placement(tmp_path, "openscan", "jpg").paths(StackId("owl/scan01", "scan01_007"))
    assert paths.image == tmp_path / "owl/scan01/stacked/stacked_scan01_007.jpg"
    assert paths.record == tmp_path / ".focus-watcher/stacks/owl/scan01/stacked_scan01_007.json"
    assert paths.depthmap == tmp_path / ".focus-watcher/stacks/owl/scan01/stacked_scan01_007.depth.png"
    mirror = Placement(tmp_path, "mirror", "png").paths(StackId("owl/scan01.zip", "scan01_007"))
    assert (mirror.image, mirror.record) == (tmp_path / "owl/scan01/scan01_007.png",
                                             tmp_path / "owl/scan01/scan01_007.json")



def test_a_raw_stack_gets_its_16_bit_image_as_the_result_or_beside_the_firmware_s_jpeg(tmp_path):
    """Mirror: the raw output format is the result's. OpenScan: the JPEG stays where the firmware reads it, the
    16-bit image goes beside it in ``stacked/`` (made there by prepare), the record where every record goes."""
    stack = StackId("owl/scan01", "scan01_007")
    mirror = Placement(tmp_path, "mirror", "jpg", raw_output_format="tif").paths(stack, raw=True)
    assert (mirror.image, mirror.deep_image) == (tmp_path / "owl/scan01/scan01_007.tif", None)
    assert mirror.record == Placement(tmp_path, "mirror", "jpg").paths(stack).record
    openscan = Placement(tmp_path, "openscan", "jpg", ("colmap",), raw_output_format="tif")
    paths = openscan.prepare(stack, raw=True)
    stacked = (tmp_path / "owl/scan01/stacked").resolve()
    assert (paths.image, paths.deep_image) == (stacked / "stacked_scan01_007.jpg", stacked / "stacked_scan01_007.tif")
    assert paths.record.parent == (tmp_path / ".focus-watcher/stacks/owl/scan01").resolve()
    assert paths.masks == ((tmp_path / "owl/scan01/masks").resolve() / "stacked_scan01_007.jpg.png",)
    jpeg_only = Placement(tmp_path, "openscan", "jpg", raw_output_format="jpg").paths(stack, raw=True)
    assert jpeg_only.deep_image is None and jpeg_only.image.name == "stacked_scan01_007.jpg"

def test_folders_named_in_the_settings_may_be_reached_through_links_and_links_inside_them_are_not_followed(
        tmp_path):
    """The rule for a scan folder reached through a symlinked parent: the hot and results folders the settings
    name are trusted, so a link on the way *to* them is resolved (``/home/pi/projects`` linking to
    ``/var/openscan3/projects``); a link *inside* them was put there by whoever writes there and may point
    anywhere, so a linked scan folder is never walked and a linked folder on the way to a result is refused."""
    real = tmp_path / "disk" / "projects"
    (real / "owl" / "scan01").mkdir(parents=True)
    (real / "owl" / "scan01" / "scan01_000_fs00.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "pi").symlink_to(tmp_path / "disk", target_is_directory=True)
    projects = tmp_path / "home" / "pi" / "projects"  # reached through a symlinked parent
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "scan02").mkdir(parents=True)
    (elsewhere / "scan02" / "scan02_000_fs00.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (real / "cat").symlink_to(elsewhere, target_is_directory=True)  # a project linked to another disk

    found = [(f.scan, f.name) for f in HotFolder(projects, (".jpg",)).walk()]
    assert found == [("owl/scan01", "scan01_000_fs00.jpg")]

    placement = Placement(projects, "openscan", "jpg")
    written = placement.prepare(StackId("owl/scan01", "scan01_000"))
    assert written.image.parent == real / "owl" / "scan01" / "stacked" and written.image.parent.is_dir()
    assert written.record.parent == real / ".focus-watcher" / "stacks" / "owl" / "scan01"
    with pytest.raises(UnsafeFolder, match="symbolic link"):
        placement.prepare(StackId("cat/scan02", "scan02_000"))
    assert sorted(p.name for p in elsewhere.iterdir()) == ["scan02"]
    assert list((elsewhere / "scan02").iterdir()) == [elsewhere / "scan02" / "scan02_000_fs00.jpg"]

"""Camera data for photogrammetry tools: tags added to EXIF blocks as OpenScan3 and real cameras write them, read
back with Pillow (an independent EXIF reader), and the result of a real stack carrying them."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
from PIL import Image

from tests.e2e.conftest import openscan3_exif, tiff_exif, with_exif
from watcher.config import CameraSettings, load_settings
from watcher.stacking.camera import fill_camera_exif, focal_length_35mm
from watcher.stacking.exif import ExifError, add_tags, read_tags

EXIF_IFD = 0x8769
MAKE, MODEL, ORIENTATION, SOFTWARE = 0x010F, 0x0110, 0x0112, 0x0131
FOCAL, FOCAL_35, EXPOSURE, ISO, DATE = 0x920A, 0xA405, 0x829A, 0x8827, 0x9003
PLANE_X, PLANE_Y, PLANE_UNIT = 0xA20E, 0xA20F, 0xA210
DEFAULTS = CameraSettings()


def pillow_read(exif: bytes) -> tuple[dict, dict]:
    """IFD0 and the Exif sub-IFD of ``exif`` as Pillow reads them (tag -> value)."""
    parsed = Image.Exif()
    parsed.load(b"Exif\x00\x00" + exif)
    return dict(parsed), dict(parsed.get_ifd(EXIF_IFD))


@pytest.mark.parametrize("big_endian", [True, False], ids=["big-endian", "little-endian"])
def test_an_openscan3_frame_gets_make_and_focal_data_and_keeps_everything_it_had(big_endian):
    """Hawkeye frame cropped as in OpenScan3 issue #131 (5732 x 3610 of 9152 x 6944 at 0.8 um): the 35 mm value
    is for that crop, 40 mm (the whole sensor would give 24)."""
    exif = openscan3_exif("arducam_64mp", big_endian=big_endian)
    filled, record = fill_camera_exif(exif, (5732, 3610), DEFAULTS)
    ifd0, sub = pillow_read(filled)
    assert (ifd0[MAKE], ifd0[MODEL], ifd0[ORIENTATION], ifd0[SOFTWARE]) == (
        "Arducam", "arducam_64mp", 1, "OpenScan3 (Picamera2)")
    assert (sub[EXPOSURE], sub[ISO], sub[DATE]) == (0.05, 100, "2026:07:18 19:22:04")
    assert (float(sub[FOCAL]), sub[FOCAL_35]) == (5.04, 40)
    assert (float(sub[PLANE_X]), float(sub[PLANE_Y]), sub[PLANE_UNIT]) == (12500.0, 12500.0, 3)
    assert filled[:2] == exif[:2]  # written in the frame's byte order
    assert record == {"model": "arducam_64mp", "source": "table", "kept": [], "notes": [], "added": {
        "Make": "Arducam", "FocalLength": 5.04, "FocalLengthIn35mmFilm": 40, "FocalPlaneXResolution": 12500.0,
        "FocalPlaneYResolution": 12500.0, "FocalPlaneResolutionUnit": 3}}


@pytest.mark.parametrize(("model", "size", "expected"), [
    ("arducam_64mp", (9152, 6944), 24),  # the whole Hawkeye sensor: 5.04 mm x 4.71
    ("arducam_64mp", (3610, 5732), 40),  # rotated upright: the diagonal, and so the value, is the same
    ("imx519", (4656, 3496), 26),  # 4.28 mm x 6.09
    ("imx519", (4190, 3146), 29),  # OpenScan3's default 90 % x 90 % crop, not 26
    ("imx708", (4608, 2592), 28),  # Camera Module 3: 4.74 mm x 5.85
    ("imx708_wide", (4608, 2592), 16),
])
def test_the_35mm_value_is_for_the_part_of_the_sensor_in_the_file(model, size, expected):
    filled, record = fill_camera_exif(openscan3_exif(model), size, DEFAULTS)
    assert pillow_read(filled)[1][FOCAL_35] == expected == record["added"]["FocalLengthIn35mmFilm"]


def test_tags_the_camera_wrote_are_kept_and_the_35mm_value_follows_its_focal_length():
    """An HQ camera frame that has Make and a 16 mm FocalLength, under settings that say 6 mm."""
    exif = tiff_exif({MAKE: "RaspberryPi", MODEL: "imx477"}, {FOCAL: (16, 1)})
    filled, record = fill_camera_exif(exif, (4056, 3040), CameraSettings(make="Other", focal_length_mm=6.0))
    ifd0, sub = pillow_read(filled)
    assert ifd0[MAKE] == "RaspberryPi" and float(sub[FOCAL]) == 16.0
    assert sub[FOCAL_35] == focal_length_35mm(16.0, (4056, 3040), 1.55) == 88  # RPi's 16 mm lens: 88
    assert record["kept"] == ["Make", "FocalLength"] and record["source"] == "table and settings"
    assert set(record["added"]) == {"FocalLengthIn35mmFilm", "FocalPlaneXResolution", "FocalPlaneYResolution",
                                    "FocalPlaneResolutionUnit"}


def test_the_hq_camera_without_a_lens_setting_gets_what_its_sensor_gives_and_a_note():
    filled, record = fill_camera_exif(openscan3_exif("imx477"), (3650, 2736), DEFAULTS)
    ifd0, sub = pillow_read(filled)
    assert ifd0[MAKE] == "Raspberry Pi" and round(float(sub[PLANE_X]), 2) == 6451.61
    assert FOCAL not in sub and FOCAL_35 not in sub
    assert record["notes"] == ["the imx477's lens is the user's: set stacking.camera.focal_length_mm"]


def test_a_focal_plane_resolution_of_the_cameras_own_is_not_given_a_unit_that_changes_it():
    exif = tiff_exif({MODEL: "imx519"}, {PLANE_X: (2000, 1)})  # in inches: EXIF's default unit
    filled, record = fill_camera_exif(exif, (4656, 3496), DEFAULTS)
    ifd0, sub = pillow_read(filled)
    assert float(sub[PLANE_X]) == 2000.0 and PLANE_Y not in sub and PLANE_UNIT not in sub
    assert sub[FOCAL_35] == 26 and ifd0[MAKE] == "Arducam"
    assert record["kept"] == ["FocalPlaneXResolution"]


def test_an_unknown_camera_without_settings_gets_nothing_and_with_settings_gets_them():
    exif = openscan3_exif("ov64a40")
    unchanged, record = fill_camera_exif(exif, (4000, 3000), DEFAULTS)
    assert unchanged == exif and record["added"] == {} and record["source"] is None
    assert record["notes"] == ["camera ov64a40 is not in the table and stacking.camera sets nothing: nothing added"]

    settings = CameraSettings(make="Arducam", focal_length_mm=5.0, pixel_pitch_um=1.008)
    filled, record = fill_camera_exif(exif, (4000, 3000), settings)
    ifd0, sub = pillow_read(filled)
    assert ifd0[MAKE] == "Arducam" and float(sub[FOCAL]) == 5.0
    assert sub[FOCAL_35] == focal_length_35mm(5.0, (4000, 3000), 1.008) == 43
    assert record["source"] == "settings" and len(record["added"]) == 6


def test_the_off_switch_leaves_the_exif_as_it_was():
    exif = openscan3_exif("imx519")
    off = load_settings(overrides={"stacking": {"camera": {"fill_exif": False}}}).stacking.camera
    unchanged, record = fill_camera_exif(exif, (4656, 3496), off)
    assert unchanged is exif and record["added"] == {}
    assert record["notes"] == ["off (stacking.camera.fill_exif = false)"]


def test_a_frame_larger_than_the_table_sensor_gets_no_pitch_derived_tags():
    filled, record = fill_camera_exif(openscan3_exif("imx519"), (6000, 4000), DEFAULTS)
    assert set(record["added"]) == {"Make", "FocalLength"}
    assert "larger than the imx519's sensor (4656x3496)" in record["notes"][0]
    assert FOCAL_35 not in pillow_read(filled)[1]


@pytest.mark.parametrize(("exif", "note"), [
    (None, "the reference frame has no EXIF to add to"),
    (b"JFIF garbage that is not TIFF", "not TIFF-structured"),
    (b"MM\x00*\x00\x00\x00\x08\x00\x05\x01\x10", "past the end"),  # IFD0 of 5 entries, cut after 2 bytes
    (b"II*\x00\x08\x00\x00\x00\x01\x00\x10\x01\x02\x00\x40\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
     "past the end"),  # a Model of 64 characters at an offset past the end
])
def test_bad_or_absent_exif_adds_nothing_and_says_why(exif, note):
    unchanged, record = fill_camera_exif(exif, (4656, 3496), DEFAULTS)
    assert unchanged is exif and record["added"] == {}
    assert note in record["notes"][0]


def test_a_real_cameras_exif_keeps_every_tag_thumbnail_and_makernote(pcb_stack):
    """The PCB frames' EXIF (a NOVATEK camera: Make, Model, FocalLength, a thumbnail in IFD1, GPS, a MakerNote)
    gains only what it lacked; every tag Pillow reads, in every directory, is unchanged."""
    _, types, blocks = cv2.imreadWithMetadata(str(pcb_stack[0]))
    exif = next(bytes(b) for t, b in zip(types, blocks) if t == cv2.IMAGE_METADATA_EXIF)
    filled, added = add_tags(exif, {"Make": "Other", "FocalLength": 1, "FocalPlaneResolutionUnit": 3})
    before, after = Image.Exif(), Image.Exif()
    before.load(b"Exif\x00\x00" + exif)
    after.load(b"Exif\x00\x00" + filled)
    assert added == [name for name in ("Make", "FocalLength", "FocalPlaneResolutionUnit")
                     if name not in read_tags(exif)]
    assert "Make" not in added and dict(after)[MAKE] == dict(before)[MAKE]
    assert {k: v for k, v in dict(after).items() if k != EXIF_IFD} == {
        k: v for k, v in dict(before).items() if k != EXIF_IFD}
    for ifd in (EXIF_IFD, 0x8825, 0xA005):  # Exif, GPS, Interop
        old, new = dict(before.get_ifd(ifd)), dict(after.get_ifd(ifd))
        assert {k: v for k, v in new.items() if not (k in (FOCAL, PLANE_UNIT) and k not in old)} == old
    assert after.get_ifd(0x0001) == before.get_ifd(0x0001)  # IFD1: the thumbnail's offset and length


def test_a_block_that_would_not_fit_a_jpeg_is_refused():
    exif = openscan3_exif("imx519") + b"\0" * 65_500
    with pytest.raises(ExifError, match="no room"):
        add_tags(exif, {"Make": "Arducam"})
    unchanged, record = fill_camera_exif(exif, (4656, 3496), DEFAULTS)
    assert unchanged is exif and "no room" in record["notes"][0]


def test_the_stack_command_writes_them_into_the_result(pcb_stack, tmp_path):
    """`focus-watcher stack` on OpenScan3 frames (IMX519) writes a JPEG whose EXIF has them, as the record says."""
    paths = []
    for index, source in enumerate(pcb_stack[:3]):
        small = cv2.resize(cv2.imread(str(source)), (320, 240), interpolation=cv2.INTER_AREA)
        paths.append(tmp_path / f"scan01_000_fs{index:02d}.jpg")
        paths[-1].write_bytes(with_exif(cv2.imencode(".jpg", small)[1].tobytes(), openscan3_exif("imx519")))
    out = tmp_path / "stacked.jpg"
    done = subprocess.run([sys.executable, "-m", "watcher.cli", "stack", *map(str, paths), "-o", str(out), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["camera_exif"]
    with Image.open(out) as image:
        exif = image.getexif()
        assert (exif[MAKE], exif[MODEL]) == ("Arducam", "imx519")
        sub = exif.get_ifd(EXIF_IFD)
    assert float(sub[FOCAL]) == 4.28 and sub[FOCAL_35] == focal_length_35mm(4.28, (320, 240), 1.22)
    assert record["added"]["FocalLengthIn35mmFilm"] == sub[FOCAL_35] and record["source"] == "table"

"""Is a raw file whole, and what its header says: DNGs written by PiDNG itself and by our synthetic camera in every
layout, cut anywhere, corrupted, renamed; the other raw containers; the header of a file's first bytes only."""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np
import pytest

from benchmarks.picamera_dng import SyntheticCamera, write_dng
from tests.conftest import DATA
from watcher.stacking.probe import ProbeError, probe_image, raw_is_complete
from watcher.stacking.rawfile import (
    NotTiff,
    Source,
    raw_header,
    raw_is_whole,
    tiff_is_whole,
    walk_tiff,
)

SCENE = np.random.default_rng(0).uniform(0, 0.8, (96, 128, 3)).astype(np.float32)
CAMERAS = {
    "strip-12": SyntheticCamera(), "tile-12": SyntheticCamera(layout="tile"),
    "strip-tiletags-12": SyntheticCamera(layout="strip+tiletags"), "strip-10": SyntheticCamera(bits=10, black=64),
    "strip-16": SyntheticCamera(bits=16, black=4096), "big-endian": SyntheticCamera(byteorder=">"),
    "preview-ifd0": SyntheticCamera(preview_ifd0=True), "16-row-strips": SyntheticCamera(rows_per_strip=16),
}


def pidng_files() -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in sorted((DATA / "pidng").glob("*.dng"))}
    assert len(files) == 9, "tests/data/pidng is incomplete (restore it from git)"
    return files


FILES = {**pidng_files(), **{name: write_dng(None, SCENE, camera=camera) for name, camera in CAMERAS.items()}}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_layout_is_whole_and_its_header_read(name):
    whole, why = tiff_is_whole(FILES[name])
    assert whole, why
    header = raw_header(FILES[name])
    assert header.dng and header.cfa and header.bits in (10, 12, 16) and header.pixels in (96 * 64, 128 * 96)
    assert header.stray_tile_tags == ("2022" in name or "tiletags" in name)


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("cut", [0.999, 0.9, 0.5, 0.1, "inside IFD0", "last byte", 7, 3])
def test_a_dng_cut_anywhere_is_not_whole(name, cut):
    data = FILES[name]
    size = {"inside IFD0": 8 + 40, "last byte": len(data) - 1}.get(cut, cut)
    if isinstance(size, float):
        size = int(len(data) * size)
    whole, why = tiff_is_whole(data[:size])
    assert not whole and why


def test_the_check_reads_the_structure_only_through_a_file_descriptor(tmp_path):
    """What the daemon does for every new DNG: open it and read its IFDs at offsets -- not its pixels."""
    path = tmp_path / "a.dng"
    path.write_bytes(write_dng(None, np.zeros((1024, 1536, 3), np.float32)))
    reads = []

    class Counting(Source):
        def read(self, offset: int, length: int) -> bytes:
            reads.append(length)
            return super().read(offset, length)

    with open(path, "rb") as handle:
        assert tiff_is_whole(Counting(fd=handle.fileno()))[0]
        assert raw_is_complete(handle.fileno())
    assert sum(reads) < 2000 < path.stat().st_size // 1000
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)
    with open(path, "rb") as handle:
        assert not raw_is_complete(handle.fileno())


def test_a_file_sized_first_and_filled_in_place_fools_the_structure_alone():
    """Why the daemon also waits for the size to settle and the writer to close: a DNG pre-sized with zeros and
    filled in order is whole by its structure as soon as its IFDs are written (PiDNG, Picamera2 and OpenScan3
    write header first, then pixels, into a growing file: they never look like this)."""
    data = bytearray(FILES["strip-12"])
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    assert tiff_is_whole(bytes(data))[0]


def test_trailing_bytes_are_allowed():
    assert tiff_is_whole(FILES["strip-12"] + bytes(100))[0]


def test_renamed_images_garbage_and_empty_files_are_not_raw():
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    assert tiff_is_whole(jpeg) == (False, "a JPEG file, not a raw file (renamed?)")
    assert "a PNG file" in tiff_is_whole(png)[1]
    assert not tiff_is_whole(os.urandom(5000))[0] and not tiff_is_whole(b"")[0]
    with pytest.raises(NotTiff, match="JPEG"):
        raw_header(jpeg)


def test_a_plain_tiff_is_whole_but_not_raw():
    tiff = cv2.imencode(".tif", np.zeros((16, 16, 3), np.uint16))[1].tobytes()
    assert tiff_is_whole(tiff)[0]
    header = raw_header(tiff)
    assert not header.dng and not header.cfa and (header.width, header.height, header.bits) == (16, 16, 16)
    assert probe_image(tiff).format == "tiff"


def _patched(data: bytes, offset: int, value: int, fmt: str = "<I") -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _entry(data: bytes, tag: int) -> int:
    ifd0 = walk_tiff(data).ifds[0]
    return ifd0.offset + 2 + 12 * sorted(ifd0.tags).index(tag)


def test_corrupt_pointers_are_caught():
    data = FILES["strip-12"]
    ifd0 = walk_tiff(data).ifds[0]
    assert not tiff_is_whole(_patched(data, 4, len(data) + 10))[0]  # IFD0 past the end
    assert not tiff_is_whole(_patched(data, _entry(data, 273) + 8, len(data) - 10))[0]  # the strip past the end
    assert "loop" in tiff_is_whole(_patched(data, ifd0.offset + 2 + 12 * len(ifd0.tags), ifd0.offset))[1]
    assert "entries" in tiff_is_whole(_patched(data, ifd0.offset, 60000, "<H"))[1]


def test_a_bomb_header_answers_its_size_before_anything_is_decoded():
    """100000 x 100000 declared, the strip inside the file: the header says 10 Gpx (refused by the pixel limit
    before decoding), and the structure is not whole anyway (the strip cannot hold that many rows)."""
    data = FILES["strip-12"]
    for tag in (256, 257):
        data = _patched(data, _entry(data, tag) + 8, 100_000)
    assert raw_header(data).pixels == 10**10
    whole, why = tiff_is_whole(data)
    assert not whole and "holds only" in why


@pytest.mark.parametrize("name", ["pidng-pypi-12bit.dng", "pidng-2022-10bit.dng", "preview-ifd0", "16-row-strips"])
def test_the_header_is_read_from_the_first_bytes_alone(name):
    """What the daemon reads to estimate a stack's memory: the first 256 KiB; these headers fit in 1 KiB."""
    info = probe_image(FILES[name][:1024], whole_file=False)
    assert info.format == "dng" and info.is_raw and info.pixels in (96 * 64, 128 * 96)
    assert not tiff_is_whole(FILES[name][:1024])[0]  # the same bytes taken as a whole file: truncated


def _bmff(*boxes: tuple[bytes, int]) -> bytes:
    return b"".join(struct.pack(">I4s", 8 + size, kind) + bytes(size) for kind, size in boxes)


def test_cr3_is_whole_when_its_boxes_tile_the_file():
    """Written from the ISO BMFF structure (no CR3 sample with a licence that allows keeping it here)."""
    cr3 = _bmff((b"ftyp", 16), (b"moov", 200), (b"mdat", 5000))
    assert raw_is_whole(cr3)[0]
    assert not raw_is_whole(cr3[:-1])[0] and not raw_is_whole(cr3[:300])[0]
    assert "cannot be checked" in raw_is_whole(cr3[:232] + struct.pack(">I4s", 0, b"mdat"))[1]
    with pytest.raises(ProbeError, match="LibRaw"):
        probe_image(cr3, whole_file=False)


def test_raf_is_whole_when_its_blocks_lie_inside():
    """Written from Fujifilm's header layout: three (offset, length) pairs at bytes 84..107."""
    raf = bytearray(b"FUJIFILMCCD-RAW 0201FF383501" + bytes(3000))
    struct.pack_into(">6I", raf, 84, 200, 500, 700, 300, 1000, 2000)
    assert raw_is_whole(bytes(raf))[0]
    assert "raw data" in raw_is_whole(bytes(raf[:2500]))[1] and not raw_is_whole(bytes(raf[:100]))[0]


def test_other_containers_have_no_structure_to_check():
    """CRW, X3F, MRW: LibRaw reads them; the settle time alone decides they are whole."""
    assert raw_is_whole(b"\x00MRM" + bytes(100)) == (True, "no structure to check")

"""Load stage: header probing, decoding, and every bad input giving a clear error that names the frame."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from benchmarks.unprivileged import unprivileged
from tests.conftest import REPO, with_orientation
from watcher.stacking.frames import decode_frame, read_frame
from watcher.stacking.probe import ProbeError, jpeg_is_complete, probe_image
from watcher.stacking.sources import FrameError, FrameSource, FrameUnavailable, max_file_bytes, read_header

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize(("ext", "dtype", "fmt", "bits"), [
    (".jpg", np.uint8, "jpeg", 8), (".png", np.uint8, "png", 8), (".png", np.uint16, "png", 16),
    (".tif", np.uint8, "tiff", 8), (".tif", np.uint16, "tiff", 16),
])
def test_probe_reads_size_and_depth_from_the_header(ext, dtype, fmt, bits):
    image = np.zeros((30, 50, 3), dtype)
    info = probe_image(encode(image, ext))
    assert (info.format, info.width, info.height, info.bits) == (fmt, 50, 30, bits)


def test_probe_refuses_truncated_jpeg_empty_and_garbage():
    jpeg = encode(IMAGE, ".jpg")
    assert jpeg_is_complete(jpeg) and jpeg_is_complete(jpeg + b"\0" * 10)
    with pytest.raises(ProbeError, match="truncated JPEG"):
        probe_image(jpeg[: len(jpeg) * 2 // 3])
    with pytest.raises(ProbeError, match="empty"):
        probe_image(b"")
    with pytest.raises(ProbeError, match="not a JPEG, PNG or TIFF"):
        probe_image(RNG.integers(0, 256, 1000, dtype=np.uint8).tobytes())


def test_16_bit_png_and_tiff_keep_16_bit_samples():
    image16 = RNG.integers(0, 65536, (40, 30, 3), dtype=np.uint16)
    for ext in (".png", ".tif"):
        frame = decode_frame(encode(image16, ext), "f" + ext, max_pixels=10**6)
        assert frame.pixels.dtype == np.uint16 and frame.max_value == 65535
        np.testing.assert_array_equal(frame.pixels, image16)


def test_grey_frames_become_three_channels():
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    frame = decode_frame(encode(grey, ".png"), "grey.png", max_pixels=10**6)
    assert frame.pixels.shape == (20, 30, 3)
    np.testing.assert_array_equal(frame.pixels[..., 1], grey)


def test_exif_orientation_is_applied_and_exif_kept():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = 255  # left stripe
    frame = decode_frame(with_orientation(encode(image, ".jpg"), 6), "portrait.jpg", max_pixels=10**6)
    assert frame.pixels.shape == (40, 20, 3)  # rotated 90 degrees clockwise
    assert frame.pixels[:10].mean() > 200 and frame.pixels[-10:].mean() < 50  # left stripe is now on top
    assert frame.exif is not None and frame.exif.startswith(b"II*\x00")


def test_pixel_limit_refuses_a_bomb_before_decoding():
    # A real JPEG whose header claims 20000 x 20000: refused from the header alone.
    jpeg = bytearray(encode(IMAGE, ".jpg"))
    sof = jpeg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 20000, 20000)
    with pytest.raises(FrameError, match=r"bomb.jpg: 20000x20000 is 400.0 MP, over the 120.0 MP limit"):
        decode_frame(bytes(jpeg), "bomb.jpg", max_pixels=120_000_000)


def test_undecodable_data_names_the_frame():
    png = bytearray(encode(IMAGE, ".png"))
    png[60:200] = b"\x00" * 140  # damage the compressed stream, keep the header
    with pytest.raises(FrameError, match=re.escape("broken.png: cannot decode")):
        decode_frame(bytes(png), "broken.png", max_pixels=10**6)


def test_read_frame_from_file_and_from_zip_member(tmp_path):
    data = encode(IMAGE, ".png")
    (tmp_path / "a.png").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "scan.zip", "w") as archive:
        archive.writestr("proj_1-0.png", data)
    from_file = read_frame(FrameSource.of(tmp_path / "a.png"), max_pixels=10**6)
    from_zip = read_frame(FrameSource("scan.zip:proj_1-0.png", tmp_path / "scan.zip", "proj_1-0.png"), max_pixels=10**6)
    np.testing.assert_array_equal(from_file.pixels, IMAGE)
    np.testing.assert_array_equal(from_zip.pixels, IMAGE)
    with pytest.raises(FrameUnavailable, match=re.escape("missing.jpg: cannot read")):
        read_frame(FrameSource.of(tmp_path / "missing.jpg"), max_pixels=10**6)


# --- what is opened, and how much is read (untrusted files) -----------------------------------------------


def test_links_fifos_and_devices_are_refused_after_opening_never_followed_or_waited_on(tmp_path):
    data = encode(IMAGE, ".jpg")
    (tmp_path / "real.jpg").write_bytes(data)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jpg")  # nobody writes it: a plain open() would block forever
    for name, what in (("link.jpg", "symbolic link"), ("zero.jpg", "symbolic link"), ("fifo.jpg", "a FIFO")):
        with pytest.raises(FrameError, match=f"{name}: .*{what}"):
            read_frame(FrameSource.of(tmp_path / name), max_pixels=10**6)


def test_a_file_larger_than_any_frame_within_the_pixel_limit_is_not_read(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.write(encode(IMAGE, ".jpg"))
        handle.truncate(max_file_bytes(1000) + 1)  # sparse: costs no disk
    with pytest.raises(FrameError, match=r"huge.jpg: \d+ bytes, over the limit"):
        read_frame(FrameSource.of(path), max_pixels=1000)


def test_a_zip_bomb_member_fails_its_frame_and_a_header_read_inflates_only_the_header(tmp_path):
    bomb = tmp_path / "scan.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("owl_1_1-0.jpg", "w", force_zip64=True) as member:
            member.write(encode(IMAGE, ".jpg")[:-2])
            zeros = bytes(1 << 20)
            for _ in range(256):  # 256 MiB of zeros: deflates to about 256 KiB
                member.write(zeros)
    source = FrameSource("owl_1_1-0.jpg", bomb, "owl_1_1-0.jpg")
    with pytest.raises(FrameError, match=r"owl_1_1-0.jpg: the zip says it inflates .* \(a zip bomb\?\)"):
        read_frame(source, max_pixels=10**9)
    assert read_header(source).width == IMAGE.shape[1]  # 256 KiB inflated, not 256 MiB
    with pytest.raises(FrameError, match="over the limit"):
        read_frame(source, max_pixels=1000)


def test_a_frame_that_changed_since_it_was_seen_is_unavailable_not_bad(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(IMAGE, ".png"))
    info = path.stat()
    seen = FrameSource(path.name, path, None, (info.st_size, info.st_mtime_ns))
    assert read_frame(seen, max_pixels=10**6).pixels.shape == IMAGE.shape
    path.write_bytes(encode(IMAGE[::-1], ".png") + b"x")
    with pytest.raises(FrameUnavailable, match=re.escape("a.png: changed since it was seen")):
        read_frame(seen, max_pixels=10**6)


def test_permission_denied_is_unavailable_not_bad(tmp_path):
    """EACCES (a permission fixed a minute later, a share that blips) is the environment: the stack waits."""
    path = tmp_path / "a.jpg"
    path.write_bytes(encode(IMAGE, ".jpg"))
    path.chmod(0)
    code = ("import sys; from pathlib import Path; from watcher.stacking.frames import read_frame\n"
            "from watcher.stacking.sources import FrameError, FrameSource, FrameUnavailable\n"
            "try:\n    read_frame(FrameSource.of(Path(sys.argv[1])), max_pixels=10**6)\n"
            "except FrameUnavailable as exc:\n    print('unavailable', exc)\n"
            "except FrameError as exc:\n    print('bad', exc)\n")
    done = subprocess.run(unprivileged([sys.executable, "-c", code, str(path)]), capture_output=True, text=True,
                          cwd=REPO, check=False)
    assert done.stdout.strip() == "unavailable a.jpg: cannot read: Permission denied", done.stderr

"""Load stage: header probing, decoding, and every bad input giving a clear error that names the frame."""

from __future__ import annotations

import struct
import zipfile

import cv2
import numpy as np
import pytest

from watcher.stacking.frames import FrameError, FrameSource, decode_frame, read_frame
from watcher.stacking.probe import ProbeError, jpeg_is_complete, probe_image

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only Orientation (the way cameras tag portrait shots)."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    return jpeg[:2] + app1 + jpeg[2:]


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
    with pytest.raises(FrameError, match="broken.png: cannot decode"):
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
    with pytest.raises(FrameError, match="missing.jpg: cannot read"):
        read_frame(FrameSource.of(tmp_path / "missing.jpg"), max_pixels=10**6)

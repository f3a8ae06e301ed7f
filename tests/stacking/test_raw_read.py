"""Reading raw frames: our own reader of Picamera2's DNGs equals LibRaw's, other DNGs go through LibRaw, and every
bad input is a FrameError with one line that names the file and says what is wrong."""

from __future__ import annotations

import io
import os
import time

import cv2
import numpy as np
import pytest
import rawpy

from benchmarks.picamera_dng import SyntheticCamera, patch_scene, write_dng
from tests.stacking.test_rawfile import FILES
from watcher.stacking.frames import decode_frame
from watcher.stacking.raw import RawPixels, decode_raw, raw_colour, unpack_rows
from watcher.stacking.sources import FrameError

LIMIT = 10**8


def libraw_cfa(data: bytes) -> np.ndarray:
    with rawpy.imread(io.BytesIO(data)) as raw:
        return raw.raw_image_visible.copy()


@pytest.mark.parametrize("name", sorted(name for name in FILES if "2022" not in name and "tiletags" not in name))
def test_our_reader_reads_what_libraw_reads(name):
    decoded = decode_raw(FILES[name], max_pixels=LIMIT)
    assert isinstance(decoded.pixels, RawPixels)  # read here, not by LibRaw
    assert np.array_equal(decoded.pixels.cfa, libraw_cfa(FILES[name]))


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_pidngs_2022_layout_which_libraw_cannot_read_is_read_and_developed(bits):
    """PiDNG 2022-08 .. 2025-01 wrote strips with TileWidth/TileLength tags: LibRaw fails on them. Our reader
    reads the strips; LibRaw reads the colour from a copy with the two tags renamed."""
    quirk, clean = FILES[f"pidng-2022-{bits}bit.dng"], FILES[f"pidng-master-{bits}bit.dng"]
    with pytest.raises(rawpy.LibRawError):
        libraw_cfa(quirk)
    assert np.array_equal(decode_raw(quirk, max_pixels=LIMIT).pixels.cfa, libraw_cfa(clean))
    colour, reference = raw_colour(quirk, max_pixels=LIMIT), raw_colour(clean, max_pixels=LIMIT)
    assert np.array_equal(colour.multipliers, reference.multipliers)
    assert np.array_equal(colour.camera_to_rgb, reference.camera_to_rgb)


@pytest.mark.parametrize("name", sorted(name for name in FILES if name.startswith("pidng")))
def test_dngs_written_by_pidng_develop_to_the_scenes_colours(name):
    _, colours = patch_scene()
    rgb = np.asarray(decode_raw(FILES[name], max_pixels=LIMIT).pixels)[..., ::-1].astype(float) / 65535
    means = rgb.reshape(4, 16, 6, 16, 3)[:, 4:12, :, 4:12].mean(axis=(1, 3))
    assert np.abs(means - colours).max() < 2e-3


def test_dngs_our_reader_leaves_to_libraw_are_read_by_it():
    """A linearisation table (LibRaw applies it) or a LinearRaw image (three samples per pixel: LibRaw develops
    it whole, with our settings): the colours come out the same."""
    scene, colours = patch_scene()
    for camera in (SyntheticCamera(linearization=True), SyntheticCamera(bits=16, black=4096, linear_raw=True)):
        decoded = decode_raw(write_dng(None, scene, camera=camera), max_pixels=LIMIT)
        assert isinstance(decoded.pixels, np.ndarray if camera.linear_raw else RawPixels)
        rgb = np.asarray(decoded.pixels)[..., ::-1].astype(float) / 65535
        assert np.abs(rgb.reshape(4, 16, 6, 16, 3)[:, 4:12, :, 4:12].mean(axis=(1, 3)) - colours).max() < 1e-3


@pytest.mark.parametrize(("bits", "width"), [(14, 96), (10, 98), (12, 97), (8, 33)])
def test_unpacking_any_depth_and_width(bits, width):
    rng = np.random.default_rng(bits)
    samples = rng.integers(0, 1 << bits, (5, width), dtype=np.uint16)
    bitstring = "".join("".join(format(int(v), f"0{bits}b") for v in row).ljust(-(-width * bits // 8) * 8, "0")
                        for row in samples)
    packed = int(bitstring, 2).to_bytes(len(bitstring) // 8, "big")
    assert np.array_equal(unpack_rows(packed, width, 5, bits), samples)


def test_previews_are_half_size_developed_and_display_encoded():
    """The measuring pass sees a raw frame as it sees a JPEG: reduced, display-encoded; the merge sees it whole
    and linear, demosaicked where it reads."""
    scene, _ = patch_scene()
    data = write_dng(None, scene, camera=SyntheticCamera())
    preview = decode_frame(data, "a.dng", max_pixels=LIMIT, reduce=2)
    whole = decode_frame(data, "a.dng", max_pixels=LIMIT)
    assert preview.pixels.shape == (32, 48, 3) and preview.full_shape == (64, 96) and not preview.linear
    assert whole.linear and whole.pixels.shape == (64, 96, 3) and whole.pixels.dtype == np.uint16
    grey = float(np.asarray(whole.pixels)[56:64, 80:96].mean()) / 65535  # the ramp's last patch: linear 0.9
    assert grey == pytest.approx(0.9, abs=2e-3)
    assert float(preview.pixels[28:32, 40:48].mean()) / 65535 == pytest.approx(0.9 ** (1 / 2.2), abs=2e-3)
    assert np.array_equal(whole.pixels[10:20, 30:41], np.asarray(whole.pixels)[10:20, 30:41])


# --- bad input ---------------------------------------------------------------------------------------------


def refused(data: bytes, name: str = "scan01_000_fs00.dng", **kwargs) -> str:
    with pytest.raises(FrameError) as caught:
        decode_frame(data, name, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message
    return message


def test_a_truncated_dng_says_where_it_ends():
    data = FILES["strip-12"]
    assert "truncated" in refused(data[: len(data) // 2])
    assert "truncated" in refused(data[:100])


def test_a_jpeg_named_dng_is_refused_as_what_it_is():
    jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    assert refused(jpeg).endswith("a JPEG file, not a raw file (renamed?)")
    assert refused(b"").endswith("an empty file")


def test_a_format_libraw_does_not_know():
    assert refused(os.urandom(4096), "IMG_0001.cr2").endswith("a raw format or camera LibRaw does not know")
    not_a_camera = write_dng(None, np.zeros((64, 96, 3), np.float32), camera=SyntheticCamera())[8:]  # no header
    assert "LibRaw does not know" in refused(b"\x00MRM" + not_a_camera, "x.mrw")


def test_a_bomb_is_refused_from_its_header_before_anything_is_decoded():
    data = bytearray(FILES["strip-12"])
    from tests.stacking.test_rawfile import _entry

    for tag in (256, 257):
        data[_entry(bytes(data), tag) + 8 : _entry(bytes(data), tag) + 12] = (60_000).to_bytes(4, "little")
    begin = time.perf_counter()
    assert "3600.0 MP, over the 100.0 MP limit" in refused(bytes(data))
    assert time.perf_counter() - begin < 0.5


def test_a_frame_of_another_camera_mode_is_refused_against_the_stacks_development():
    """A 10-bit frame (white level 1023) in a stack developed for 12-bit frames, or another CFA order, would be
    developed wrongly by the stack's settings: refused, saying both."""
    scene, _ = patch_scene()
    stack_colour = raw_colour(write_dng(None, scene, camera=SyntheticCamera()), max_pixels=LIMIT)
    other = write_dng(None, scene, camera=SyntheticCamera(bits=10, black=64))
    message = refused(other, colour=stack_colour)
    assert "unlike the reference frame's (CFA RGGB, white level 1023 against CFA RGGB, white level 4095)" in message
    assert "CFA BGGR" in refused(write_dng(None, scene, camera=SyntheticCamera(cfa="BGGR")), colour=stack_colour)


@pytest.mark.parametrize("warp", [
    np.array([[1.004, 0.003, -2.7], [-0.002, 0.997, 3.1], [0.0, 0.0, 1.0]]),  # breathing, rotation, shift
    np.array([[1.0, 0.0, 30.0], [0.0, 1.0, -20.0], [1e-5, -2e-5, 1.0]]),  # a perspective reaching past the edges
], ids=("affine", "perspective"))
def test_a_raw_frame_is_warped_from_just_the_part_a_block_reads(warp):
    """The merge asks a raw frame only for the rectangle a block maps to: the same values as warping the whole
    developed frame, at the frame's edges too (where the border is replicated)."""
    from tests.stacking.test_develop import texture
    from watcher.stacking.align import warp_block

    pixels = decode_raw(write_dng(None, texture(), camera=SyntheticCamera()), max_pixels=LIMIT).pixels
    whole = np.asarray(pixels)
    for rows, cols in ((slice(0, 64), slice(0, 256)), (slice(100, 192), slice(37, 111)), (slice(180, 192),
                                                                                          slice(200, 256))):
        from_part = warp_block(pixels, warp, rows, cols)
        assert np.abs(from_part.astype(int) - warp_block(whole, warp, rows, cols)).max() <= 1

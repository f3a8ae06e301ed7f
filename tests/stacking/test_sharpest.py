"""The stand-in for a failed stack: the sharpest frame, stored as every result is (upright, EXIF orientation 1)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from benchmarks.picamera_dng import SyntheticCamera, patch_scene, write_dng
from tests.conftest import camera_orientation, with_camera_orientation
from watcher.config import StackingSettings
from watcher.stacking.metadata import srgb_profile
from watcher.stacking.pipeline import stack_to_file
from watcher.stacking.sharpest import fallback_image, sharpest_frame
from watcher.stacking.sources import FrameSource

MAX_PIXELS = int(StackingSettings().max_megapixels * 1e6)


def sharpest_of(tmp_path, frames: list[bytes]):
    sources = []
    for index, data in enumerate(frames):
        (tmp_path / f"f{index}.jpg").write_bytes(data)
        sources.append(FrameSource.of(tmp_path / f"f{index}.jpg"))
    return sharpest_frame(sources, StackingSettings())


def test_an_upright_camera_jpeg_stands_in_as_it_is(pcb_stack, tmp_path):
    frames = [p.read_bytes() for p in pcb_stack[:3]]
    assert {camera_orientation(data) for data in frames} == {1}
    best = sharpest_of(tmp_path, frames)
    lossless = frames[best.index]  # the camera's own file
    assert fallback_image(best, "jpg", 95, max_pixels=MAX_PIXELS) == lossless


def test_a_turned_camera_jpeg_stands_in_rotated_upright_with_orientation_1(pcb_stack, tmp_path):
    """Orientation 8 (turned 90 degrees, to be rotated counter-clockwise when shown): every real result of the
    scan has its pixels rotated and orientation 1, so the stand-in must too, not ask a viewer to rotate it."""
    frames = [with_camera_orientation(p.read_bytes(), 8) for p in pcb_stack[:3]]
    best = sharpest_of(tmp_path, frames)
    stored = cv2.imread(str(pcb_stack[best.index]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert stored.shape == (1536, 2048, 3)
    for fmt in ("jpg", "png"):
        data = fallback_image(best, fmt, 95, max_pixels=MAX_PIXELS)
        assert camera_orientation(data) == 1, fmt
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert pixels.shape == (2048, 1536, 3), fmt  # stored upright
        upright = cv2.rotate(stored, cv2.ROTATE_90_COUNTERCLOCKWISE)
        assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3, fmt  # the same picture, turned
        assert b"NOVATEK" in data[:1 << 16], fmt  # the rest of the camera's EXIF kept


def test_a_raw_frame_stands_in_as_a_raw_stack_s_result_is_stored(tmp_path):
    """Developed whole, sRGB-encoded, tagged with our sRGB profile, 16-bit as TIFF, its pixels and its Orientation
    as the DNG has them (a raw stack's result keeps sensor orientation too); never the DNG's own bytes."""
    scene, _ = patch_scene(rows=4, cols=6, patch=32)
    sources = []
    for index in range(2):
        path = tmp_path / f"scan01_000_fs{index:02d}.dng"
        write_dng(path, scene * (0.5 + 0.3 * index), camera=SyntheticCamera(orientation=6, model="imx519"))
        sources.append(FrameSource.of(path))
    best = sharpest_frame(sources, StackingSettings())
    assert best is not None and best.name.endswith(".dng")
    for fmt in ("tif", "jpg"):
        stack_to_file(sources, tmp_path / f"stacked.{fmt}", StackingSettings(output_format=fmt))
        data = fallback_image(best, fmt, 95, max_pixels=MAX_PIXELS)
        with Image.open(io.BytesIO(data)) as image, Image.open(tmp_path / f"stacked.{fmt}") as stacked:
            assert image.getexif()[274] == stacked.getexif()[274] == 6, fmt
            assert image.info["icc_profile"] == srgb_profile(), fmt
            assert image.size == stacked.size and image.mode == stacked.mode, fmt
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == (np.uint16 if fmt == "tif" else np.uint8), fmt

"""Developing raw frames: LibRaw's maths (with the settings the issue asks for), done block by block; the scene's
colour and brightness come back exactly, highlights clip to white, and nothing depends on a frame's content."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rawpy

from benchmarks.picamera_dng import SyntheticCamera, patch_scene, write_dng
from watcher.stacking.develop import RawColour, develop_block, develop_half

_LIBRAW = {"use_camera_wb": True, "no_auto_bright": True, "gamma": (1, 1), "output_bps": 16, "user_flip": 0,
           "adjust_maximum_thr": 0.0, "highlight_mode": rawpy.HighlightMode.Clip}
CAMERAS = [SyntheticCamera(), SyntheticCamera(bits=10, black=64, cfa="BGGR"),
           SyntheticCamera(bits=16, black=4096, cfa="GRBG"), SyntheticCamera(cfa="GBRG", gains=(0.8, 1.6))]


def texture(height: int = 192, width: int = 256) -> np.ndarray:
    """A linear scene with edges at every angle and colour (what demosaicking is tested on)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rings = 0.5 + 0.45 * np.sin((x - width / 2) ** 2 / 90 + (y - height / 2) ** 2 / 70)
    return np.stack([rings, 0.5 + 0.4 * np.sin(x / 7), 0.5 + 0.4 * np.cos(y / 5 + x / 11)], axis=-1) ** 2.2


def opened(data: bytes) -> tuple[np.ndarray, RawColour]:
    with rawpy.imread(io.BytesIO(data)) as raw:
        return raw.raw_image_visible.copy(), RawColour.of(raw)


def libraw(data: bytes, **params) -> np.ndarray:
    """LibRaw's own develop, BGR uint16."""
    with rawpy.imread(io.BytesIO(data)) as raw:
        return raw.postprocess(**{**_LIBRAW, **params})[..., ::-1]


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c.cfa}-{c.bits}-R{c.gains[0]}")
def test_half_size_is_libraws_half_size(camera):
    data = write_dng(None, texture(), camera=camera)
    cfa, colour = opened(data)
    difference = np.abs(develop_half(cfa, colour).astype(int) - libraw(data, half_size=True))
    assert difference.max() <= 3  # of 65535: LibRaw truncates where we round


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"{c.cfa}-{c.bits}-R{c.gains[0]}")
def test_the_full_develop_is_libraws_ppg_but_at_the_frames_edges(camera):
    data = write_dng(None, texture(), camera=camera)
    cfa, colour = opened(data)
    ours = develop_block(cfa, colour, slice(0, cfa.shape[0]), slice(0, cfa.shape[1]))
    theirs = libraw(data, demosaic_algorithm=rawpy.DemosaicAlgorithm.PPG)
    inside = np.abs(ours.astype(int) - theirs)[6:-6, 6:-6]  # LibRaw interpolates its outer 3 px bilinearly
    assert np.median(inside) == 0 and np.percentile(inside, 99.9) <= 2


def test_any_block_develops_as_the_whole_frame():
    data = write_dng(None, texture(), camera=SyntheticCamera(cfa="GRBG"))
    cfa, colour = opened(data)
    whole = develop_block(cfa, colour, slice(0, 192), slice(0, 256))
    blocks = np.zeros_like(whole)
    for top in range(0, 192, 37):  # odd sizes and offsets: every CFA phase at a block's corner
        for left in range(0, 256, 51):
            rows, cols = slice(top, min(top + 37, 192)), slice(left, min(left + 51, 256))
            blocks[rows, cols] = develop_block(cfa, colour, rows, cols)
    assert np.abs(blocks.astype(int) - whole).max() <= 1  # float32 sums in another order: an odd rounding


@pytest.mark.parametrize("camera", [SyntheticCamera(), SyntheticCamera(bits=10, black=64),
                                    SyntheticCamera(bits=16, black=4096)], ids=("12-bit", "10-bit", "16-bit"))
def test_colour_and_brightness_are_the_scenes(camera):
    """The camera's white balance is not 1 (R 1.9, B 1.6) and its matrix not the identity: developed, every
    flat patch is the scene's linear colour, in both sizes."""
    scene, colours = patch_scene()
    cfa, colour = opened(write_dng(None, scene, camera=camera))
    assert colour.white_balance == "as shot" and colour.multipliers[0] == pytest.approx(1.9, abs=1e-3)
    for image, patch in ((develop_half(cfa, colour), 8), (develop_block(cfa, colour, slice(0, 64), slice(0, 96)), 16)):
        rgb = image[..., ::-1].astype(float) / 65535
        inner = rgb.reshape(4, patch, 6, patch, 3)[:, patch // 4 : -patch // 4, :, patch // 4 : -patch // 4]
        error = np.abs(inner.mean(axis=(1, 3)) - colours).max()
        assert error < (2e-3 if camera.bits == 10 else 6e-4)


def test_highlights_clip_to_white_at_the_sensors_white_level_and_never_go_pink():
    """A neutral ramp through the sensor's white: linear up to it, then white in all three channels (R and B,
    white-balanced by 1.9 and 1.6, saturate no earlier and no later than green)."""
    levels = np.array([0.5, 0.9, 0.99, 1.2, 1.9, 3.0], np.float32)
    scene = np.repeat(np.repeat(levels[None, :, None], 32, axis=0), 16, axis=1).repeat(3, axis=2)  # LibRaw: >= 22 rows
    cfa, colour = opened(write_dng(None, scene, camera=SyntheticCamera()))
    rgb = develop_half(cfa, colour).astype(float).reshape(16, 6, 8, 3).mean(axis=(0, 2)) / 65535
    assert rgb[:3] == pytest.approx(np.repeat(levels[:3, None], 3, axis=1), abs=1e-3)
    assert np.all(rgb[3:] == 1.0)


def test_a_frames_own_content_does_not_change_how_bright_it_comes_out():
    """LibRaw's defaults take a frame's brightest pixels as its white (adjust_maximum_thr 0.75) and stretch its
    histogram (auto-brightness): the same patch then comes out at other values in a frame that has a highlight
    than in one that has none -- what made shinestacker's raw frames disagree (#33). Here it does not move."""
    scene, _ = patch_scene()
    dim = write_dng(None, scene * 0.5, camera=SyntheticCamera())
    lit = scene * 0.5
    lit[:16, :16] = 1.0  # the same scene with a highlight in one corner
    bright = write_dng(None, lit, camera=SyntheticCamera())
    patch = (slice(40, 56), slice(40, 56))
    ours = [develop_half(*opened(data))[20:28, 20:28].mean() for data in (dim, bright)]
    assert ours[0] == pytest.approx(ours[1], rel=1e-4)
    defaults = [libraw(data, adjust_maximum_thr=0.75, no_auto_bright=False)[patch].mean() for data in (dim, bright)]
    assert abs(defaults[0] / defaults[1] - 1) > 0.05  # the trap this avoids

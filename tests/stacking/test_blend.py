"""Merge stage in isolation: kernels split a pixel between frames exactly, strips equal whole images, and every
blend reproduces identical frames and takes each region from the frame the weights name."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from watcher.stacking.blend import BLENDS, SHARP, SOFT, FrameWeights, Fusion, Upsampled, kernel

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("half", [SOFT, SHARP])
def test_kernels_of_all_frames_sum_to_one_at_every_depth(half):
    depth = np.linspace(0, 5, 501, dtype=np.float32)
    total = sum(kernel(k, depth, half) for k in range(6))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert kernel(2, np.float32([2.0]), half)[0] == 1.0


def test_sharp_kernel_picks_the_nearest_frame_away_from_the_midpoint():
    depth = np.float32([1.2, 1.5, 1.8])
    assert kernel(1, depth, SHARP).tolist() == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_upsampled_strips_equal_a_whole_resize_and_support_covers_the_non_zero_columns():
    small = np.zeros((61, 83), np.float32)
    small[20:30, 40:50] = RNG.random((10, 10))
    up = Upsampled(small, (250, 333))
    whole = cv2.resize(small, (333, 250), interpolation=cv2.INTER_LINEAR)
    strips = np.vstack([up.rows(slice(a, min(a + 37, 250))) for a in range(0, 250, 37)])
    np.testing.assert_allclose(strips, whole, atol=1e-5)
    for start in range(0, 250, 37):
        rows = slice(start, min(start + 37, 250))
        covered = np.zeros(333, bool)
        for cols in up.support(rows):
            covered[cols] = True
        assert not (whole[rows].max(axis=0) > 0)[~covered].any()


def weights_for(maps: list[np.ndarray], method: str, gains=(1.0, 1.0, 1.0)) -> list[FrameWeights]:
    return [FrameWeights(m, m, np.eye(3), gains) for m in maps]


@pytest.mark.parametrize("method", BLENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_every_blend_reproduces_identical_frames(method, dtype):
    top = np.iinfo(dtype).max
    image = (RNG.random((64, 96, 3)) * top).astype(dtype)
    raw = [RNG.random((32, 48)).astype(np.float32) for _ in range(3)]
    maps = [r / sum(raw) for r in raw]
    fusion = Fusion(method, (64, 96), np.dtype(dtype), gain_scale=1.0)
    for frame_weights in weights_for(maps, method):
        fusion.add(image, frame_weights)
    np.testing.assert_allclose(fusion.result(np.dtype(dtype).type).astype(float), image, atol=top * 0.004 + 0.6)


@pytest.mark.parametrize("method", BLENDS)
def test_every_blend_takes_each_region_from_the_frame_its_weights_name(method):
    left, right = np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96, 3), np.uint8)
    left[:, :48] = 200
    right[:, 48:] = 100
    mask = (np.arange(48) < 24).astype(np.float32)[None].repeat(32, 0)
    fusion = Fusion(method, (64, 96), np.dtype(np.uint8), gain_scale=1.0)
    for image, weights in zip((left, right), weights_for([mask, 1.0 - mask], method)):
        fusion.add(image, weights)
    out = fusion.result(np.uint8).astype(float)
    assert np.allclose(out[:, :40], 200, atol=3) and np.allclose(out[:, 56:], 100, atol=3)


def test_gains_are_applied_per_channel_and_the_result_scaled_back():
    image = np.full((16, 16, 3), 100, np.uint8)
    fusion = Fusion("weighted", (16, 16), np.dtype(np.uint8), gain_scale=1.2)
    fusion.add(image, FrameWeights(np.ones((16, 16), np.float32), np.ones((16, 16), np.float32), np.eye(3),
                                   (1.2, 1.0, 0.9)))
    np.testing.assert_array_equal(fusion.result(np.uint8)[0, 0], (120, 100, 90))


def test_sharpening_strip_by_strip_equals_sharpening_the_whole_image():
    from watcher.stacking.output import unsharp_mask

    image = (RNG.random((300, 40, 3)) * 255).astype(np.uint8)
    ones = np.ones((300, 40), np.float32)
    fusion = Fusion("weighted", (300, 40), np.dtype(np.uint8), gain_scale=1.0)
    fusion.add(image, FrameWeights(ones, ones, np.eye(3), (1.0, 1.0, 1.0)))
    whole = image.astype(np.float32) / 255
    unsharp_mask(whole, 0.8)
    expected = np.clip(np.rint(whole * 255), 0, 255)
    assert np.abs(fusion.result(np.uint8, sharpen=0.8).astype(float) - expected).max() <= 1


def test_a_frame_is_warped_only_where_it_has_weight(monkeypatch):
    import watcher.stacking.blend as blend

    calls = []
    real = blend.warp_block
    monkeypatch.setattr(blend, "warp_block", lambda *a: calls.append(a[2:]) or real(*a))
    weights = np.zeros((512, 2048), np.float32)
    weights[:100, :300] = 1.0
    weights[:100, 1600:] = 1.0
    fusion = Fusion("weighted", (512, 2048), np.dtype(np.uint8), gain_scale=1.0)
    fusion.add(np.zeros((512, 2048, 3), np.uint8), FrameWeights(weights, weights, np.eye(3), (1.0, 1.0, 1.0)))
    assert calls and max(rows.stop for rows, _ in calls) <= 256  # rows without weight are skipped
    warped = sum((rows.stop - rows.start) * (cols.stop - cols.start) for rows, cols in calls)
    assert warped < 0.5 * 256 * 2048  # and so are the columns between the two patches


@pytest.mark.parametrize(("frames", "result"), [(np.uint8, np.uint8), (np.uint8, np.uint16), (np.uint16, np.uint16),
                                                (np.uint16, np.uint8)])
def test_the_result_written_over_the_accumulator_is_sharpened_as_the_whole_image(frames, result):
    """The result is made in the accumulator's memory, strip by strip, whatever the depths: the rows that
    sharpening a strip reads from the strip before are kept aside before that strip is overwritten."""
    from watcher.stacking.output import unsharp_mask

    top_in, top = np.iinfo(frames).max, np.iinfo(result).max
    image = (RNG.random((700, 50, 3)) * top_in).astype(frames)
    ones = np.ones((700, 50), np.float32)
    fusion = Fusion("weighted", (700, 50), np.dtype(frames), gain_scale=1.0)
    assert fusion.sum.dtype == np.uint16  # 6 bytes per pixel, for 16-bit frames too (float32 took 12)
    fusion.add(image, FrameWeights(ones, ones, np.eye(3), (1.0, 1.0, 1.0)))
    out = fusion.result(result, sharpen=0.5)
    expected = image.astype(np.float32) / top_in
    unsharp_mask(expected, 0.5)
    assert np.abs(out.astype(float) - np.clip(np.rint(expected * top), 0, top)).max() <= top / 255


def test_linear_frames_take_their_gains_in_linear_light_and_come_out_srgb_encoded():
    """Gains are measured for display-encoded values (``g``); raw frames hold linear light, where the same
    correction is ``g ** 2.2``. The fused linear light is encoded with sRGB's curve."""
    linear = np.full((16, 16, 3), 20000, np.uint16)
    ones = np.ones((16, 16), np.float32)
    gains = (1.1, 1.0, 0.9)
    fusion = Fusion("weighted", (16, 16), np.dtype(np.uint16), gain_scale=1.1, linear=True)
    fusion.add(linear, FrameWeights(ones, ones, np.eye(3), gains))
    value = 20000 / 65535 * np.power(gains, 2.2)
    srgb = np.where(value <= 0.0031308, 12.92 * value, 1.055 * value ** (1 / 2.4) - 0.055)
    assert np.abs(fusion.result(np.uint16)[5, 5] - srgb * 65535).max() <= 2

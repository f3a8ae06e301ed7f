"""Tests of the synthetic focal-stack generator and the quality metrics."""

import cv2
import numpy as np
import pytest

from benchmarks.quality import corner_error_rms, psnr, ssim
from benchmarks.synthetic import CASES, FocalStack, Layer, make_focal_stack, write_stack

SIZE = (640, 480)  # (W, H)


@pytest.fixture(scope="module")
def stack() -> FocalStack:
    return make_focal_stack("chelsea_layers", size=SIZE, n_frames=6, seed=3)


def test_shapes_and_dtypes(stack: FocalStack) -> None:
    assert stack.truth.shape == (480, 640, 3) and stack.truth.dtype == np.uint8
    assert stack.oracle.shape == stack.truth.shape and stack.oracle.dtype == np.uint8
    assert stack.depth.shape == (480, 640) and stack.depth.dtype == np.float32
    assert stack.depth.min() >= 0.0 and stack.depth.max() <= 1.0
    assert stack.focus_depths.shape == (6,) and stack.focus_depths.dtype == np.float32
    assert np.all(np.diff(stack.focus_depths) > 0)
    assert len(stack.frames) == len(stack.homographies) == len(stack.jpeg_bytes) == 6
    for frame, homography in zip(stack.frames, stack.homographies, strict=True):
        assert frame.shape == stack.truth.shape and frame.dtype == np.uint8
        assert homography.shape == (3, 3) and homography.dtype == np.float64


def test_same_seed_gives_same_stack() -> None:
    first, second, other = (
        make_focal_stack("coffee_tilt", size=(320, 240), n_frames=3, seed=seed) for seed in (1, 1, 2)
    )
    for attribute in ("truth", "oracle", "depth", "focus_depths", "frames", "homographies"):
        np.testing.assert_array_equal(getattr(first, attribute), getattr(second, attribute))
    assert not np.array_equal(first.frames[0], other.frames[0])
    assert not np.allclose(first.homographies[0], other.homographies[0])


@pytest.mark.parametrize("name", CASES)
def test_oracle_beats_every_single_frame(name: str) -> None:
    stack = make_focal_stack(name, size=SIZE, n_frames=6, seed=3)
    oracle = psnr(stack.oracle, stack.truth)
    assert oracle > 38.0
    for i, frame in enumerate(stack.frames):
        assert psnr(frame, stack.in_frame_geometry(stack.truth, i)) < oracle - 5.0, i


def test_frame_focused_nearest_a_region_is_sharpest_there() -> None:
    stack = make_focal_stack(
        "coffee_tilt",
        size=SIZE,
        n_frames=5,
        noise_sigma=0.0,
        jpeg_quality=None,
        scale_step=0.0,
        max_shift_px=0.0,
        max_rotation_deg=0.0,
    )
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32) for frame in stack.frames]
    sharpness = [cv2.Laplacian(g, cv2.CV_32F) ** 2 for g in grey]
    interior = stack.depth[32:-32, 32:-32]
    for i, focus in enumerate(stack.focus_depths):
        row, col = np.unravel_index(np.argmin(np.abs(interior - focus)), interior.shape)
        window = (slice(row + 8, row + 56), slice(col + 8, col + 56))  # 48 px centred on the pixel
        energies = [float(s[window].mean()) for s in sharpness]
        assert int(np.argmax(energies)) == i, energies


def test_homographies_map_truth_into_frames(stack: FocalStack) -> None:
    # The frame whose transform differs most from its inverse tells the two conventions apart.
    i = max(
        range(len(stack.frames)),
        key=lambda j: corner_error_rms(
            stack.homographies[j], np.linalg.inv(stack.homographies[j]), SIZE[::-1]
        ),
    )
    frame = stack.frames[i]
    inverse = cv2.warpPerspective(
        stack.truth,
        np.linalg.inv(stack.homographies[i]),
        SIZE,
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )
    aligned = psnr(frame, stack.in_frame_geometry(stack.truth, i))
    assert aligned > psnr(frame, inverse) + 1.0
    assert aligned > psnr(frame, stack.truth) + 1.0


def test_true_alignment(stack: FocalStack) -> None:
    np.testing.assert_allclose(stack.true_alignment(2, 2), np.eye(3), atol=1e-12)
    for i in range(len(stack.frames)):
        np.testing.assert_allclose(
            stack.true_alignment(i, 2) @ stack.homographies[2], stack.homographies[i], atol=1e-9
        )


def test_corner_error_of_known_transforms() -> None:
    shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
    assert corner_error_rms(shift, np.eye(3), (480, 640)) == pytest.approx(5.0)
    scale = np.diag([1.01, 1.01, 1.0])  # about the origin: the (0, 0) corner does not move
    expected = np.sqrt((0 + 6.39**2 + 4.79**2 + 6.39**2 + 4.79**2) / 4)
    assert corner_error_rms(scale, np.eye(3), (480, 640, 3)) == pytest.approx(expected)
    perspective = np.array([[1.0, 0, 0], [0, 1, 0], [1e-4, 0, 1]])
    assert corner_error_rms(perspective, perspective, (480, 640)) == 0.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_psnr_and_ssim(dtype: type) -> None:
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(0)
    image = np.full((200, 300, 3), top // 2, dtype)
    image[:, 150:] = top // 4  # an edge, so SSIM has structure to compare
    assert psnr(image, image) == float("inf")
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    previous_psnr, previous_ssim = float("inf"), 1.0
    for sigma in (0.004, 0.016, 0.064):  # fraction of full scale
        noisy = np.clip(image + rng.normal(0, sigma * top, image.shape), 0, top).round().astype(dtype)
        value, similarity = psnr(noisy, image), ssim(noisy, image)
        # Rounding to integers adds a variance of 1/12 DN^2.
        assert value == pytest.approx(10 * np.log10(top**2 / ((sigma * top) ** 2 + 1 / 12)), abs=0.2)
        assert value < previous_psnr and similarity < previous_ssim
        previous_psnr, previous_ssim = value, similarity
    with pytest.raises(ValueError):
        psnr(image, image.astype(np.float32))


def test_uint16_keeps_more_than_8_bits(tmp_path) -> None:
    stack = make_focal_stack("astronaut_dome", size=(320, 240), n_frames=3, dtype=np.uint16)
    assert stack.truth.dtype == stack.oracle.dtype == np.uint16 and not stack.jpeg_bytes
    assert all(frame.dtype == np.uint16 for frame in stack.frames)
    assert len(np.unique(stack.truth)) > 4096
    assert np.mean(stack.truth % 257 != 0) > 0.9  # not 8-bit values scaled by 257
    with pytest.raises(ValueError):
        write_stack(stack, tmp_path)
    for path, frame in zip(write_stack(stack, tmp_path, ext=".png"), stack.frames, strict=True):
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), frame)


def test_write_stack_keeps_jpeg_bytes(stack: FocalStack, tmp_path) -> None:
    paths = write_stack(stack, tmp_path)
    assert [path.name for path in paths] == [f"chelsea_layers_{i:02d}.jpg" for i in range(6)]
    for path, data, frame in zip(paths, stack.jpeg_bytes, stack.frames, strict=True):
        assert path.read_bytes() == data
        np.testing.assert_array_equal(cv2.imread(str(path)), frame)


def test_gain_drift_leaves_the_middle_frame_as_the_exposure_reference() -> None:
    plain = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=5, noise_sigma=0.0, jpeg_quality=None)
    drifting = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=5, noise_sigma=0.0, jpeg_quality=None,
                                gain_drift=(0.01, 0.04))
    np.testing.assert_array_equal(plain.gains, np.ones((5, 3)))
    np.testing.assert_array_equal(drifting.gains[2], [1.0, 1.0, 1.0])
    off = np.abs(np.delete(drifting.gains, 2, axis=0) - 1.0)
    assert off.min() >= 0.01 and off.max() <= 0.04
    np.testing.assert_array_equal(drifting.frames[2], plain.frames[2])
    for homography, same in zip(drifting.homographies, plain.homographies, strict=True):
        np.testing.assert_array_equal(homography, same)  # drift draws after the geometry's draws
    # In linear light each channel of a frame is scaled by its gain (up to 8-bit rounding of bright pixels).
    linear = [np.power(f.astype(np.float64) / 255, 2.2) for f in (drifting.frames[0], plain.frames[0])]
    usable = (linear[1] > 0.05) & (linear[1] < 0.8)
    for channel in range(3):
        ratio = np.median(linear[0][..., channel][usable[..., channel]] / linear[1][..., channel][usable[..., channel]])
        assert ratio == pytest.approx(drifting.gains[0, channel], abs=0.004)


def test_focus_range_puts_frames_beyond_the_scene() -> None:
    stack = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=6, focus_range=(0.0, 1.5))
    low, high = float(stack.depth.min()), float(stack.depth.max())
    expected = low + (high - low) * 1.5 * (np.arange(6) + 0.5) / 6
    np.testing.assert_allclose(stack.focus_depths, expected, rtol=1e-6)
    assert (stack.focus_depths > high).sum() == 2


def test_scene_builder_replaces_the_named_scene() -> None:
    def two_planes(size, rng):
        height, width = size[1], size[0]
        colour = np.full((height, width, 3), 0.25, np.float32)
        depth = np.zeros((height, width), np.float32)
        depth[:, width // 2 :] = 1.0
        return [Layer(colour, None, depth)]

    stack = make_focal_stack("planes", size=(160, 120), n_frames=2, scene=two_planes, noise_sigma=0.0,
                             jpeg_quality=None, max_shift_px=0.0, max_rotation_deg=0.0, scale_step=0.0)
    assert stack.name == "planes" and set(np.unique(stack.depth)) == {0.0, 1.0}
    assert np.all(np.abs(stack.truth.astype(int) - round(0.25 ** (1 / 2.2) * 255)) <= 1)

"""Stacks of raw frames through the whole pipeline: quality against ground truth beside a fair baseline, colour and
brightness kept, what is written (16-bit, EXIF, ICC), and the stacks refused with a reason."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from benchmarks.picamera_dng import SyntheticCamera, mosaic, patch_scene, write_dng
from benchmarks.raw_quality import render, run_case
from watcher.config import StackingSettings
from watcher.stacking.metadata import srgb_profile
from watcher.stacking.pipeline import StackError, stack, stack_to_file
from watcher.stacking.sources import FrameError


@pytest.fixture(scope="module")
def quality(tmp_path_factory) -> dict[str, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("raw-quality")
    return {name: {row["kind"]: row for row in run_case(name, (480, 360), 5, 12, folder)}
            for name in ("coffee_tilt", "rocket_steps")}


@pytest.mark.parametrize("name", ["coffee_tilt", "rocket_steps"])
def test_a_dng_stack_scores_as_well_as_the_same_mosaic_developed_alike(quality, name):
    """The fair baseline is the same DNGs developed by the same code and stored losslessly (ISP); the DNG stack
    differs only in how it is stacked (measured on half-size develops, merged in linear light at 16 bits). The
    JPEG frames of the same scenes never went through a mosaic: their stack scores higher (coffee_tilt 3.4 dB,
    rocket_steps 1 dB at 640x480), which no raw stack can change."""
    rows = quality[name]
    assert rows["DNG"]["psnr"] >= rows["ISP"]["psnr"] - 0.3
    assert np.abs(np.subtract(rows["DNG"]["colour"], rows["ISP"]["colour"])).max() < 0.005
    assert rows["DNG"]["psnr"] < rows["JPEG"]["psnr"]


def flat_stack(folder, n: int = 3, orientation: int = 1) -> tuple[list, np.ndarray]:
    """``n`` DNGs of the patch scene: the same light, but as-shot white balances drifting as an auto white balance
    does, and a saturated highlight in one frame only (what makes auto-brightness develop frames unalike)."""
    scene, colours = patch_scene(rows=4, cols=6, patch=32)
    scene *= 0.8
    paths = []
    for index in range(n):
        light = scene.copy()
        if index == 0:
            light[:16, :16] = 3.0
        tags = SyntheticCamera(gains=(1.9 + 0.15 * (index - 1), 1.6 - 0.1 * (index - 1)), orientation=orientation,
                               exposure_us=20000, model="imx519")
        path = folder / f"scan01_000_fs{index:02d}.dng"
        write_dng(path, camera=tags, cfa=mosaic(light, SyntheticCamera()))
        paths.append(path)
    return paths, colours * 0.8


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    value = image.astype(np.float64) / np.iinfo(image.dtype).max
    return np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)


def test_frames_are_developed_alike_so_colour_and_brightness_are_the_scenes(tmp_path):
    """Every frame is developed with the reference frame's white balance and levels: the frames agree (their
    exposure gains come out 1), whatever their own as-shot white balance or highlights say, and the result's
    patches are the scene's linear colours."""
    paths, colours = flat_stack(tmp_path)
    result = stack(paths, StackingSettings(output_format="tif", align=False))
    assert result.image.dtype == np.uint16
    for frame in result.record["frames"]:
        assert frame["gains"] == pytest.approx([1.0, 1.0, 1.0], abs=0.004), frame
    rgb = srgb_to_linear(result.image)[..., ::-1]
    means = rgb.reshape(4, 32, 6, 32, 3)[:, 8:24, :, 8:24].mean(axis=(1, 3))
    means[0, 0] = colours[0, 0]  # the highlight's patch
    assert np.abs(means - colours).max() < 2e-3
    assert result.record["raw"]["white_balance"] == "as shot"
    assert result.record["raw"]["multipliers"] == pytest.approx([1.9, 1.0, 1.6], abs=1e-3)  # the reference's


def test_a_raw_stack_is_written_16_bit_with_exif_and_an_srgb_profile(tmp_path):
    """The pixels stay in sensor orientation and the DNG's Orientation tag goes into the result (read here by
    libtiff and libpng through Pillow: OpenCV 4.14 cannot read a TIFF with orientation 5-8 at all, ours or its own)."""
    paths, _ = flat_stack(tmp_path, orientation=6)
    for suffix in (".tif", ".png"):
        output = tmp_path / f"result{suffix}"
        record = stack_to_file(paths, output, StackingSettings(output_format=suffix[1:]))
        assert record["output_bit_depth"] == 16 and record["warnings"] == []
        with Image.open(output) as image:
            tags = image.getexif()
            assert (tags[271], tags[272], tags[274]) == ("RaspberryPi", "imx519", 6)  # the DNG's orientation
            assert tags.get_ifd(0x8769)[0x829A] == pytest.approx(1 / 50)  # ExposureTime
            profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
            assert image.info["icc_profile"] == srgb_profile()
            if suffix == ".tif":
                assert tags[258] == (16, 16, 16)
        assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_the_icc_profile_is_one_littlecms_takes_for_srgb():
    """Our generated profile converts like LittleCMS's own sRGB: a grey stays that grey, colours within 1 level."""
    ours = ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile()))
    reference = ImageCms.createProfile("sRGB")
    patch = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    converted = ImageCms.applyTransform(patch, ImageCms.buildTransform(ours, reference, "RGB", "RGB"))
    assert np.abs(np.asarray(converted, int) - np.asarray(patch, int)).max() <= 1


def test_a_jpeg_beside_the_16_bit_image(tmp_path):
    """What the openscan layout writes for a raw stack: stacked_<stack>.jpg for the firmware, the 16-bit TIFF
    beside it; the JPEG is the 16-bit result rounded to 8 bits, with the same EXIF and profile."""
    paths, _ = flat_stack(tmp_path)
    record = stack_to_file(paths, tmp_path / "stacked.jpg", StackingSettings(), deep_output=tmp_path / "stacked.tif")
    assert record["outputs"] == {"image": str(tmp_path / "stacked.jpg"), "deep_image": str(tmp_path / "stacked.tif")}
    assert record["warnings"] == []
    deep = cv2.imread(str(tmp_path / "stacked.tif"), cv2.IMREAD_UNCHANGED)
    jpeg, types, blocks = cv2.imreadWithMetadata(str(tmp_path / "stacked.jpg"))
    assert deep.dtype == np.uint16 and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(float) - deep / 257).mean() < 3  # JPEG q95 of sharp-edged patches
    assert bytes(blocks[list(types).index(cv2.IMAGE_METADATA_ICCP)]) == srgb_profile()



def test_a_raw_stack_gains_the_camera_data_and_an_object_mask(tmp_path):
    """The camera fill (watcher.stacking.camera) adds to the EXIF made from the DNG's tags what it lacks, keeping
    what it has (Make); the object mask is made from a raw stack as from any other, in the result's geometry."""
    paths, _ = flat_stack(tmp_path)
    record = stack_to_file(paths, tmp_path / "stacked.jpg", StackingSettings(), deep_output=tmp_path / "stacked.tif",
                           mask_output=tmp_path / "mask.png")
    assert record["camera_exif"]["model"] == "imx519" and "Make" in record["camera_exif"]["kept"]
    assert {"FocalLength", "FocalLengthIn35mmFilm"} <= set(record["camera_exif"]["added"])
    with Image.open(tmp_path / "stacked.jpg") as image:
        tags = image.getexif()
        assert tags[271] == "RaspberryPi" and tags.get_ifd(0x8769)[0xA405] > 0  # the DNG's Make, the fill's 35 mm
    with Image.open(tmp_path / "stacked.tif") as image:
        added = image.getexif().get_ifd(0x8769)  # the fill's tags reach the TIFF's own tags too
        assert added[0x920A] == pytest.approx(4.28) and added[0xA405] == tags.get_ifd(0x8769)[0xA405]
        assert added[0xA210] == 3 and added[0xA20E] == pytest.approx(1e4 / 1.22, rel=1e-4)
    mask = cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == cv2.imread(str(tmp_path / "stacked.jpg")).shape[:2]
    assert "share" in record["mask"]

def test_jpeg_frames_with_an_icc_profile_keep_it_in_every_result(ring_stack, tmp_path):
    """A DSLR set to Adobe RGB embeds a profile: the result keeps the reference frame's, byte for byte (it was
    dropped before). Here LittleCMS's own sRGB profile stands in for one: not the profile we generate."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert profile != srgb_profile()
    frames = []
    for index, path in enumerate(ring_stack[:3]):
        image = cv2.resize(cv2.imread(str(path)), (380, 285), interpolation=cv2.INTER_AREA)
        data = cv2.imencodeWithMetadata(".jpg", image, [cv2.IMAGE_METADATA_ICCP], [np.frombuffer(profile, np.uint8)])[1]
        frames.append(tmp_path / f"ring_{index}.jpg")
        frames[-1].write_bytes(data.tobytes())
    for suffix in (".jpg", ".png", ".tif"):
        output = tmp_path / f"result{suffix}"
        stack_to_file(frames, output, StackingSettings(output_format=suffix[1:]))
        with Image.open(output) as result:
            assert result.info["icc_profile"] == profile, suffix


def test_raw_and_other_frames_in_one_stack_are_refused(tmp_path, ring_stack):
    paths, _ = flat_stack(tmp_path, 2)
    with pytest.raises(StackError, match=r"raw and other frames in one stack \(scan01_000_fs00.dng, step0.jpg\)"):
        stack([*paths, ring_stack[0]], StackingSettings())


def test_a_frame_of_another_sensor_size_is_refused_naming_it(tmp_path):
    paths, _ = flat_stack(tmp_path, 3)
    write_dng(paths[2], np.zeros((96, 128, 3), np.float32), camera=SyntheticCamera())
    with pytest.raises(FrameError, match=r"^scan01_000_fs02.dng: size 128x96 differs from the reference "
                                         r"scan01_000_fs01.dng's 192x128$"):
        stack(paths, StackingSettings())


def test_focus_watcher_stack_writes_a_dng_stack_to_tif(tmp_path):
    case = render("rocket_steps", (320, 240), 3)
    paths = []
    for index, frame in enumerate(case.frames):
        paths.append(tmp_path / f"f{index}.dng")
        write_dng(paths[-1], np.power(frame.astype(np.float32) / 65535, 2.2)[..., ::-1])
    done = subprocess.run([sys.executable, "-m", "watcher.cli", "stack", *map(str, paths), "-o",
                           str(tmp_path / "out.tif"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["raw"]["demosaic"] == "PPG"
    assert cv2.imread(str(tmp_path / "out.tif"), cv2.IMREAD_UNCHANGED).shape == (240, 320, 3)

"""The whole pipeline and the `focus-watcher stack` command on real photos, EXIF, bad input and geometry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from watcher.config import StackingSettings
from watcher.stacking.blend import BLENDS
from watcher.stacking.pipeline import StackError, stack, stack_each_blend, stack_to_file
from watcher.stacking.sources import FrameError


def sharpness(image: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image: a no-reference measure of fine detail."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(np.mean(cv2.Laplacian(grey, cv2.CV_32F) ** 2))


def exif_of(path) -> bytes:
    _, types, blocks = cv2.imreadWithMetadata(str(path))
    return next((bytes(b) for t, b in zip(types, blocks) if t == cv2.IMAGE_METADATA_EXIF), b"")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watcher.cli", *args], capture_output=True, text=True)


def test_real_pcb_stack_end_to_end_with_exif_depthmap_and_record(pcb_stack, tmp_path):
    out, depth = tmp_path / "pcb.jpg", tmp_path / "pcb_depth.png"
    done = run_cli("stack", *map(str, pcb_stack), "-o", str(out), "--depthmap", str(depth), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    result = cv2.imread(str(out))
    assert result.shape == (1536, 2048, 3)  # the reference's size: nothing cropped
    assert sharpness(result) > max(sharpness(cv2.imread(str(p))) for p in pcb_stack)
    assert cv2.imread(str(depth), cv2.IMREAD_UNCHANGED).shape == (1536, 2048)
    assert [f["name"] for f in record["frames"]] == [p.name for p in pcb_stack]
    assert record["reference"] == {"index": 3, "name": "pcb_004.jpg"}
    assert all(f["model"] == "homography" for i, f in enumerate(record["frames"]) if i != 3)
    assert all(f["placement"] == "estimated" for i, f in enumerate(record["frames"]) if i != 3)
    assert sum(f["share"] for f in record["frames"]) == pytest.approx(1.0, abs=0.01)
    assert all(len(f["gains"]) == 3 for f in record["frames"])
    assert {"decode_preview", "align", "focus", "decide", "decode", "merge", "save", "total"} <= set(record["timings"])
    assert b"NOVATEK" in exif_of(out)  # camera make survives (photogrammetry needs make/model/focal length)


def test_real_ring_stack_every_blend_runs(ring_stack):
    sharpest_frame = max(sharpness(cv2.imread(str(p))) for p in ring_stack)
    results = stack_each_blend(ring_stack, StackingSettings(), BLENDS)
    for blend, result in zip(BLENDS, results, strict=True):
        assert result.record["settings"]["blend"] == blend
        assert result.image.shape == (1141, 1521, 3) and result.image.dtype == np.uint8
        assert sharpness(result.image) > sharpest_frame * 0.95, blend


def test_each_blend_of_one_measurement_is_what_stack_gives_with_that_blend(pcb_stack, tmp_path):
    frames = [tmp_path / path.name for path in pcb_stack[:3]]
    for source, frame in zip(pcb_stack, frames):
        cv2.imwrite(str(frame), cv2.resize(cv2.imread(str(source)), (512, 384), interpolation=cv2.INTER_AREA))
    settings = StackingSettings(depthmap=True)
    shared = stack_each_blend(frames, settings, BLENDS, object_mask=True)
    for blend, result in zip(BLENDS, shared, strict=True):
        alone = stack(frames, settings.model_copy(update={"blend": blend}), object_mask=True)
        for field in ("image", "depthmap", "mask"):
            assert np.array_equal(getattr(result, field), getattr(alone, field)), (blend, field)
        assert (result.exif, result.icc) == (alone.exif, alone.icc)
        assert {**result.record, "timings": None} == {**alone.record, "timings": None}
        assert set(result.record["timings"]) == set(alone.record["timings"])


def test_exif_is_kept_in_png_with_orientation_reset_and_tiff_gets_the_camera_fields(pcb_stack, tmp_path):
    frames = pcb_stack[:3]
    stack_to_file(frames, tmp_path / "r.png", StackingSettings(output_format="png"))
    exif = exif_of(tmp_path / "r.png")
    assert b"NOVATEK" in exif and b"96650" in exif  # make and model
    record = stack_to_file(frames, tmp_path / "r.tif", StackingSettings(output_format="tif"))
    assert record["warnings"] == []
    assert cv2.imread(str(tmp_path / "r.tif")).shape == (1536, 2048, 3)
    with Image.open(frames[1]) as camera, Image.open(tmp_path / "r.tif") as tiff:  # ours, read by libtiff
        tags, original = tiff.getexif(), camera.getexif()
        assert (tags[271], tags[272], tags[274]) == (original[271].strip(), original[272], 1)  # orientation reset
        assert tags.get_ifd(0x8769)[0x829A] == original.get_ifd(0x8769)[0x829A]  # ExposureTime, in the EXIF IFD


@pytest.mark.parametrize(("damage", "message"), [
    (lambda b: b[: len(b) // 2], "pcb_003.jpg: truncated JPEG"),
    (lambda b: b"", "pcb_003.jpg: empty file"),
    (lambda b: b"\x00garbage" * 100, "pcb_003.jpg: not a JPEG, PNG or TIFF"),
])
def test_a_bad_frame_fails_the_stack_naming_it(pcb_stack, tmp_path, damage, message):
    frames = [shutil.copy(p, tmp_path) for p in pcb_stack[:4]]
    (tmp_path / "pcb_003.jpg").write_bytes(damage((tmp_path / "pcb_003.jpg").read_bytes()))
    with pytest.raises(FrameError, match=message):
        stack(frames, StackingSettings())
    done = run_cli("stack", *map(str, frames), "-o", str(tmp_path / "out.jpg"))
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.jpg").exists()


def test_mismatched_frames_are_refused(pcb_stack, ring_stack, tmp_path):
    differs = "step0.jpg: size 1521x1141 differs from the reference pcb_001.jpg's 2048x1536"
    with pytest.raises(FrameError, match=re.escape(differs)):
        stack([pcb_stack[0], ring_stack[0], pcb_stack[1]], StackingSettings(reference="first"))
    sixteen = tmp_path / "deep.png"
    cv2.imwrite(str(sixteen), cv2.imread(str(pcb_stack[1])).astype(np.uint16) * 257)
    with pytest.raises(FrameError, match=re.escape("deep.png: 16-bit frame in a stack of 8-bit frames")):
        stack([pcb_stack[0], sixteen], StackingSettings(reference="first"))
    with pytest.raises(StackError, match="no frames"):
        stack([], StackingSettings())


def test_borders_a_frame_does_not_cover_come_from_frames_that_do(tmp_path):
    # Reference: sharp texture everywhere. Second frame: the same content zoomed in 4 % (focus breathing), so
    # near the reference's borders it has no content; its replicated edge must not leak into the result.
    rng = np.random.default_rng(5)
    reference = cv2.resize(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (640, 480),
                           interpolation=cv2.INTER_NEAREST)
    zoom = cv2.getRotationMatrix2D((319.5, 239.5), 0, 1.04)
    zoomed = cv2.warpAffine(reference, zoom, (640, 480), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    paths = [tmp_path / "a_f0.png", tmp_path / "a_f1.png"]
    cv2.imwrite(str(paths[0]), reference)
    cv2.imwrite(str(paths[1]), zoomed)
    result = stack(paths, StackingSettings(reference="first", blend="weighted", output_format="png"))
    record = result.record["frames"][1]
    assert record["model"] in ("homography", "affine")
    border = np.s_[:8, :]  # the 8 top rows: outside what the zoomed frame saw
    assert np.abs(result.image[border].astype(int) - reference[border]).mean() < 2
    assert result.image.shape == reference.shape


def test_no_align_and_reference_first(pcb_stack):
    result = stack(pcb_stack[:3], StackingSettings(align=False, reference="first"))
    assert result.record["reference"]["index"] == 0
    assert all(f["model"] == "identity" for f in result.record["frames"])


def test_bad_settings_exit_2_naming_the_key(pcb_stack, tmp_path):
    done = run_cli("stack", str(pcb_stack[0]), "-o", str(tmp_path / "x.jpg"), "--window", "8")
    assert done.returncode == 2 and "stacking.focus_window: must be odd" in done.stderr
    done = run_cli("stack", str(pcb_stack[0]), "-o", str(tmp_path / "x.bmp"))
    assert done.returncode == 2 and "unsupported extension" in done.stderr

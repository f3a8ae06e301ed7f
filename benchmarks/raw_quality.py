"""Quality of raw (DNG) stacks against ground truth, beside the stacks a camera's ISP and the JPEG pipeline make.

    uv run python -m benchmarks.raw_quality [--size 1280x960] [--frames 8] [--cases a,b] [--bits 12]

Every synthetic case (benchmarks/synthetic.py) is rendered once at 16 bits, without JPEG, and written three ways:

- ``DNG``: the frames' linear light mosaicked RGGB and written as Picamera2 writes DNGs (benchmarks/picamera_dng.py),
  under a camera white balance that is not 1 (R 1.9, B 1.6) and a colour matrix;
- ``ISP``: the fair baseline -- the same DNGs developed exactly as focus-watcher develops them (PPG, the camera's
  white balance and matrix), sRGB-encoded and kept losslessly as 8-bit PNG: what a camera sharing our develop
  would hand over, without its JPEG's loss. The same mosaic, the same develop; only the stacking differs (the
  DNG stack measures on half-size develops and merges in linear light at 16 bits);
- ``JPEG``: the rendered frames as 8-bit JPEG q90, as benchmarks/quality_table.py stacks them. These frames never
  lost two thirds of their colour samples to a mosaic, so no raw stack matches them: shown for what a mosaic costs.

Scores are against the truth in the reference frame's geometry, in the truth's encoding (gamma 2.2; sRGB results
are converted): PSNR (3 % border cropped, as benchmarks.quality.psnr), and colour -- the ratio of each channel's mean
in linear light to the truth's (1.000: no cast, no brightness offset).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from benchmarks.picamera_dng import SyntheticCamera, write_dng
from benchmarks.quality import psnr
from benchmarks.synthetic import CASES, FocalStack, make_focal_stack
from watcher.config import StackingSettings
from watcher.stacking.output import srgb_encoded, to_8_bit
from watcher.stacking.pipeline import reference_index, stack
from watcher.stacking.raw import decode_raw

_GAMMA = 2.2  # the synthetic renderer's encoding (benchmarks/synthetic.py)
KINDS = ("DNG", "ISP", "JPEG")


def render(name: str, size: tuple[int, int], frames: int) -> FocalStack:
    """Case ``name`` at 16 bits, no JPEG round trip (the DNG and ISP frames are made from its light)."""
    return make_focal_stack(name, size=size, n_frames=frames, dtype=np.uint16, jpeg_quality=None)


def write_frames(case: FocalStack, folder: Path, bits: int = 12) -> dict[str, list[Path]]:
    """``case``'s frames as DNG, ISP (8-bit PNG) and JPEG (q90) files under ``folder``, by kind."""
    camera = SyntheticCamera(bits=bits, black={10: 64, 12: 256, 16: 4096}[bits], model="imx519")
    written: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    for index, frame in enumerate(case.frames):
        name = f"scan01_000_fs{index:02d}"
        (folder / "DNG").mkdir(parents=True, exist_ok=True)
        dng = write_dng(folder / "DNG" / f"{name}.dng", to_linear(frame)[..., ::-1], camera=camera)
        written["DNG"].append(folder / "DNG" / f"{name}.dng")
        developed = np.asarray(decode_raw(dng, max_pixels=1 << 40).pixels)
        for kind, data in (("ISP", cv2.imencode(".png", to_8_bit(srgb_encoded(developed)))[1]),
                           ("JPEG", cv2.imencode(".jpg", to_8_bit(frame), [cv2.IMWRITE_JPEG_QUALITY, 90])[1])):
            path = folder / kind / f"{name}.{'png' if kind == 'ISP' else 'jpg'}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data.tobytes())
            written[kind].append(path)
    return written


def to_linear(encoded: np.ndarray) -> np.ndarray:
    """The renderer's encoded uint16 frame as linear light, float32 in [0, 1]."""
    return np.power(encoded.astype(np.float32) / 65535, _GAMMA)


def srgb_to_truth_encoding(image: np.ndarray) -> np.ndarray:
    """An sRGB-encoded result (uint8 or uint16) re-encoded with the truth's gamma 2.2, as uint16."""
    value = image.astype(np.float64) / np.iinfo(image.dtype).max
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)
    return np.rint(np.power(linear, 1 / _GAMMA) * 65535).astype(np.uint16)


def score(kind: str, image: np.ndarray, truth: np.ndarray) -> dict[str, float | tuple]:
    """PSNR (dB) against ``truth`` (uint16, gamma 2.2) and the channel means' ratio (B, G, R) in linear light."""
    if kind == "JPEG":
        result = image.astype(np.uint16) * 257 if image.dtype == np.uint8 else image
    else:
        result = srgb_to_truth_encoding(image)
    border = (slice(round(0.03 * truth.shape[0]), -round(0.03 * truth.shape[0])),
              slice(round(0.03 * truth.shape[1]), -round(0.03 * truth.shape[1])))
    means = [np.power(a[border].astype(np.float64) / 65535, _GAMMA).reshape(-1, 3).mean(axis=0)
             for a in (result, truth)]
    return {"psnr": psnr(result, truth), "colour": tuple(float(v) for v in means[0] / means[1])}


def run_case(name: str, size: tuple[int, int], frames: int, bits: int, folder: Path) -> list[dict]:
    case = render(name, size, frames)
    files = write_frames(case, folder / name, bits)
    settings = StackingSettings(output_format="png")  # each at its own depth: 16-bit for DNG, as by default
    truth = case.in_frame_geometry(case.truth, reference_index(frames, settings.reference))
    return [{"case": name, "kind": kind, **score(kind, stack(paths, settings).image, truth)}
            for kind, paths in files.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--bits", type=int, default=12, choices=(10, 12, 16))
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            rows += run_case(name, (width, height), args.frames, args.bits, Path(tmp))
            for row in rows[-len(KINDS):]:
                print(f"  {row['case']:22} {row['kind']:5} {row['psnr']:6.2f} dB", flush=True)
    print(f"\n{'case':22} {'DNG':>7} {'ISP':>7} {'JPEG':>7} {'DNG-ISP':>8} {'DNG-JPEG':>9}   "
          "colour: mean / truth's in linear light, B G R (DNG | ISP)")
    for name in args.cases.split(","):
        by_kind = {row["kind"]: row for row in rows if row["case"] == name}
        dng, isp, jpeg = (by_kind[kind]["psnr"] for kind in KINDS)
        colours = " | ".join(" ".join(f"{v:.3f}" for v in by_kind[kind]["colour"]) for kind in ("DNG", "ISP"))
        print(f"{name:22} {dng:7.2f} {isp:7.2f} {jpeg:7.2f} {dng - isp:+8.2f} {dng - jpeg:+9.2f}   {colours}")


if __name__ == "__main__":
    main()

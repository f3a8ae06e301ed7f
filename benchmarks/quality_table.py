"""Quality of the stacking engine against ground truth: PSNR/SSIM per blend and focus measure, alignment error.

    uv run python -m benchmarks.quality_table [--size 1280x960] [--frames 8] [--cases a,b] [--blends ...] [--focus ...]

Every synthetic case (benchmarks/synthetic.py) is rendered once, written as JPEG frames the way a camera would,
stacked by the real pipeline from those files, and scored in the reference frame's geometry.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.quality import corner_error_rms, psnr, ssim
from benchmarks.synthetic import CASES, FocalStack, make_focal_stack, write_stack
from watcher.config import StackingSettings
from watcher.stacking.blend import BLENDS
from watcher.stacking.focus import MEASURES
from watcher.stacking.pipeline import StackResult, reference_index, stack_each_blend


def score_case(case: FocalStack, folder: Path, settings: StackingSettings,
               blends: list[str]) -> Iterator[dict[str, float]]:
    """Stack ``case`` (frames already written to ``folder``) with ``settings`` and each of ``blends`` (measured
    once); per blend, PSNR/SSIM and corner error."""
    paths = sorted(folder.glob("*.jpg")) or sorted(folder.glob("*.png"))
    ref = reference_index(len(paths), settings.reference)
    for result in stack_each_blend(paths, settings, blends):
        yield score_result(case, result, ref)


def score_result(case: FocalStack, result: StackResult, ref: int) -> dict[str, float]:
    """PSNR/SSIM of ``result`` against ``case``'s truth in the reference frame's geometry, and corner error."""
    truth = case.in_frame_geometry(case.truth, ref)
    errors = [
        corner_error_rms(np.array(frame["transform"]), case.true_alignment(i, ref), truth.shape)
        for i, frame in enumerate(result.record["frames"])
        if i != ref
    ]
    return {
        "psnr": psnr(result.image, truth),
        "ssim": ssim(result.image, truth),
        "align_rms": float(np.sqrt(np.mean(np.square(errors)))) if errors else 0.0,
        "align_max": float(np.max(errors)) if errors else 0.0,
        "seconds": result.record["timings"]["total"],
    }


def baselines(case: FocalStack, reference: int) -> dict[str, float]:
    """PSNR of the oracle composite and of the best single frame, in the reference geometry."""
    truth = case.in_frame_geometry(case.truth, reference)
    singles = [psnr(frame, case.in_frame_geometry(case.truth, i)) for i, frame in enumerate(case.frames)]
    return {"oracle": psnr(case.camera_oracle(reference), truth), "best_single": max(singles)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x960")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--blends", default=",".join(BLENDS))
    parser.add_argument("--focus", default=",".join(MEASURES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="other StackingSettings")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    extra = dict(item.split("=", 1) for item in args.set)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            case = make_focal_stack(name, size=(width, height), n_frames=args.frames)
            folder = Path(tmp) / name
            write_stack(case, folder)
            base = baselines(case, reference_index(args.frames, StackingSettings(**extra).reference))
            blends = args.blends.split(",")
            for measure in args.focus.split(","):
                settings = StackingSettings(focus_measure=measure, **extra)
                for blend, scores in zip(blends, score_case(case, folder, settings, blends), strict=True):
                    rows.append({"case": name, "blend": blend, "focus": measure, **base, **scores})
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(f"{'case':22} {'blend':26} {'focus':14} {'PSNR':>6} {'-oracle':>7} {'+single':>7} {'SSIM':>6} "
          f"{'alignRMS':>8} {'max':>5} {'s':>5}")
    for r in rows:
        print(f"{r['case']:22} {r['blend']:26} {r['focus']:14} {r['psnr']:6.2f} {r['psnr'] - r['oracle']:7.2f} "
              f"{r['psnr'] - r['best_single']:7.2f} {r['ssim']:6.4f} {r['align_rms']:8.3f} {r['align_max']:5.2f} "
              f"{r['seconds']:5.2f}")
    print("\nmean over cases (PSNR - oracle, dB; worst case in brackets):")
    keys = sorted({(r["blend"], r["focus"]) for r in rows})
    for blend, measure in keys:
        gaps = [r["psnr"] - r["oracle"] for r in rows if (r["blend"], r["focus"]) == (blend, measure)]
        ssims = [r["ssim"] for r in rows if (r["blend"], r["focus"]) == (blend, measure)]
        print(f"  {blend:26} {measure:14} {np.mean(gaps):6.2f} [{min(gaps):6.2f}]  SSIM {np.mean(ssims):.4f}")


if __name__ == "__main__":
    main()

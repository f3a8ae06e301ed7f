"""Compare result images pairwise (the arm64 result against the x86 one) and fail if any pair differs too much.

    python .ci/compare_images.py --min-psnr 50 --max-abs 24 A1 B1 [A2 B2 ...] [--records RA1 RB1 ...]

Prints, per pair: size, largest and mean absolute difference, share of differing samples, and PSNR. Exits 1 if a
pair differs in size, channels or bit depth, or is under --min-psnr, or over --max-abs (in 8-bit levels: a 16-bit
image's difference is scaled down by 257 first, so one bound holds for both depths).

--records takes pairs of the stacks' JSON records and prints, for information only, where a difference comes
from: the largest difference between the two sides' per-frame alignment transforms, and whether the focus
decision and each frame's share of the result agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np


def compare(a_path: str, b_path: str) -> dict:
    a, b = (cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in (a_path, b_path))
    if a is None or b is None:
        raise SystemExit(f"cannot decode {a_path if a is None else b_path}")
    if a.shape != b.shape or a.dtype != b.dtype:
        return {"error": f"{a.shape} {a.dtype} vs {b.shape} {b.dtype}"}
    scale = 257.0 if a.dtype == np.uint16 else 1.0
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale
    mse = float(np.mean(diff**2))
    return {
        "shape": "x".join(map(str, a.shape)),
        "dtype": str(a.dtype),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "differing": float(np.count_nonzero(diff) / diff.size),
        "psnr": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse),
    }


def explain(a_path: str, b_path: str) -> str:
    a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (a_path, b_path))
    frames = list(zip(a.get("frames", []), b.get("frames", [])))
    transform = max((abs(x - y) for fa, fb in frames for ra, rb in zip(fa["transform"], fb["transform"])
                     for x, y in zip(ra, rb)), default=0.0)
    share = max((abs(fa["share"] - fb["share"]) for fa, fb in frames), default=0.0)
    return (f"{a.get('name')}: transforms differ by <= {transform:.1e}, shares by <= {share:.4f}, decision "
            f"{'the same' if a.get('decision') == b.get('decision') else 'DIFFERENT'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-psnr", type=float, required=True, help="dB, over 8-bit levels")
    parser.add_argument("--max-abs", type=float, required=True, help="largest allowed difference, 8-bit levels")
    parser.add_argument("images", nargs="+", help="pairs: A1 B1 A2 B2 ...")
    parser.add_argument("--records", nargs="+", default=[], help="pairs of JSON records, for information")
    args = parser.parse_args()
    if len(args.images) % 2 or len(args.records) % 2:
        parser.error("images and records come in pairs")
    for a_path, b_path in zip(args.records[::2], args.records[1::2]):
        print(f"info  {explain(a_path, b_path)}")
    failed = 0
    for a_path, b_path in zip(args.images[::2], args.images[1::2]):
        r = compare(a_path, b_path)
        if "error" in r:
            print(f"FAIL  {a_path} vs {b_path}: {r['error']}")
            failed += 1
            continue
        ok = r["psnr"] >= args.min_psnr and r["max_abs"] <= args.max_abs
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {Path(a_path).name}: {r['shape']} {r['dtype']}, max abs diff "
              f"{r['max_abs']:g}, mean {r['mean_abs']:.4f}, {100 * r['differing']:.3f} % of samples differ, "
              f"PSNR {r['psnr']:.2f} dB (bounds: PSNR >= {args.min_psnr:g} dB, max abs <= {args.max_abs:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Whole-process wall time and peak RSS of `focus-watcher stack`, on the frame sizes rigs write.

    uv run python -m benchmarks.speed [--stacks 16mp:10,16mp:30,64mp:5,1.5mp:10] [--against REV] [--repeat N]
    uv run python -m benchmarks.speed --stacks 16mp:10,16mp-dng12:10,16mp-dng12:10:tif,64mp-dng12:5:tif

Stacks: ``16mp`` 4656x3496 (IMX519), ``64mp`` 9152x6944 (Arducam Hawkeye; the 16 MP frames enlarged: the
renderer's defocus bank is too slow at that size, and speed and memory do not depend on the content),
``1.5mp`` 1500x1000 (microscopy and macro). Frames are rendered once by benchmarks/synthetic.py and cached in
benchmarks/out/. A size with ``-dng10``, ``-dng12`` or ``-dng16`` (``16mp-dng12:10``) is the same stack's frames
as DNGs of that bit depth, written as Picamera2 writes them (benchmarks/picamera_dng.py): the JPEG frames'
light, mosaicked RGGB, under a camera white balance and colour matrix. The result is a JPEG unless a third field
names another format (``:tif``: 16-bit TIFF, what a raw stack is written as by default). Each run is a fresh
process measured by
/usr/bin/time -v (wall clock, CPU time, maximum resident set size). With ``--against REV`` the same runs are
made with the code of git revision REV (checked out in a temporary worktree, same interpreter), interleaved
with the current code, so both are measured under the same machine noise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
SIZES = {"16mp": (4656, 3496), "64mp": (9152, 6944), "1.5mp": (1500, 1000)}


def cached_stack(size: str, frames: int) -> list[Path]:
    """JPEG frames of a synthetic ``size`` stack (a key of SIZES) with ``frames`` frames (rendered on first use)."""
    folder = OUT / f"stack-{size}-{frames}"
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) == frames:
        return paths
    from benchmarks.synthetic import make_focal_stack, write_stack

    print(f"rendering a {size} x {frames} synthetic stack into {folder} (once) ...", file=sys.stderr, flush=True)
    if size == "64mp":
        import cv2

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, source in enumerate(cached_stack("16mp", max(frames, 10))[:frames]):
            frame = cv2.resize(cv2.imread(str(source)), SIZES["64mp"], interpolation=cv2.INTER_CUBIC)
            path = folder / f"hawkeye_{index:02d}.jpg"
            cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(path)
        return paths
    stack = make_focal_stack("coffee_tilt", size=SIZES[size], n_frames=frames)
    return write_stack(stack, folder)


def cached_raw_stack(size: str, frames: int, bits: int) -> list[Path]:
    """DNG frames (``bits`` deep) of the same scene as :func:`cached_stack`'s JPEGs, written on first use."""
    folder = OUT / f"stack-{size}-{frames}-dng{bits}"
    paths = sorted(folder.glob("*.dng"))
    if len(paths) == frames:
        return paths
    import cv2
    import numpy as np

    from benchmarks.picamera_dng import SyntheticCamera, write_dng

    print(f"writing {frames} {bits}-bit DNGs of the {size} stack into {folder} (once) ...", file=sys.stderr,
          flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    camera = SyntheticCamera(bits=bits, black={10: 64, 12: 256, 16: 4096}[bits], model="imx519")
    paths = []
    for index, source in enumerate(cached_stack(size, frames)):
        linear = np.power(cv2.imread(str(source))[..., ::-1].astype(np.float32) / 255, 2.2)
        path = folder / f"scan01_000_fs{index:02d}.dng"
        write_dng(path, linear, camera=camera)
        paths.append(path)
    return paths


# The floor: a process that only decodes every frame once (what any stacker must do) and makes one float pass
# over each (what any blend must do at least).
_FLOOR = """
import sys, cv2, numpy as np
for path in sys.argv[1:]:
    frame = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    total = float(cv2.sumElems(frame.astype(np.float32))[0])
"""


def measure(code: Path, frames: list[Path], output: Path, extra: list[str],
            floor: bool = False) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one `focus-watcher stack` process running the code under
    ``code`` (or, with ``floor``, of the decode-and-one-pass floor)."""
    if floor:
        command = ["/usr/bin/time", "-v", sys.executable, "-c", _FLOOR, *map(str, frames)]
    else:
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "watcher.cli", "stack", *map(str, frames),
                   "-o", str(output), *extra]
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
    if done.returncode != 0:
        raise RuntimeError(f"stack failed ({code}): {done.stderr.strip()[-500:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr).group(1))
              for kind in ("User", "System"))
    hours, minutes, seconds = wall.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), cpu, int(rss.group(1)) / 1024


@contextmanager
def worktree(revision: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision],
                       check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="16mp:10,16mp:30,64mp:5,1.5mp:10",
                        help="comma-separated SIZE:FRAMES, SIZE one of " + ", ".join(SIZES))
    parser.add_argument("--against", metavar="REV", help="also measure git revision REV (e.g. HEAD~1)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="extra flags for `focus-watcher stack` (after --)")
    args = parser.parse_args(argv)
    stacks = {}
    for item in args.stacks.split(","):
        size, frames, ext = (item + ":jpg").split(":")[:3]
        size, _, raw = size.partition("-dng")
        name = f"{size} x {frames}" + (f" DNG{raw}" if raw else "") + (f" -> {ext}" if ext != "jpg" else "")
        paths = cached_raw_stack(size, int(frames), int(raw)) if raw else cached_stack(size, int(frames))
        stacks[name] = (paths, ext)
    with tempfile.TemporaryDirectory() as tmp, (worktree(args.against) if args.against else _none()) as old:
        codes = [("current", REPO)] + ([(args.against, old)] if old else [])
        rows = []
        for name, (frames, ext) in stacks.items():
            for _ in range(args.repeat):
                for label, code in codes:
                    wall, cpu, rss = measure(code, frames, Path(tmp) / f"out.{ext}", args.extra)
                    rows.append((label, name, wall, cpu, rss, len(frames)))
                    print(f"  {label:10} {name}: {wall:6.1f} s  {cpu:6.1f} s CPU  {rss:6.0f} MiB", file=sys.stderr,
                          flush=True)
            if frames[0].suffix == ".jpg":  # the floor decodes with OpenCV: JPEG frames only
                wall, cpu, rss = measure(REPO, frames, Path(tmp) / "out.jpg", [], floor=True)
                rows.append(("floor", name, wall, cpu, rss, len(frames)))
    print(f"\n{'code':10} {'stack':>25} {'wall s':>8} {'CPU s':>8} {'s/frame':>8} {'peak RSS MiB':>13}"
          "   (floor: decode each frame + one pass)")
    for label, name, wall, cpu, rss, count in rows:
        print(f"{label:10} {name:>25} {wall:8.1f} {cpu:8.1f} {wall / count:8.2f} {rss:13.0f}")


@contextmanager
def _none():
    yield None


if __name__ == "__main__":
    main()

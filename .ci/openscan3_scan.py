"""A small OpenScan3 scan for `focus-watcher once`: lay it out as the rig writes it, then check what came of it.

    python .ci/openscan3_scan.py make HOT [--positions 2] [--frames 3] [--scale 0.5]
    python .ci/openscan3_scan.py check RESULTS [--positions 2]

`make` writes HOT/ci-smoke/scan01/scan.json ("completed", settings.focus_stacks = --frames) and, per position
PPP, scan01_PPP_fs00.jpg ...: downscaled copies of tests/data/cmcguinness_steps/step*.jpg (position p takes the
steps p*frames ... p*frames+frames-1, wrapping around), so the stacks are real photographs yet quick under qemu.

`check` passes (exit 0) when RESULTS/ci-smoke/scan01 holds, for each position, the result scan01_PPP.jpg and its
record scan01_PPP.json with status "ok" naming that result, and no other result or record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

STEPS = sorted((Path(__file__).resolve().parent.parent / "tests/data/cmcguinness_steps").glob("step*.jpg"))
SCAN = Path("ci-smoke") / "scan01"


def make(hot: Path, positions: int, frames: int, scale: float) -> None:
    scan = hot / SCAN
    scan.mkdir(parents=True, exist_ok=True)
    for position in range(positions):
        for frame in range(frames):
            step = STEPS[(position * frames + frame) % len(STEPS)]
            image = cv2.imread(str(step), cv2.IMREAD_COLOR)
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            # OpenScan3 saves its frames as JPEG at quality 90.
            cv2.imwrite(str(scan / f"scan01_{position:03d}_fs{frame:02d}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    # The fields focus-watcher reads (watcher/service/naming.py, parse_scan_json), in OpenScan3's Scan layout.
    (scan / "scan.json").write_text(json.dumps({
        "project_name": "ci-smoke", "index": 1, "status": "completed", "current_step": positions,
        "settings": {"points": positions, "focus_stacks": frames, "focus_range": [10.0, 15.0]},
    }, indent=2))


def check(results: Path, positions: int) -> int:
    folder, problems = results / SCAN, []
    expected = {f"scan01_{p:03d}" for p in range(positions)}
    found = {p.stem for p in folder.glob("scan01_*.*")} if folder.is_dir() else set()
    if found - expected:
        problems.append(f"unexpected results/records: {sorted(found - expected)}")
    for stack in sorted(expected):
        result, record_path = folder / f"{stack}.jpg", folder / f"{stack}.json"
        if not record_path.is_file():
            problems.append(f"{record_path}: no record")
            continue
        record = json.loads(record_path.read_text())
        if record.get("status") != "ok":
            problems.append(f"{record_path}: status {record.get('status')!r}, error {record.get('error')!r}")
        if not result.is_file() or cv2.imread(str(result)) is None:
            problems.append(f"{result}: missing or not a readable image")
        elif Path(str(record.get("output"))).name != result.name:
            problems.append(f"{record_path}: output {record.get('output')!r}, not {result.name}")
        else:
            print(f"ok    {stack}: {result.name} + {record_path.name} (status ok, complete_because "
                  f"{record.get('complete_because')!r}, {record.get('duration_seconds')} s, "
                  f"{len(record.get('inputs', []))} frames, warnings {record.get('warnings')})")
    for problem in problems:
        print(f"FAIL  {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_parser = commands.add_parser("make")
    make_parser.add_argument("hot", type=Path)
    make_parser.add_argument("--positions", type=int, default=2)
    make_parser.add_argument("--frames", type=int, default=3)
    make_parser.add_argument("--scale", type=float, default=0.5)
    check_parser = commands.add_parser("check")
    check_parser.add_argument("results", type=Path)
    check_parser.add_argument("--positions", type=int, default=2)
    args = parser.parse_args()
    if args.command == "make":
        make(args.hot, args.positions, args.frames, args.scale)
        return 0
    return check(args.results, args.positions)


if __name__ == "__main__":
    sys.exit(main())

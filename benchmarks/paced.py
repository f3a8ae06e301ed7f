"""Keeping pace with the rig: an OpenScan3 scan played into a running daemon at the rig's own pace.

    uv run python -m benchmarks.paced [--positions 40] [--frames 5] [--interval 12] [--size 16mp] [--workers N]

A real daemon (default settings, except the folders) watches a hot folder; every ``interval`` seconds a position's
``frames`` frames are written into ``<hot>/bench/scan01/`` under OpenScan3's names, one after the other as the
firmware writes them, with its ``scan.json`` (running, then completed after the last position). Printed: per
position, the delay from its last frame to its result (``stack.done`` in the daemon's log), and the delay at the
end of the scan (its last frame to its last result). The frames are those of benchmarks/speed.py's synthetic
stack of that size, the same at every position (as a turntable shows the same object from another side).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.speed import cached_stack

REPO = Path(__file__).resolve().parents[1]


def write_scan_json(folder: Path, status: str, positions: int, frames: int) -> None:
    """OpenScan3's scan.json, written atomically as the firmware does."""
    temp = folder / ".tmp_scan.json"
    temp.write_text(json.dumps({"status": status, "settings": {"points": positions, "focus_stacks": frames}}))
    temp.replace(folder / "scan.json")


def done_times(log: Path) -> dict[str, float]:
    """Epoch seconds of each stack's ``stack.done``."""
    found = {}
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "stack.done":
            found[event["stack"]] = datetime.fromisoformat(event["timestamp"]).timestamp()
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=40)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--interval", type=float, default=12.0, help="seconds from one position to the next")
    parser.add_argument("--size", default="16mp", help="a size of benchmarks/speed.py (16mp, 64mp, 1.5mp)")
    parser.add_argument("--workers", type=int, help="workers.count (default: the daemon's own, cores - 1)")
    args = parser.parse_args(argv)
    sources = [path.read_bytes() for path in cached_stack(args.size, max(args.frames, 10))[: args.frames]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hot, results = root / "hot", root / "results"
        scan = hot / "bench" / "scan01"
        scan.mkdir(parents=True)
        config = root / "config.toml"
        config.write_text(f'hot_folder = "{hot}"\nresults_folder = "{results}"\n'
                          + (f"[workers]\ncount = {args.workers}\n" if args.workers else ""))
        daemon = subprocess.Popen([sys.executable, "-m", "watcher.cli", "run", "--config", str(config)], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = results / "focus-watcher.log"
        try:
            while "daemon.ready" not in (log.read_text() if log.exists() else ""):
                time.sleep(0.2)
            write_scan_json(scan, "running", args.positions, args.frames)
            last_frame: dict[str, float] = {}
            start = time.time()
            for position in range(args.positions):
                time.sleep(max(0.0, start + position * args.interval - time.time()))
                for focus, data in enumerate(sources):
                    (scan / f"scan01_{position:03d}_fs{focus:02d}.jpg").write_bytes(data)
                last_frame[f"bench/scan01/scan01_{position:03d}"] = time.time()
                print(f"  position {position + 1}/{args.positions} written", file=sys.stderr, flush=True)
            write_scan_json(scan, "completed", args.positions, args.frames)
            while len(done := done_times(log)) < args.positions:
                time.sleep(0.5)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
        delays = [done[stack] - written for stack, written in last_frame.items()]
        end = max(done.values()) - max(last_frame.values())
        print(f"\n{args.positions} positions x {args.frames} frames of {args.size}, one position every "
              f"{args.interval:g} s, workers {args.workers or 'default'}")
        print(f"{'position':>8} {'last frame -> result, s':>24}")
        for index, delay in enumerate(delays):
            print(f"{index:8} {delay:24.1f}")
        print(f"\ndelay per position: median {statistics.median(delays):.1f} s, max {max(delays):.1f} s; "
              f"end of scan -> all stacked: {end:.1f} s ({'within' if end <= args.interval else 'beyond'} one "
              f"position interval of {args.interval:g} s)")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Throughput and event-to-result latency of the daemon for a burst of small stacks.

    uv run python -m benchmarks.daemon_burst [--stacks 200] [--frames 3] [--size 640x480] [--workers N]
                                              [--settle 5]

A real `focus-watcher run` process watches a temp hot folder; the burst writes every stack's frames as fast as the
disk takes them (final names written directly, like OpenScan3). Latency of a stack = its JSON record appearing
minus its last frame being written (it includes the settle time: a frame must stay unchanged `--settle` s before it
is trusted). Throughput = stacks / (last record - first frame).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.synthetic import make_focal_stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=200)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    case = make_focal_stack("coffee_tilt", size=(width, height), n_frames=args.frames)
    frames = [case.jpeg_bytes[i] if case.jpeg_bytes else cv2.imencode(".jpg", f)[1].tobytes()
              for i, f in enumerate(case.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hot, results = root / "hot", root / "results"
        hot.mkdir()
        config = root / "config.toml"
        config.write_text(
            f'hot_folder = "{hot}"\nresults_folder = "{results}"\n'
            f"[naming]\nstack_size = {args.frames}\n"
            f"[completeness]\nsettle_seconds = {args.settle}\n"
            f"[workers]\ncount = {args.workers}\nqueue_size = 16\n"
        )
        daemon = subprocess.Popen([sys.executable, "-m", "watcher.cli", "run", "--config", str(config)],
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_for(lambda: (results / "focus-watcher.log").exists(), 60)
            time.sleep(1.0)  # let the observer and the forkserver come up
            written = {}
            first = time.time()
            for s in range(args.stacks):
                for k, data in enumerate(frames):
                    (hot / f"pos{s:04d}_f{k}.jpg").write_bytes(data)
                written[f"pos{s:04d}"] = time.time()
            burst = time.time() - first
            records = {name: results / f"{name}.json" for name in written}
            _wait_for(lambda: all(p.exists() for p in records.values()), 60 + args.stacks * 10)
            done = {name: path.stat().st_mtime for name, path in records.items()}
            statuses = [json.loads(p.read_text())["status"] for p in records.values()]
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=120)
    latencies = np.array([done[name] - written[name] for name in written])
    span = max(done.values()) - first
    print(f"{'stacks':>6} {'frames':>6} {'size':>9} {'workers':>7} {'settle s':>8} {'burst s':>7} {'total s':>7} "
          f"{'stacks/min':>10} {'latency p50':>11} {'p90':>6} {'max':>6} {'ok':>5}")
    print(f"{args.stacks:6} {args.frames:6} {args.size:>9} {args.workers:7} {args.settle:8.1f} {burst:7.1f} "
          f"{span:7.1f} {args.stacks / span * 60:10.1f} {np.median(latencies):11.1f} "
          f"{np.percentile(latencies, 90):6.1f} {latencies.max():6.1f} {statuses.count('ok'):5}")


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not finish in time")
        time.sleep(0.2)


if __name__ == "__main__":
    main()

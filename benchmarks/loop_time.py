"""How long one pass of the daemon's main loop takes when the hot folder keeps a lot, and whether its memory
grows with the nights it runs.

    uv run python -m benchmarks.loop_time [--frames 100000] [--zips 3] [--members 1000] [--nights 30]
                                          [--kept-nights 0]

Builds a hot folder of OpenScan3 scans (500 frames each) that keeps ``--frames`` frames, all already stacked
(a record and a result for each stack, as a daemon with ``results.after_success = "keep"`` leaves them), plus
``--zips`` scan zips of ``--members`` members each, also stacked. Then runs the real :class:`Daemon` loop in this
process, timing each pass (:meth:`Daemon.step`, with no waiting):

- start-up: the passes of the first walk, then every pass until every stack is found done;
- idle: passes with nothing happening (the state of a night between positions);
- a rescan: the passes of a walk of the whole hot folder (every ``observer.rescan_seconds``);
- a new stack: passes while 3 frames arrive in a scan of 500 and settle;
- a new zip: passes while a ``--members``-member zip arrives and its members settle.

Then ``--nights`` nights, as a rig has them: each night a new scan folder of 500 frames arrives (with its
records), is found done, and the scan of ``--kept-nights`` nights before is cleared away, then the hot folder is
walked again. After each night the daemon's RSS and the sizes of what it keeps per scan and per stack are
printed, and at the end the growth from night 2 to the last (night 1 still fills caches of the first new scan).
The bound the daemon promises: every pass well under a second, memory flat over nights.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import operator
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from watcher.config import LoggingSettings, load_settings
from watcher.log import configure_logging
from watcher.service.daemon import Daemon
from watcher.service.notify import SystemdNotifier

FRAMES_PER_SCAN, FOCUS = 500, 5


def tiny_jpeg() -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def write_done_stack(results: Path, scan: str, stack: str, inputs: list[tuple[str, int, int]]) -> None:
    """A record and a result as the daemon writes them (the fields "done" needs)."""
    folder = results.joinpath(*[p[:-4] if p.endswith(".zip") else p for p in scan.split("/")])
    folder.mkdir(parents=True, exist_ok=True)
    result = b"\xff\xd8result\xff\xd9"
    (folder / f"{stack}.jpg").write_bytes(result)
    output = (folder / f"{stack}.jpg").relative_to(results).as_posix()
    record = {"stack": f"{scan}/{stack}", "scan": scan, "name": stack, "status": "ok", "error": None,
              "inputs": [{"name": n, "size": s, "mtime_ns": m} for n, s, m in inputs], "output": output,
              "outputs": [{"path": output, "bytes": len(result)}]}
    (folder / f"{stack}.json").write_text(json.dumps(record))


def write_scan(hot: Path, results: Path, project: str, index: int, data: bytes) -> None:
    """One OpenScan3 scan of FRAMES_PER_SCAN frames, already stacked."""
    folder = hot / project / f"scan{index:02d}"
    folder.mkdir(parents=True)
    (folder / "scan.json").write_text(json.dumps({"status": "completed", "settings": {"focus_stacks": FOCUS}}))
    for position in range(FRAMES_PER_SCAN // FOCUS):
        inputs = []
        for focus in range(FOCUS):
            path = folder / f"scan{index:02d}_{position:03d}_fs{focus:02d}.jpg"
            path.write_bytes(data)
            info = path.stat()
            inputs.append((path.name, info.st_size, info.st_mtime_ns))
        write_done_stack(results, f"{project}/scan{index:02d}", f"scan{index:02d}_{position:03d}", inputs)


def write_zip(hot: Path, results: Path, name: str, members: int, data: bytes, done: bool = True) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(members):
            archive.writestr(f"owl_1_{index // FOCUS}-{index % FOCUS}.jpg", data)
    path = hot / name
    path.write_bytes(buffer.getvalue())
    if done:
        mtime = path.stat().st_mtime_ns
        for position in range(-(-members // FOCUS)):
            names = [f"owl_1_{position}-{k}.jpg" for k in range(FOCUS) if position * FOCUS + k < members]
            write_done_stack(results, name, f"owl_1_{position}", [(n, len(data), mtime) for n in names])


def clear_away(folder: Path) -> None:
    """Delete a scan's folder as its user does once the scan is uploaded."""
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    folder.rmdir()


def passes(daemon: Daemon, until, limit: float = 600.0) -> list[float]:
    """Pass times (s) until ``until()`` is true after a pass."""
    times = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.perf_counter()
        daemon.step(wait=0.0)
        times.append(time.perf_counter() - started)
        if until():
            return times
        time.sleep(0.01)
    raise TimeoutError(f"the daemon did not get there: {daemon.counts} {daemon.tracker.unsettled()} "
                       f"{sorted(daemon.tracker._open)[:5]} {len(daemon.queue)} {daemon.pool.running}")


def idle(daemon: Daemon) -> bool:
    return not daemon.tracker.unsettled() and daemon.tracker.pending() == 0 and not daemon.queue \
        and not daemon.pool.running


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def row(name: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"{name:34} {len(ms):7} {statistics.median(ms):10.1f} {max(ms):10.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames kept in the hot folder")
    parser.add_argument("--zips", type=int, default=3)
    parser.add_argument("--members", type=int, default=1000, help="members per zip")
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--kept-nights", type=int, default=0,
                        help="a night's scan is cleared away this many nights later (0: the same night)")
    parser.add_argument("--log-level", default="warning", help="the daemon's log level (on stderr)")
    args = parser.parse_args(argv)
    configure_logging(LoggingSettings(level=args.log_level), None)
    data = tiny_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hot, results = root / "hot", root / "results"
        hot.mkdir()
        started = time.monotonic()
        for scan in range(args.frames // FRAMES_PER_SCAN):
            write_scan(hot, results, f"proj{scan // 50:02d}", scan % 50 + 1, data)
        for z in range(args.zips):
            write_zip(hot, results, f"2024-01-0{z + 1}_10.00.00-owl.zip", args.members, data)
        print(f"built {args.frames} frames in {args.frames // FRAMES_PER_SCAN} scans and {args.zips} zips of "
              f"{args.members} members, all stacked, in {time.monotonic() - started:.0f} s")
        settings = load_settings(None, {
            "hot_folder": hot, "results_folder": results, "workers": {"count": 1},
            "completeness": {"settle_seconds": 0.2}, "observer": {"rescan_seconds": 3600},
            "logging": {"level": args.log_level}})
        daemon = Daemon(settings, notifier=SystemdNotifier({}))
        lines = [f"{'pass':34} {'passes':>7} {'median ms':>10} {'max ms':>10}"]
        daemon.start()
        lines.append(row("start-up: the first walk", passes(daemon, lambda: not daemon.intake.walking)))
        lines.append(row("start-up: until all found done", passes(daemon, lambda: idle(daemon))))
        quiet = time.monotonic() + 3.0
        lines.append(row("idle (3 s)", passes(daemon, lambda: time.monotonic() > quiet)))
        daemon.intake.next_walk = 0.0
        lines.append(row("a rescan of the whole hot folder", passes(daemon, lambda: not daemon.intake.walking)))
        folder = hot / "proj00" / "scan01"
        for k in range(3):
            (folder / f"scan01_900_fs{k:02d}.jpg").write_bytes(data)
        (folder / "scan.json").write_text(json.dumps({"status": "completed", "settings": {"focus_stacks": 3}}))
        lines.append(row("a new stack arrives, settles, runs", passes(
            daemon, lambda: idle(daemon) and daemon.counts["done"] + daemon.counts["failed"] >= 1, 120)))
        write_zip(hot, results, "2024-02-01_10.00.00-new.zip", args.members, data, done=True)
        lines.append(row(f"a new {args.members}-member zip arrives", passes(daemon, lambda: idle(daemon))))
        print("\n".join(lines))

        print(f"\n{'night':>5} {'RSS MiB':>8} {'scans known':>12} {'stacks known':>13} {'done known':>11} "
              f"{'outputs watched':>16}")
        rss = {}
        for night in range(1, args.nights + 1):
            write_scan(hot, results, f"night{night:03d}", 1, data)
            passes(daemon, lambda: idle(daemon))
            if night - args.kept_nights >= 1:
                clear_away(hot / f"night{night - args.kept_nights:03d}")
            daemon.intake.next_walk = 0.0
            passes(daemon, lambda: not daemon.intake.walking)
            passes(daemon, lambda: operator.length_hint(daemon._outputs_to_check) == 0)  # results checked too
            gc.collect()
            rss[night] = rss_mb()
            print(f"{night:5} {rss[night]:8.1f} {len(daemon.tracker.scans()):12} {len(daemon.tracker._where):13} "
                  f"{len(daemon.tracker._done):11} {len(daemon.outputs):16}", flush=True)
        if args.nights >= 2:
            print(f"RSS from night 2 to night {args.nights}: {rss[2]:.1f} -> {rss[args.nights]:.1f} MiB "
                  f"({rss[args.nights] - rss[2]:+.1f} MiB)")
        daemon.shutdown()
        daemon.lock.release()


if __name__ == "__main__":
    main()

"""Cost of keeping the report up to date for a results folder of thousands of stacks.

    uv run python -m benchmarks.report [--stacks 2000] [--scans 5] [--folder DIR]

Writes ``--stacks`` records (a real engine record of a small synthetic stack, with the per-frame ``share`` and
``focus_change`` of the record contract, 1 % failed) spread over ``--scans`` scans, with result and thumbnail
files, then times what the daemon and the ``report`` command will do: the first build, a rebuild with nothing
changed, a refresh after each of several finished stacks (what the daemon pays per stack), the same with pending
stacks changing, and a full rebuild after one stack. Every page and state file is written with fsync, as in
production; the folder is on disk (not tmpfs) unless ``--folder`` says otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic import make_focal_stack
from watcher.config import StackingSettings
from watcher.layout import INDEX
from watcher.report import PendingStack, RefreshStats, Report
from watcher.report.paths import scan_page as scan_page_of
from watcher.report.paths import thumbnail as thumbnail_path
from watcher.service.naming import StackId
from watcher.service.records import build_record
from watcher.stacking.output import encode_image, thumbnail
from watcher.stacking.pipeline import stack

FRAMES = 7
REFRESHES = 20


class Results:
    """A results folder in the mirror layout, filled with records as the daemon writes them."""

    def __init__(self, root: Path) -> None:
        case = make_focal_stack("coffee_tilt", size=(320, 240), n_frames=FRAMES)
        frames = root.parent / "frames"
        frames.mkdir(parents=True)
        for index, data in enumerate(case.jpeg_bytes):
            (frames / f"f{index}.jpg").write_bytes(data)
        fused = stack(sorted(frames.glob("*.jpg")), StackingSettings())
        self.engine = fused.record
        self.image = encode_image(fused.image, "jpg")[0]
        self.thumb = encode_image(thumbnail(fused.image), "jpg", jpeg_quality=85)[0]
        self.root = root
        self.rng = random.Random(0)
        self.started = time.time() - 8 * 3600

    def write(self, scan: str, position: int) -> Path:
        name = f"{scan.rsplit('/', 1)[-1]}_{position:03d}"
        folder = self.root / scan
        folder.mkdir(parents=True, exist_ok=True)
        failed = self.rng.random() < 0.01
        engine = None
        if not failed:
            engine = copy.deepcopy(self.engine)
            weights = [self.rng.uniform(0.5, 1.5) for _ in range(FRAMES)]
            for index, frame in enumerate(engine["frames"]):
                frame["share"] = weights[index] / sum(weights)
                frame["focus_change"] = None if index == 0 else self.rng.uniform(0.8, 1.2)
            (folder / f"{name}.jpg").write_bytes(self.image)
            small = self.root / thumbnail_path(f"{scan}/{name}.json")  # where the worker writes it
            small.parent.mkdir(parents=True, exist_ok=True)
            small.write_bytes(self.thumb)
        signature = tuple((f"{name}_fs{k:02d}.jpg", 16_000_000, k) for k in range(FRAMES))
        start = self.started + 10.0 * position
        outputs = [] if failed else [{"path": f"{scan}/{name}.jpg", "bytes": len(self.image)}]
        record = build_record(StackId(scan, name), signature, status="failed" if failed else "ok", reason="count",
                              attempts=1, started_at=start, finished_at=start + 9.5, outputs=outputs,
                              error="scan_fs03.jpg: truncated JPEG (no end marker FF D9)" if failed else None,
                              engine=engine)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(record, indent=2))
        return path


def row(label: str, seconds: float, stats: RefreshStats | None) -> str:
    pages = stats.stack_pages + stats.scans_rendered + stats.index_rendered if stats else 0
    read = stats.records_read if stats else 0
    return f"| {label} | {seconds * 1000:.0f} ms | {read} | {pages} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=2000)
    parser.add_argument("--scans", type=int, default=5)
    parser.add_argument("--folder", type=Path, help="where to build the results folder (default: a temp folder)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="report-bench-", dir=args.folder))
    try:
        results = Results(base / "results")
        per_scan = args.stacks // args.scans
        scans = [f"proj/scan{n + 1:02d}" for n in range(args.scans)]
        for scan in scans:
            for position in range(per_scan - (1 if scan == scans[-1] else 0)):
                results.write(scan, position)
        report = Report(results.root)
        lines = ["| step | wall time | records read | pages written |", "| --- | --- | --- | --- |"]
        first = report.rebuild()
        lines.append(row(f"first build, {first.stacks} stacks in {first.scans} scans", first.seconds, first))
        nothing = report.rebuild()
        lines.append(row("rebuild, nothing changed (`focus-watcher report`)", nothing.seconds, nothing))
        # The daemon's case: a stack finishes at the end of the last scan; refresh with its record path.
        last, position, timings = scans[-1], per_scan - 1, []
        for _ in range(REFRESHES):
            path = results.write(last, position)
            stats = report.refresh([path], [])
            timings.append(stats.seconds)
            position += 1
        lines.append(row(f"refresh after one finished stack (median of {REFRESHES}), {per_scan}-stack scan",
                         statistics.median(timings), stats))
        pending = [PendingStack(results.root / last / f"scan{args.scans:02d}_{p:03d}.json", f"p{p}")
                   for p in range(position + 1, position + 11)]
        path = results.write(last, position)
        with_pending = report.refresh([path], pending)
        lines.append(row("refresh after one stack, 10 stacks pending", with_pending.seconds, with_pending))
        path = results.write(scans[0], 3)  # stacked again: an existing position changes
        started = time.perf_counter()
        full = report.rebuild(pending)
        lines.append(row("full rebuild after one stack changed (walk + one scan)", time.perf_counter() - started, full))
        index = results.root / INDEX
        scan_page = results.root / scan_page_of(last)
        print("\n".join(lines))
        print(f"\nindex.html {index.stat().st_size / 1024:.0f} KiB, a {per_scan}-stack scan page "
              f"{scan_page.stat().st_size / 1024:.0f} KiB, its state "
              f"{(scan_page.parent / '.stacks.json').stat().st_size / 1024:.0f} KiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

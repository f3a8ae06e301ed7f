"""A night of results for the report tests: real images and a real engine record, records written by the test.

The PCB stack is fused once per session by the real engine (with its depth map); every position of the night
reuses that result and record, with the per-frame ``share`` and ``focus_change`` of the record contract set per
position, thumbnails made by :func:`watcher.stacking.output.thumbnail`, and records built by the daemon's own
:func:`watcher.service.records.build_record`. Failures carry the kind of reasons the daemon writes, absolute
paths included (the report must not show them).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from watcher.config import StackingSettings
from watcher.names import name_fields
from watcher.report import PendingStack
from watcher.report.paths import depth_thumbnail
from watcher.report.paths import thumbnail as thumbnail_path
from watcher.service.naming import StackId
from watcher.service.records import build_record
from watcher.stacking.output import encode_image, thumbnail
from watcher.stacking.pipeline import stack

NIGHT_START = datetime(2024, 5, 1, 21, 0).astimezone().timestamp()


@dataclass(frozen=True)
class Fused:
    image: bytes
    depth: bytes
    thumb: bytes
    depth_thumb: bytes
    record: dict


@pytest.fixture(scope="session")
def fused(pcb_stack) -> Fused:
    result = stack(pcb_stack, StackingSettings(depthmap=True))
    return Fused(
        image=encode_image(result.image, "jpg", jpeg_quality=90)[0],
        depth=encode_image(result.depthmap, "png")[0],
        thumb=encode_image(thumbnail(result.image), "jpg", jpeg_quality=85)[0],
        depth_thumb=encode_image(thumbnail(result.depthmap), "png")[0],
        record=result.record,
    )


@dataclass
class Night:
    """A results folder being filled; remembers what it wrote."""

    results: Path
    fused: Fused
    layout: str = "mirror"
    stacks: dict[str, dict] = field(default_factory=dict)  # record path (relative) -> record
    pending: list[PendingStack] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def folder(self, scan: str) -> Path:
        """Where the results go (openscan: OpenScan3's ``stacked/``)."""
        return self.results / scan / ("stacked" if self.layout == "openscan" else "")

    def records_folder(self, scan: str) -> Path:
        """Where the records and depth maps go (openscan: apart from the results, in focus-watcher's folder)."""
        return self.results / ".focus-watcher/stacks" / scan if self.layout == "openscan" else self.results / scan

    def stem(self, name: str) -> str:
        return f"stacked_{name}" if self.layout == "openscan" else name

    def record_path(self, scan: str, name: str) -> Path:
        return self.records_folder(scan) / f"{self.stem(name)}.json"

    def ok(self, scan: str, name: str, index: int, shares=None, changes=None, *, thumbs=True, warnings=()) -> Path:
        """An ok stack: result, depth map, thumbnails (unless ``thumbs`` is False: an older record) and record."""
        folder, stem = self.folder(scan), self.stem(name)
        folder.mkdir(parents=True, exist_ok=True)
        self.records_folder(scan).mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.jpg").write_bytes(self.fused.image)
        (self.records_folder(scan) / f"{stem}.depth.png").write_bytes(self.fused.depth)
        engine = copy.deepcopy(self.fused.record)
        engine.pop("focus_range", None)  # the report works the advice out from the shares
        if shares is None:  # a record from before the engine measured shares
            for frame in engine["frames"]:
                frame.pop("share", None), frame.pop("focus_change", None)
        else:
            for frame, share, change in zip(engine["frames"], shares, changes, strict=True):
                frame["share"], frame["focus_change"] = share, change
        engine["warnings"] = list(warnings)
        if thumbs:  # where the worker writes them: in the report's folder
            relative = self.record_path(scan, name).relative_to(self.results).as_posix()
            for path, data in ((thumbnail_path(relative), self.fused.thumb),
                               (depth_thumbnail(relative), self.fused.depth_thumb)):
                (self.results / path).parent.mkdir(parents=True, exist_ok=True)
                (self.results / path).write_bytes(data)
        record = self._record(scan, name, index, "ok", engine=engine)
        return self._write(scan, name, record)

    def failed(self, scan: str, name: str, index: int, error: str) -> Path:
        self.records_folder(scan).mkdir(parents=True, exist_ok=True)
        return self._write(scan, name, self._record(scan, name, index, "failed", error=error))

    def waiting(self, scan: str, name: str) -> None:
        self.pending.append(PendingStack(self.record_path(scan, name), name))

    def _record(self, scan, name, index, status, *, engine=None, error=None) -> dict:
        frames = len(self.fused.record["frames"])
        signature = tuple((f"{name}_fs{k:02d}.jpg", 4_000_000 + k, 1_714_590_000_000_000_000 + k)
                          for k in range(frames))
        started = NIGHT_START + 75.0 * index
        output = (self.folder(scan) / f"{self.stem(name)}.jpg").relative_to(self.results).as_posix()
        outputs = [{**name_fields("path", output), "bytes": len(self.fused.image)}] if status == "ok" else []
        return build_record(StackId(scan, name), signature, status=status, reason="count", attempts=1,
                            started_at=started, finished_at=started + 4.0 + self.rng.random(),
                            outputs=outputs, error=error, engine=engine)

    def _write(self, scan: str, name: str, record: dict) -> Path:
        path = self.record_path(scan, name)
        path.write_text(json.dumps(record, indent=2))
        self.stacks[path.relative_to(self.results).as_posix()] = record
        return path


def healthy_shares(rng: random.Random, n: int = 7) -> tuple[list[float], list[float | None]]:
    """Shares of a range that covers the object: a bump over the middle frames, ends small."""
    base = [0.06, 0.15, 0.2, 0.22, 0.18, 0.12, 0.07][:n]
    noisy = [max(0.02, b + rng.uniform(-0.02, 0.02)) for b in base]
    total = sum(noisy)
    return [round(v / total, 4) for v in noisy], [None] + [round(rng.uniform(0.8, 1.2), 3) for _ in range(n - 1)]


def short_near_shares(rng: random.Random, n: int = 7) -> tuple[list[float], list[float | None]]:
    """The nearest frame collects what lies nearer than the range: a large first share."""
    shares, changes = healthy_shares(rng, n)
    shares[0] += 0.4
    total = sum(shares)
    return [round(v / total, 4) for v in shares], changes


TRUNCATED = "scan01_007_fs03.jpg: truncated JPEG (no end marker FF D9): {hot}/proj/scan01/scan01_007_fs03.jpg"
INTERNAL = ('internal error: ValueError: bad shape | File "{repo}/watcher/stacking/pipeline.py", line 212, in stack')


@pytest.fixture
def night(tmp_path, fused) -> Night:
    """proj/scan01: 24 positions, 2 failed, 2 pending (one new, one being stacked again); proj/scan02: records
    from before thumbnails and shares; proj/scan03: a range short at the near end."""
    results = tmp_path / "results"
    night = Night(results, fused)
    hot = tmp_path / "hot"
    for index in range(24):
        name = f"scan01_{index:03d}"
        if index == 7:
            night.failed("proj/scan01", name, index, TRUNCATED.format(hot=hot))
        elif index == 15:
            night.failed("proj/scan01", name, index, INTERNAL.format(repo=Path(__file__).resolve().parents[2]))
        else:
            warnings = ["pcb_003.jpg: alignment fell back to affine (homography implausible)"] if index == 11 else ()
            night.ok("proj/scan01", name, index, *healthy_shares(night.rng), warnings=warnings)
    night.waiting("proj/scan01", "scan01_024")
    night.waiting("proj/scan01", "scan01_003")
    for index in range(6):
        night.ok("proj/scan02", f"scan02_{index:03d}", 30 + index, thumbs=False)
    for index in range(8):
        night.ok("proj/scan03", f"scan03_{index:03d}", 40 + index, *short_near_shares(night.rng))
    return night

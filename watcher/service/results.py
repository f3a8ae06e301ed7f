"""The results folder: where each stack's outputs live, and whether a stack is already done.

"Done" is on disk, not in memory: a stack is done when its JSON record says ``ok`` or ``failed`` for exactly
the inputs (names, sizes, mtimes) it has now. So a restart, after a clean stop or a ``kill -9``, needs no other
state, and changed inputs (a frame replaced) are stacked again. Every file is written atomically; a record is
written last, after the image, so it is the commit point of a stack.

Layouts (``results.layout``):

- ``mirror``: ``<results>/<scan path>/<stack>.<ext>`` and ``<stack>.json`` (``<stack>.depth.png`` with depth maps);
  a zip scan ``2024-...-owl.zip`` becomes the folder ``2024-...-owl``.
- ``openscan``: ``<results>/<scan path>/stacked/stacked_<stack>.jpg`` (and ``.json``), where OpenScan3's own
  stacker puts its results, so the firmware's upload finds them. Point ``results_folder`` at the projects
  folder (it may then equal ``hot_folder``; ``stacked`` folders are never watched).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from watcher import __version__
from watcher.atomic import fsync_folder, is_temp_name, write_atomic
from watcher.config import ResultsSettings
from watcher.service.naming import StackId, is_safe_component
from watcher.service.tracker import Signature

LOG_NAME = "focus-watcher.log"
OPENSCAN_FOLDER = "stacked"


class UnsafePathError(ValueError):
    """A stack id that would place a file outside the results folder."""


@dataclass(frozen=True)
class StackPaths:
    image: Path
    record: Path
    depthmap: Path


class ResultStore:
    """Paths, records and input disposal for one results folder."""

    def __init__(self, root: Path, settings: ResultsSettings, output_format: str) -> None:
        self.root = root
        self.settings = settings
        self.extension = {"jpg": ".jpg", "png": ".png", "tif": ".tif"}[output_format]

    def paths(self, stack: StackId) -> StackPaths:
        """Where ``stack``'s outputs go. Raises :class:`UnsafePathError` for ids that would leave the folder."""
        parts = [part for part in stack.scan.split("/") if part]
        if parts and parts[-1].lower().endswith(".zip"):
            parts[-1] = parts[-1][: -len(".zip")]
        if not all(is_safe_component(part) for part in [*parts, stack.stack]):
            raise UnsafePathError(f"unsafe stack id {str(stack)!r}")
        folder = self.root.joinpath(*parts)
        if self.settings.layout == "openscan":
            folder, stem = folder / OPENSCAN_FOLDER, f"stacked_{stack.stack}"
        else:
            stem = stack.stack
        return StackPaths(
            image=folder / (stem + (".jpg" if self.settings.layout == "openscan" else self.extension)),
            record=folder / f"{stem}.json",
            depthmap=folder / f"{stem}.depth.png",
        )

    def read_record(self, stack: StackId) -> dict | None:
        try:
            return json.loads(self.paths(stack).record.read_text())
        except (OSError, ValueError):
            return None

    def done(self, stack: StackId, signature: Signature) -> str | None:
        """``"ok"`` or ``"failed"`` if a record exists for exactly these inputs, else None."""
        record = self.read_record(stack)
        if record is None or signature_of(record) != signature:
            return None
        status = record.get("status")
        return status if status in ("ok", "failed") else None

    def write_record(self, stack: StackId, record: dict) -> Path:
        path = self.paths(stack).record
        write_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())
        return path

    def records(self) -> Iterator[dict]:
        """Every stack record under the results folder (for ``status``)."""
        for path in self.root.rglob("*.json"):
            if is_temp_name(path.name):
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and "stack" in record and "status" in record:
                yield record

    def remove_stale_temp_files(self) -> int:
        """Delete temp files left by a crash mid-write (they never carry a final name). Returns how many."""
        removed = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                if is_temp_name(name):
                    try:
                        Path(folder, name).unlink(missing_ok=True)
                    except OSError:  # read-only for now: they are hidden and will go at a later start
                        continue
                    removed += 1
        return removed

    def dispose_inputs(self, scan: str, files: list[Path]) -> str:
        """After a durable ``ok`` record: keep, archive or delete the stack's input files. Returns what was done."""
        action = self.settings.after_success
        if action == "keep":
            return "kept"
        for path in files:
            if action == "delete":
                path.unlink(missing_ok=True)
                continue
            target = self.settings.archive_folder.joinpath(*[p for p in scan.split("/") if p], path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            _move_durably(path, target)
        for folder in {path.parent for path in files}:
            fsync_folder(folder)
        return "archived" if action == "archive" else "deleted"


def signature_of(record: dict) -> Signature:
    return tuple((i["name"], int(i["size"]), int(i["mtime_ns"])) for i in record.get("inputs", ()))


def _move_durably(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:
        # Another filesystem: copy, make the copy durable, then remove the original.
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        fsync_folder(target.parent)
        source.unlink()


def build_record(
    stack: StackId,
    signature: Signature,
    *,
    status: str,
    reason: str,
    attempts: int,
    started_at: float,
    finished_at: float,
    output: Path | None,
    error: str | None = None,
    engine: dict | None = None,
) -> dict:
    """The JSON record of one stack: what went in, what happened, and (if it ran) the engine's account."""
    record = {
        "stack": str(stack),
        "scan": stack.scan,
        "name": stack.stack,
        "status": status,
        "error": error,
        "complete_because": reason,
        "inputs": [{"name": name, "size": size, "mtime_ns": mtime} for name, size, mtime in signature],
        "output": str(output) if output is not None and status == "ok" else None,
        "attempts": attempts,
        "started_at": datetime.fromtimestamp(started_at).astimezone().isoformat(timespec="seconds"),
        "finished_at": datetime.fromtimestamp(finished_at).astimezone().isoformat(timespec="seconds"),
        "duration_seconds": round(finished_at - started_at, 3),
        "software": f"focus-watcher {__version__}",
    }
    if engine:
        record.update({key: value for key, value in engine.items() if key not in record and key != "outputs"})
    return record

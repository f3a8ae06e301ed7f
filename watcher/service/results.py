"""The results folder: where each stack's outputs live, and whether a stack is already done.

"Done" is on disk, not in memory: a stack is done when its JSON record says ``ok`` or ``failed`` for exactly
the inputs (names, sizes, mtimes) it has now, *and* every output the record lists is still there with the size it
was written with (a result deleted by hand, or by OpenScan's "delete photos", is made again). So a restart, after
a clean stop or a ``kill -9``, needs no other state, and changed inputs (a frame replaced) are stacked again.
Every file is written atomically; a record is written last, after the image, so it is the commit point of a stack.
A record that does not parse as ours (a JSON list, a record without ``inputs``, a foreign ``*.json`` in an
openscan ``stacked`` folder) counts as absent.

Layouts (``results.layout``):

- ``mirror``: ``<results>/<scan path>/<stack>.<ext>`` and ``<stack>.json`` (``<stack>.depth.png`` with depth maps);
  a zip scan ``2024-...-owl.zip`` becomes the folder ``2024-...-owl``. A stack of raw frames gets the extension
  of ``stacking.raw_output_format`` (``.tif`` by default, 16-bit).
- ``openscan``: ``<results>/<scan path>/stacked/stacked_<stack>.jpg`` (and ``.json``), where OpenScan3's own
  stacker puts its results, so the firmware's upload finds them. A stack of raw frames also gets its 16-bit
  image beside the JPEG (``stacked_<stack>.tif``): the firmware indexes and uploads only ``.jpg``/``.jpeg`` files
  from ``stacked`` (OpenScan3 58e1653, ``STACKED_PHOTO_SUFFIXES`` and ``ALLOWED_PHOTO_SUFFIXES``) and logs a
  warning only for suffixes it knows it skips (``.png`` among them: hence TIFF); a download of a whole scan
  includes it, as it includes the records. Point ``results_folder`` at the projects folder (it may then equal
  ``hot_folder``; ``stacked`` folders are never watched). A ``stacked`` folder we create takes the scan folder's
  group, with group read/write and setgid, so the firmware (running as another user in that group) can list,
  upload and delete what we write.

Results are written only through real folders: a folder below the results folder that is a symlink (a
``stacked`` link pointing elsewhere) is refused, never written through.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from watcher import __version__
from watcher.atomic import fsync_folder, is_temp_name, write_atomic
from watcher.config import ResultsSettings, StackingSettings
from watcher.names import displayable, name_fields
from watcher.record import MAX_RECORD_BYTES, Record, Signature, UnreadableRecord, parse_record
from watcher.service.naming import StackId, is_safe_component
from watcher.stacking.output import FORMATS
from watcher.untrusted import UnsafeFile, read_regular

LOG_NAME = "focus-watcher.log"
OPENSCAN_FOLDER = "stacked"


class UnsafePathError(ValueError):
    """A stack id that would place a file outside the results folder."""


class UnsafeFolder(ValueError):
    """A folder on the way to a result is a symlink or a file: nothing is written through it."""


class InputsChanged(RuntimeError):
    """An input is no longer what was stacked: it is not archived or deleted."""


@dataclass(frozen=True)
class StackPaths:
    image: Path
    record: Path
    depthmap: Path
    deep_image: Path | None = None  # a raw stack's 16-bit image beside the JPEG (openscan layout)


class ResultStore:
    """Paths, records and input disposal for one results folder."""

    def __init__(self, root: Path, settings: ResultsSettings, stacking: StackingSettings) -> None:
        self.root = root
        self.settings = settings
        self.stacking = stacking

    # --- where -------------------------------------------------------------------------------------------

    def paths(self, stack: StackId, *, raw: bool = False) -> StackPaths:
        """Where ``stack``'s outputs go (``raw``: a stack of raw frames). Raises :class:`UnsafePathError` for ids
        that would leave the folder."""
        parts = [part for part in stack.scan.split("/") if part]
        if parts and parts[-1].lower().endswith(".zip"):
            parts[-1] = parts[-1][: -len(".zip")]
        if not all(is_safe_component(part) for part in [*parts, stack.stack]):
            raise UnsafePathError(f"unsafe stack id {str(stack)!r}")
        folder = self.root.joinpath(*parts)
        image_format, deep = self.stacking.output_format, None
        if self.settings.layout == "openscan":
            folder, stem = folder / OPENSCAN_FOLDER, f"stacked_{stack.stack}"
            if raw and self.stacking.raw_output_format != "jpg":
                deep = folder / (stem + FORMATS[self.stacking.raw_output_format])
        else:
            stem = stack.stack
            if raw:
                image_format = self.stacking.raw_output_format
        return StackPaths(image=folder / (stem + FORMATS[image_format]), record=folder / f"{stem}.json",
                          depthmap=folder / f"{stem}.depth.png", deep_image=deep)

    def prepare(self, stack: StackId, *, raw: bool = False) -> StackPaths:
        """:meth:`paths`, with their folder created below the results folder, one real folder at a time.

        Raises :class:`UnsafePathError` for an unsafe id, :class:`UnsafeFolder` if a folder on the way is a
        symlink or a file, ``OSError`` if one cannot be created (full, read-only: try again later).
        """
        paths = self.paths(stack, raw=raw)
        current = self.root
        for part in paths.record.parent.relative_to(self.root).parts:
            parent, current = current, current / part
            try:
                os.mkdir(current)
                created = True
            except FileExistsError:
                created = False
            info = os.lstat(current)
            if not stat.S_ISDIR(info.st_mode):
                what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
                raise UnsafeFolder(f"{current} is {what}: results are written only through real folders")
            if created and part == OPENSCAN_FOLDER and self.settings.layout == "openscan":
                _share_with(current, os.lstat(parent))
        return paths

    # --- done? -------------------------------------------------------------------------------------------

    def load(self, stack: StackId) -> Record | None:
        """The stack's record, or None if there is none. Raises :class:`UnreadableRecord` for one not ours."""
        try:
            data, _info = read_regular(self.paths(stack).record, max_bytes=MAX_RECORD_BYTES)
        except FileNotFoundError:
            return None
        except UnsafeFile as exc:
            raise UnreadableRecord(str(exc)) from None
        except OSError as exc:
            raise UnreadableRecord(f"cannot read it: {exc.strerror or exc}") from None
        return parse_record(data)

    def done(self, stack: StackId, signature: Signature) -> Record | None:
        """The record saying ``stack`` is done with these inputs, with its outputs intact; else None.

        Raises :class:`UnreadableRecord` for a record that is not ours.
        """
        record = self.load(stack)
        if record is None or not self.answers(record, signature) or not self.intact(record):
            return None
        return record

    def answers(self, record: Record, signature: Signature) -> bool:
        """Whether ``record`` is the answer for a stack of these inputs (whether its outputs are intact aside).

        When inputs are disposed of after success, a stack whose frames are some of an ``ok`` record's inputs,
        unchanged, is one whose disposal was interrupted: it is done too (the rest is disposed of, never stacked
        again from what is left).
        """
        if record.signature == signature:
            return True
        leftover = record.status == "ok" and self.settings.after_success != "keep"
        return bool(leftover and signature and set(signature) < set(record.signature))

    def intact(self, record: Record) -> bool:
        """Every output the record lists is a regular file of the recorded size."""
        for relative, size in record.outputs:
            try:
                info = os.lstat(self.root / relative)
            except OSError:
                return False
            if not stat.S_ISREG(info.st_mode) or (size is not None and info.st_size != size):
                return False
        return True

    def records(self) -> Iterator[Record]:
        """Every stack record under the results folder (for ``status``); files that are not records are skipped."""
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.endswith(".json") or is_temp_name(name):
                    continue
                try:
                    yield parse_record(read_regular(Path(folder, name), max_bytes=MAX_RECORD_BYTES)[0])
                except (OSError, UnsafeFile, UnreadableRecord):
                    continue

    # --- writing -----------------------------------------------------------------------------------------

    def write_record(self, stack: StackId, record: dict) -> Path:
        path = self.prepare(stack).record
        write_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())
        return path

    def output_sizes(self, written: list[Path]) -> list[dict]:
        """``[{"path", "bytes"}]`` of the outputs just written (the image first), for the record."""
        return [{**name_fields("path", str(p.relative_to(self.root))), "bytes": os.lstat(p).st_size} for p in written]

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

    def dispose_inputs(self, folder: Path, scan: str, inputs: Signature) -> str:
        """After a durable ``ok`` record: archive or delete the stack's input files. Returns what was done.

        Only inputs that are still exactly what was stacked are touched: if any was replaced since, nothing is
        (:class:`InputsChanged`), and the stack is simply pending again with its new frame. Inputs already gone
        (a disposal interrupted by a crash) are skipped.
        """
        action = self.settings.after_success
        if action == "keep":
            return "kept"
        present = [(folder / name, size, mtime) for name, size, mtime in inputs if _unchanged(folder / name, size,
                                                                                               mtime)]
        for path, size, mtime in present:
            if not _unchanged(path, size, mtime):  # replaced in the last moment: it wins
                raise InputsChanged(f"{path.name} changed since it was stacked")
            if action == "delete":
                path.unlink(missing_ok=True)
                continue
            target = _free_name(self.settings.archive_folder.joinpath(*[p for p in scan.split("/") if p], path.name))
            target.parent.mkdir(parents=True, exist_ok=True)
            _move_durably(path, target)
        if present:
            fsync_folder(folder)
        return "archived" if action == "archive" else "deleted"


def _unchanged(path: Path, size: int, mtime_ns: int) -> bool:
    """True if ``path`` is the regular file that was stacked; False if it is gone; raises if it changed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
        raise InputsChanged(f"{path.name} changed since it was stacked")
    return True


def _share_with(folder: Path, parent: os.stat_result) -> None:
    """Give a new ``stacked`` folder its scan folder's group, group rwx and setgid (files inherit the group).

    The service runs as its own user (umask 0027); OpenScan3 runs as ``openscan`` and must still list, upload
    and delete what is in ``stacked``: the service user is in the scan folder's group (the unit's
    ``SupplementaryGroups=``), so it may hand the folder to that group.
    """
    try:
        os.chown(folder, -1, parent.st_gid)
    except PermissionError:
        return  # not in that group: the folder stays ours alone (doctor says how to fix the unit)
    os.chmod(folder, stat.S_ISGID | 0o770 | (parent.st_mode & 0o005))


def _free_name(target: Path) -> Path:
    """``target``, or ``name.2.jpg``, ``name.3.jpg``, ... if taken: archiving never overwrites an older input."""
    candidate, n = target, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
    return candidate


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
    outputs: list[dict],
    error: str | None = None,
    engine: dict | None = None,
    warnings: list[str] | None = None,
    fallback: dict | None = None,
) -> dict:
    """The JSON record of one stack: what went in, what happened, what it wrote, and the engine's account.

    Every string in it is valid text (:func:`~watcher.names.displayable`): the exact names of inputs and outputs
    that are not valid UTF-8 are kept in ``name_bytes`` and ``path_bytes`` (:func:`~watcher.names.name_fields`).
    """
    record = {
        "stack": str(stack),
        "scan": stack.scan,
        "name": stack.stack,
        "status": status,
        "error": error,
        "complete_because": reason,
        "inputs": [{**name_fields("name", name), "size": size, "mtime_ns": mtime} for name, size, mtime in signature],
        "output": outputs[0]["path"] if outputs else None,
        "outputs": outputs,
        "fallback": fallback,
        "attempts": attempts,
        "started_at": datetime.fromtimestamp(started_at).astimezone().isoformat(timespec="seconds"),
        "finished_at": datetime.fromtimestamp(finished_at).astimezone().isoformat(timespec="seconds"),
        "duration_seconds": round(finished_at - started_at, 3),
        "software": f"focus-watcher {__version__}",
        "warnings": list(warnings or []),
    }
    if engine:
        record["warnings"] = engine.get("warnings", []) + record["warnings"]
        record.update({key: value for key, value in engine.items() if key not in record and key != "outputs"})
    return displayable(record)

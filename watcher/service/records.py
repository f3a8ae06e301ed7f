"""Stack records: writing them, where they are, and whether a stack is done (what one must hold, checked,
is :mod:`watcher.record`).

"Done" is on disk, not in memory: a stack is done when its JSON record says ``ok`` or ``failed`` for exactly
the inputs (names, sizes, mtimes) it has now, *and* every output the record lists is still there with the size it
was written with (a result deleted by hand, or by OpenScan's "delete photos", is made again). So a restart, after
a clean stop or a ``kill -9``, needs no other state, and changed inputs (a frame replaced) are stacked again.
Every file is written atomically; a record is written last, after the image, so it is the commit point of a stack.
A record that does not parse as ours (a JSON list, a record without ``inputs``) counts as absent.

Where records are: :mod:`watcher.layout`. Earlier builds kept openscan records in ``stacked/``, where the
firmware's ZIP download took them along: such a record still counts where it is, and the daemon moves it to its
place when it starts (:meth:`RecordStore.tidy`), so no stack is stacked again because of the upgrade.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from watcher import __version__
from watcher.atomic import fsync_folder, is_temp_name, write_atomic
from watcher.config import Settings
from watcher.layout import (
    OPENSCAN_FOLDER,
    OPENSCAN_PREFIX,
    RECORD_SUFFIX,
    STACKS_FOLDER,
    STATE_FOLDER,
    new_place_of_old_record,
    old_openscan_record,
    records_root,
    scan_of_records,
)
from watcher.names import displayable, name_fields
from watcher.record import MAX_RECORD_BYTES, Record, Signature, UnreadableRecord, parse_record
from watcher.report.paths import depth_thumbnail, thumbnail
from watcher.service.naming import StackId
from watcher.service.placement import Placement
from watcher.untrusted import UnsafeFile, read_regular


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


@dataclass
class Tidied:
    """What :meth:`RecordStore.tidy` did."""

    temp_files_removed: int = 0
    records_moved: int = 0  # from an earlier build's place
    record_folders_forgotten: int = 0  # openscan: records of scans whose folder is gone


class RecordStore:
    """The records of one results folder (placed by ``placement``); ``after_success`` as in the settings."""

    def __init__(self, placement: Placement, after_success: str) -> None:
        self.placement = placement
        self.root = placement.root
        self.after_success = after_success

    @classmethod
    def of(cls, settings: Settings, root: Path | None = None) -> RecordStore:
        """The store of ``settings``' results folder (or of ``root``, the same folder resolved)."""
        placement = Placement(root or settings.results_folder, settings.results.layout,
                              settings.stacking.output_format, settings.results.masks,
                              settings.stacking.raw_output_format)
        return cls(placement, settings.results.after_success)

    def load(self, stack: StackId) -> Record | None:
        """The stack's record, or None if there is none. Raises :class:`UnreadableRecord` for one not ours."""
        record = self._read(self.placement.paths(stack).record)
        if record is None and self.placement.layout == "openscan":
            record = self._read(self.root / old_openscan_record(stack.scan, stack.stack))
        return record

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
        leftover = record.status == "ok" and self.after_success != "keep"
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
        """Every stack record in its place (for ``status``); files that are not records are skipped."""
        for folder, dirs, files in os.walk(self.root / records_root(self.placement.layout)):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.endswith(RECORD_SUFFIX) and not is_temp_name(name):
                    with contextlib.suppress(UnreadableRecord):
                        record = self._read(Path(folder, name))
                        if record is not None:
                            yield record

    def write(self, stack: StackId, record: dict) -> Path:
        """Write ``stack``'s record (atomically, through real folders); returns where it went."""
        path = self.placement.prepare(stack).record
        write_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())
        return path

    def output_sizes(self, written: Sequence[Path], masks: Sequence[Path] = ()) -> list[dict]:
        """``[{"path", "bytes"}]`` of the outputs just written (``written``: the image first), for the record; then
        the ``masks``, with ``"kind": "mask"``."""
        chosen = [(path, {}) for path in written] + [(path, {"kind": "mask"}) for path in masks]
        return [{**name_fields("path", p.relative_to(self.root).as_posix()), "bytes": os.lstat(p).st_size, **kind}
                for p, kind in chosen]

    def forget(self, stack: StackId) -> bool:
        """With the openscan layout, once ``stack``'s scan folder is gone (the project deleted in OpenScan3),
        remove what is kept apart from it: its depth map, the report's thumbnails, and its record (last: the
        record is what says the stack was done). True if its record was there and was removed."""
        if self.placement.layout != "openscan" or _exists(self.placement.scan_folder(stack)):
            return False
        paths = self.placement.paths(stack)
        record = paths.record.relative_to(self.root).as_posix()
        for path in (paths.depthmap, self.root / thumbnail(record), self.root / depth_thumbnail(record)):
            path.unlink(missing_ok=True)
        try:
            paths.record.unlink()
        except FileNotFoundError:
            return False  # forgotten already, with its folder (:meth:`forget_folder`)
        self._remove_empty_folders(paths.record.parent)
        return True

    def forget_folder(self, folder: Path) -> list[tuple[str, Path]]:
        """With the openscan layout, once ``folder`` (a project's or a scan's) is gone from the results folder,
        remove what is kept apart of every stack below it, as :meth:`forget` does for one; returns the stack and
        the path of each record removed.

        This does not depend on what the daemon still remembers of those stacks: a project is deleted file by
        file, and the stacks of a scan whose photos went first are no longer watched when its folder goes.
        """
        if self.placement.layout != "openscan" or not folder.is_relative_to(self.root):
            return []
        below = folder.relative_to(self.root)
        if not below.parts or below.parts[0] == STATE_FOLDER or _exists(folder):
            return []
        kept = self.root / STACKS_FOLDER / below
        forgotten = self._remove_records_folder(kept)
        self._remove_empty_folders(kept.parent)
        return forgotten

    def _remove_records_folder(self, folder: Path) -> list[tuple[str, Path]]:
        """Remove ``folder`` of records and depth maps (ours alone) with the report's thumbnails of its records
        (the report then drops their pages); returns the stack and path of each record in it."""
        removed = []
        for here, _dirs, files in os.walk(folder):
            for file in files:
                if not file.endswith(RECORD_SUFFIX):
                    continue
                path = Path(here, file)
                record = path.relative_to(self.root).as_posix()
                for small in (thumbnail(record), depth_thumbnail(record)):
                    (self.root / small).unlink(missing_ok=True)
                try:
                    read = self._read(path)
                except UnreadableRecord:
                    read = None
                removed.append((read.stack if read else record, path))
        shutil.rmtree(folder, ignore_errors=True)
        return removed

    def _remove_empty_folders(self, folder: Path) -> None:
        """Remove ``folder`` of records and its parents up to the top of the records, as long as they are empty
        (the scan's and project's folders of records)."""
        while folder != self.root / STACKS_FOLDER and folder.is_relative_to(self.root / STACKS_FOLDER):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def tidy(self) -> Tidied:
        """At start-up, one walk of the results folder: delete the temp files a crash left mid-write; with the
        openscan layout, move records from an earlier build's place (``stacked/``) to theirs, and forget the
        records of scans whose folder is gone (:meth:`forget`)."""
        done = Tidied()
        openscan = self.placement.layout == "openscan"
        for folder, dirs, files in os.walk(self.root):
            here = Path(folder)
            ours = here.relative_to(self.root).as_posix()
            if openscan and (ours == STACKS_FOLDER or ours.startswith(STACKS_FOLDER + "/")):
                dirs[:] = self._forget_gone(here, scan_of_records(ours), dirs, done)
            for name in files:
                if is_temp_name(name):
                    with contextlib.suppress(OSError):  # read-only for now: hidden, and gone at a later start
                        (here / name).unlink(missing_ok=True)
                        done.temp_files_removed += 1
                elif openscan and here.name == OPENSCAN_FOLDER and not ours.startswith(STATE_FOLDER + "/") \
                        and name.startswith(OPENSCAN_PREFIX) and name.endswith(RECORD_SUFFIX):
                    done.records_moved += self._move_old(here, name)
        return done

    def _read(self, path: Path) -> Record | None:
        try:
            data, _info = read_regular(path, max_bytes=MAX_RECORD_BYTES)
        except FileNotFoundError:
            return None
        except UnsafeFile as exc:
            raise UnreadableRecord(str(exc)) from None
        except OSError as exc:
            raise UnreadableRecord(f"cannot read it: {exc.strerror or exc}") from None
        return parse_record(data)

    def _move_old(self, stacked: Path, name: str) -> int:
        """Move the record ``stacked/name`` of an earlier build to its place (a rename: atomic, and cheap for
        thousands); 1 if moved. Its depth map, if any, stays where the record says it is. A record already in
        its place is newer: the old one is removed. One that is not ours stays."""
        old = stacked / name
        target = self.root / new_place_of_old_record((stacked / name).relative_to(self.root).as_posix())
        try:
            self._read(old)
        except UnreadableRecord:
            return 0
        try:
            if _exists(target):
                old.unlink()
                return 0
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(old, target)
            fsync_folder(target.parent)
        except OSError:  # read-only, or another filesystem: it still counts where it is
            return 0
        return 1

    def _forget_gone(self, here: Path, scan: str, folders: list[str], done: Tidied) -> list[str]:
        """Of the ``folders`` of records in ``here`` (those of ``scan``'s sub-folders), remove those whose folder
        in the results is gone, with the report's thumbnails of their records (the report then drops their
        pages); returns the ones to walk on."""
        kept = []
        for name in folders:
            if _exists(self.root / scan / name):
                kept.append(name)
                continue
            self._remove_records_folder(here / name)
            done.record_folders_forgotten += 1
        return kept


def _exists(path: Path) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell (a share that blips): keep what is ours
    return True

"""A stack's JSON record, read back: the one check of what it must hold, for the daemon, ``status`` and the report.

The daemon writes records (:func:`watcher.service.records.build_record`); whoever reads one takes it through
:func:`record_from`, so a record the daemon would count as absent is not shown as a stack by the report either.
Names in a record are text people can read (:func:`watcher.names.display`); an input's or output's exact name
is kept beside it when it is not valid UTF-8 (``name_bytes``, ``path_bytes``: :func:`watcher.names.name_fields`),
and :class:`Record` carries the exact names, so they compare with the files as they are now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from watcher.names import display, name_from

MAX_RECORD_BYTES = 16 << 20  # a record is a few KiB; a bigger file under a record's name is not read

Signature = tuple[tuple[str, int, int], ...]  # per frame in frame order: (name, size, mtime_ns)


class UnreadableRecord(ValueError):
    """A record file that exists but does not parse as one of ours."""


@dataclass(frozen=True)
class Record:
    """What a stack's JSON record says, checked: the fields "done" and ``status`` rely on.

    The names in ``signature`` and the paths in ``outputs`` are exact (as the file system has them); the other
    strings are valid text (:func:`~watcher.names.display`), even from a record written before names were kept so.
    """

    stack: str
    status: str  # "ok" | "failed"
    signature: Signature
    outputs: tuple[tuple[str, int | None], ...]  # (path relative to the results folder, size in bytes or None)
    error: str | None
    finished_at: str


def parse_record(data: bytes) -> Record:
    """Check a record file's content; raise :class:`UnreadableRecord` saying what is wrong."""
    return record_from(load_json(data))


def load_json(data: bytes) -> object:
    """A record file's JSON; raises :class:`UnreadableRecord` if it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested input
        raise UnreadableRecord(f"not JSON ({exc})") from None


def record_from(raw: object) -> Record:
    """Check a decoded record (see :func:`parse_record`)."""
    if not isinstance(raw, dict):
        raise UnreadableRecord(f"a JSON {type(raw).__name__}, not an object")
    stack, status, inputs = raw.get("stack"), raw.get("status"), raw.get("inputs")
    if not isinstance(stack, str) or status not in ("ok", "failed"):
        raise UnreadableRecord("no 'stack', or a 'status' other than ok/failed")
    if not isinstance(inputs, list) or not all(
        isinstance(i, dict) and name_from(i, "name") is not None and _is_int(i.get("size"))
        and _is_int(i.get("mtime_ns")) for i in inputs
    ):
        raise UnreadableRecord("'inputs' is not a list of {name, size, mtime_ns}")
    outputs = raw.get("outputs")
    if outputs is None:  # written before outputs were recorded: the image must exist, whatever its size
        outputs = [{"path": raw["output"], "bytes": None}] if isinstance(raw.get("output"), str) else []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and name_from(o, "path") is not None and (o.get("bytes") is None or _is_int(o["bytes"]))
        for o in outputs
    ):
        raise UnreadableRecord("'outputs' is not a list of {path, bytes}")
    error, finished = raw.get("error"), raw.get("finished_at")
    return Record(
        stack=display(stack),
        status=status,
        signature=tuple((name_from(i, "name"), i["size"], i["mtime_ns"]) for i in inputs),
        outputs=tuple((name_from(o, "path"), o.get("bytes")) for o in outputs),
        error=display(error) if isinstance(error, str) else None,
        finished_at=display(finished) if isinstance(finished, str) else "",
    )


def parse_time(text: object) -> datetime | None:
    """A record's ISO time (``finished_at``, ``started_at``), aware: records carry their UTC offset, one without
    is taken as local time. None if it is not an ISO time."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

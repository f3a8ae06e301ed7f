"""The morning after a soak night: what the results folder, the archive and the daemon's log say happened to
every planned stack, reconciled against the plan (see benchmarks/soak.py)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from watcher.atomic import is_temp_name
from watcher.layout import PID_FILE
from watcher.names import display, name_from

# What each corrupt frame must make the stack's record say.
CORRUPTIONS = {
    "truncated": "truncated JPEG",
    "garbage": "not a JPEG, PNG or TIFF",
    "empty": "empty file",
    "wrong_size": "differs from the reference",
    "bomb": "MP limit",
    "zip_bomb": "(a zip bomb?)",
}
# Rows that must be 0 after any night.
MUST_BE_ZERO = ("lost", "duplicated", "partial files visible", "stacked from fewer frames than written",
                "failures unexplained", "processed but must not be", "files written outside results",
                "read before fully written", "archived but not what was stacked", "inputs left after success",
                "second daemons not refused", "stacks killed by a group signal")


@dataclass
class Planned:
    stack: str  # "<project>/scanNN/scanNN_PPP", or "<project>/<zip>/<stack>" for a zip's (exact: surrogates kept)
    expect: str  # "ok" | "failed" | "absent" | "ok_or_absent"
    fault: str = ""
    frames: list[str] = field(default_factory=list)
    runs: int = 1  # how many stack.done/failed events are right (2: a frame replaced mid-stack, a result deleted)

    @property
    def record(self) -> str:
        """The record's path in the results folder (a zip scan's folder drops ".zip")."""
        return "/".join(p[:-4] if p.endswith(".zip") else p for p in self.stack.split("/")) + ".json"


def output_of(record: dict) -> str | None:
    """The exact path (below the results folder) of a record's result, whatever bytes its name has."""
    outputs = record.get("outputs")
    return name_from(outputs[0], "path") if isinstance(outputs, list) and outputs else None


def read_record(results: Path, planned: Planned) -> dict | None:
    try:
        record = json.loads((results / planned.record).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def records(results: Path):
    for path in results.rglob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "stack" in record:
                yield record


def events(stderr: Path) -> list[dict]:
    """The daemon's events from its stderr (what journald keeps): unlike its log file in the results folder,
    that has the lines written while the results folder was full or read-only."""
    found = []
    for line in stderr.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                found.append(event)
    return found


def partial(path: Path, results: Path) -> bool:
    """A file visible under its final name that is not complete."""
    if path == results / PID_FILE:
        return False
    if not path.is_file():
        return False
    if is_temp_name(path.name):
        return True  # a temp file left behind counts as partial
    if path.suffix == ".jpg":
        return not path.read_bytes().rstrip(b"\0").endswith(b"\xff\xd9")
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except ValueError:
            return True
    return False


def reconcile(night) -> tuple[Counter, list[tuple[str, str, bool]], list[list[dict]]]:
    """Rows of the report, the failures (stack, error, explained) and the duplicated stacks' events."""
    log = events(night.root / "daemon.stderr")
    runs = Counter(e["stack"] for e in log if e.get("event") in ("stack.done", "stack.failed"))
    rows = Counter(dict.fromkeys(MUST_BE_ZERO, 0))
    failures: list[tuple[str, str, bool]] = []
    duplicates: list[list[dict]] = []
    for planned in night.plan.values():
        shown = display(planned.stack)  # as the log and the records show it
        record = read_record(night.results, planned)
        status = record["status"] if record else "absent"
        rows[f"planned {planned.expect}"] += 1
        output = record and output_of(record) and (night.results / output_of(record)).is_file()
        if planned.expect in ("ok", "failed") and (record is None or (status == "ok" and not output)):
            rows["lost"] += 1
        if record is not None and planned.expect == "absent":
            rows["processed but must not be"] += 1
        if status == "ok":
            rows["results ok"] += 1
            rows["stacked from fewer frames than written"] += len(record.get("inputs") or []) < len(planned.frames)
        if status == "failed":
            explained = planned.fault in CORRUPTIONS and CORRUPTIONS[planned.fault] in (record["error"] or "")
            failures.append((shown, record["error"], explained))
            rows["failures"] += 1
            rows["failures unexplained"] += not explained
        if runs[shown] > planned.runs:
            rows["duplicated"] += 1
            duplicates.append([e for e in log if e.get("stack") == shown])
        if planned.fault == "slow" and record is not None:
            rows["read before fully written"] += record["inputs"][-1]["size"] != len(night.frame_bytes[-1])
    _disposal(night, rows)
    allowed = (night.hot, night.results, night.outside, night.archive, night.root / "cluster")  # its logs
    escaped = [p for p in night.root.rglob("*") if p.is_file() and not any(p.is_relative_to(a) for a in allowed)
               and p.name not in ("config.toml", "daemon.stderr", "notify.sock")]
    rows["files written outside results"] = len(escaped)
    rows["partial files visible"] = sum(1 for p in night.results.rglob("*") if partial(p, night.results))
    rows["unsafe names refused"] = sum(1 for e in log if e.get("event") == "file.unplaced"
                                       and "unsafe" in e.get("reason", ""))
    for name, event in (("retries after worker death", "stack.retry"), ("results unwritable (retried)",
                        "results.unwritable"), ("inputs unavailable (retried)", "inputs.unavailable"),
                        ("records not ours (ignored)", "record.unreadable"), ("results found deleted",
                        "result.missing"), ("inputs replaced mid-stack (kept)", "inputs.changed")):
        rows[name] = sum(1 for e in log if e.get("event") == event)
    rows["stacks killed by a group signal"] = sum(
        1 for e in log if e.get("event") in ("stack.retry", "stack.failed")
        and any(word in (e.get("error") or "") for word in ("SIGINT", "SIGTERM", "status 255")))
    rows["second daemons not refused"] = night.counts["second_daemons"] - night.counts["second_daemons_refused"]
    if night.cluster:
        for name, event in (("cluster disconnections", "cluster.disconnected"),
                            ("stacks the cluster lost (requeued)", "stack.requeued"),
                            ("workers called unusable", "cluster.worker_unusable")):
            rows[name] = sum(1 for e in log if e.get("event") == event)
    return rows, failures, duplicates


def busiest_pass_ms(night) -> float | None:
    """CPU ms of the main loop's busiest pass, as the daemon measured it itself (over the runs that stopped
    cleanly and said so: a SIGKILLed run says nothing); None if none did."""
    figures = [e["longest_pass_cpu_ms"] for e in events(night.root / "daemon.stderr")
               if e.get("event") == "daemon.stopped" and "longest_pass_cpu_ms" in e]
    return max(figures, default=None)


def _disposal(night, rows: Counter) -> None:
    """Every archived input is exactly what its stack's ok record stacked; no ok stack's inputs stay behind."""
    exact = {display(stack): stack for stack in night.plan}  # records show names; the files have them exactly
    stacked = {}
    for record in records(night.results):
        if record.get("status") == "ok":
            scan = exact.get(record["stack"], record["stack"]).rpartition("/")[0]
            for item in record.get("inputs", []):
                stacked[(scan, name_from(item, "name"))] = (item["size"], item["mtime_ns"])
    for path in night.archive.rglob("*"):
        if path.is_file():
            scan = path.parent.relative_to(night.archive).as_posix()
            info = path.stat()
            rows["inputs archived"] += 1
            rows["archived but not what was stacked"] += stacked.get((scan, path.name)) != (info.st_size,
                                                                                           info.st_mtime_ns)
    for (scan, name), (size, mtime) in stacked.items():
        if scan.endswith(".zip"):
            continue  # a scan zip is the original of a whole scan: always kept
        with contextlib.suppress(OSError):
            info = (night.hot / scan / name).stat()
            rows["inputs left after success"] += (info.st_size, info.st_mtime_ns) == (size, mtime)


def report(night, seconds: float) -> str:
    rows, counts = night.rows, night.counts
    longest = max(night.rss_runs, key=len) if night.rss_runs else []
    fifth = max(1, len(longest) // 5)
    early = sorted(r for _, r in longest[:fifth])[len(longest[:fifth]) // 2] if longest else 0
    late = sorted(r for _, r in longest[-fifth:])[len(longest[-fifth:]) // 2] if longest else 0
    lines = [
        f"night: {seconds / 60:.1f} min, {len(night.plan)} stacks planned, {night.workers} workers "
        f"({'a plain Dask cluster' if night.cluster else 'local pool'}), "
        f"root faults (tmpfs, inotify overflow, EACCES): {'yes' if counts['tmpfs'] else 'no (not root)'}",
        f"{'stacks written':40} {sum(len(p.frames) > 0 for p in night.plan.values()):6}",
        *(f"{key:40} {rows[key]:6}" for key in sorted(rows)),
        f"{'daemon starts (SIGKILL / SIGTERM / SIGINT)':40} {counts['starts']:6} "
        f"({counts['sigkill']} / {counts['sigterm'] - 1} / {counts['sigint']})",
        f"{'results deleted by the rig':40} {counts['results_deleted']:6}",
        f"{'frames replaced mid-stack / unreadable periods':40} {counts['frames_replaced']:6} / "
        f"{counts['unreadable_periods']}",
        f"{'second daemons started / refused':40} {counts['second_daemons']:6} / {counts['second_daemons_refused']}",
        f"{'workers killed mid-stack':40} {counts['workers_killed']:6}",
        *([f"{'scheduler restarts':40} {counts['scheduler_restarts']:6}"] if night.cluster else []),
        f"{'watchdog pings / longest gap s':40} {night.notify.pings:6} / {night.notify.longest_gap:.1f}",
        f"{'busiest loop pass, CPU ms, its own':40} {busiest_pass_ms(night) or 0:6.1f}",
        f"{'stacks deleted by the rig':40} {counts['deleted_stacks']:6}",
        f"{'read-only / full periods':40} {counts['readonly_periods']:3} / {counts['full_periods']}",
        f"{'daemon peak RSS MiB':40} {night.peak_rss_mb():6.1f}",
        f"{'daemon RSS MiB, longest run: early/late':40} {early / 1024:6.1f} / {late / 1024:.1f}",
        f"{'worker peak RSS MiB (max over stacks)':40} {max(night.worker_peaks, default=0):6.1f}",
        f"{'throughput, stacks/min':40} {rows['results ok'] / (seconds / 60):6.1f}",
        "failures:",
        *(f"  {'explained  ' if ok else 'UNEXPLAINED'} {stack}: {error}" for stack, error, ok in night.failures),
        *(f"duplicated: {json.dumps(found)}" for found in night.duplicates),
    ]
    return "\n".join(lines)

"""Keep the report up to date while the daemon runs: in a thread of its own, debounced, never on the daemon's loop.

The daemon hands over each record it writes (and the stacks still to do at that moment); the thread waits until
no record came for :data:`QUIET_SECONDS` (at most :data:`LONGEST_WAIT_SECONDS` after the first), then refreshes
the pages of the scans touched. A report that cannot be written (a full or read-only results folder) is logged
and tried again with the next records; it never stops or slows the stacking. A page that cannot be drawn is
logged once (``report.page_failed``, again only if its reason changes) and skipped; the others are refreshed.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from watcher.report.build import PendingStack, Report

log = structlog.get_logger("focus-watcher")

QUIET_SECONDS = 5.0
LONGEST_WAIT_SECONDS = 30.0
_STOP = object()


class ReportRefresher:
    """The report of ``results`` (``layout`` as in the settings), refreshed from a daemon thread.

    Parameters
    ----------
    results : Path
    layout : str
    quiet, longest : float
        Debounce (seconds): see the module docstring.
    """

    def __init__(self, results: Path, layout: str, *, quiet: float = QUIET_SECONDS,
                 longest: float = LONGEST_WAIT_SECONDS) -> None:
        self.report = Report(results, layout)
        self.quiet, self.longest = quiet, longest
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="report", daemon=True)
        self._pending: list[PendingStack] = []
        self._failing: dict[str, str] = {}  # page -> why it could not be drawn, as last logged

    def start(self, pending: Sequence[PendingStack] = ()) -> None:
        """Rebuild the whole report (in the thread), then refresh it as records come."""
        self._pending = list(pending)
        self._thread.start()

    def written(self, record: Path, pending: Sequence[PendingStack]) -> None:
        """A record was written at ``record``; ``pending`` are the stacks still to do now."""
        self._queue.put((record, list(pending)))

    def stop(self, timeout: float = 10.0) -> None:
        """Refresh what is left, then end the thread (waiting at most ``timeout`` s)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        self._attempt(lambda: self.report.rebuild(self._pending), "rebuild")
        changed: set[Path] = set()
        pending: list[PendingStack] | None = None
        stopping = False
        while not stopping:
            item = self._queue.get()
            first = time.monotonic()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                changed.add(item[0])
                pending = item[1]
                wait = min(self.quiet, self.longest - (time.monotonic() - first))
                if wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
            if changed and self._attempt(functools.partial(self.report.refresh, changed, pending), "refresh"):
                changed, pending = set(), None

    def _attempt(self, work: Callable, kind: str) -> bool:
        try:
            stats = work()
        except OSError as exc:
            log.error("report.unwritable", kind=kind, error=str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - the report must never take the daemon down
            log.error("report.failed", kind=kind, error=f"{type(exc).__name__}: {exc}")
            return False
        # Every refresh tries the pages that failed again: log one only when it starts failing, or for a new reason.
        for page, reason in stats.failures.items():
            if self._failing.get(page) != reason:
                log.error("report.page_failed", page=page, error=reason)
        self._failing = dict(stats.failures)
        log.info("report.refreshed", kind=kind, scans=stats.scans, stacks=stats.stacks,
                 pages=stats.stack_pages + stats.scans_rendered, records_read=stats.records_read,
                 failed_pages=len(stats.failures), seconds=round(stats.seconds, 3))
        return True

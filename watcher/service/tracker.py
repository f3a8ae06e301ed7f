"""Deciding when a stack is ready: pure logic over what was seen of each file, and a clock.

The tracker never touches the disk and never sleeps: the daemon tells it what it saw (a file's size, mtime,
whether its end marker is there, whether a writer still has it open) and asks which stacks are ready. The clock
is injected, so every rule below is a unit test.

A **frame is usable** when it is *settled* -- a look at least ``settle_seconds`` after its last change found it
unchanged -- no writer is known to have it open, and its end marker is present (JPEG FF D9, PNG IEND). A frame
that stays without its end marker for ``stack_timeout_seconds`` is usable too: its stack is then stacked and fails
with a clear "truncated" message instead of waiting forever.

A **stack is ready** when all its frames are usable and one of these holds (the record names which):

- ``count``: it has the expected number of frames (``naming.stack_size``, or ``focus_stacks`` in OpenScan3's
  scan.json);
- ``next stack started``: another stack of the same scan has a newer frame (the rig moved on);
- ``scan ended``: the scan's scan.json left ``running`` (or a zip scan, which arrives whole);
- ``timeout``: no frame of the stack changed for ``stack_timeout_seconds``.

The middle two apply only when no frame count is known. With a known count, a short stack more likely has frames
not seen *yet* -- a burst that overflowed the event queue, a finished scan copied in slowly after its scan.json --
than frames that will never come, so it waits for its count or the timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from watcher.config import CompletenessSettings, NamingSettings
from watcher.service.naming import ScanInfo, StackId, Unplaced, expected_frames, group_files

Signature = tuple[tuple[str, int, int], ...]  # per frame in frame order: (name, size, mtime_ns)


@dataclass(frozen=True)
class FileState:
    """What one look at a file saw."""

    size: int
    mtime_ns: int
    complete: bool  # the format's end marker is present (True for formats without one)
    age: float = 0.0  # seconds from the file's mtime to the look (wall clock), for files found already there


@dataclass(frozen=True)
class ReadyStack:
    stack: StackId
    frames: tuple[str, ...]  # file names in frame order
    signature: Signature
    reason: str
    expected: int | None


@dataclass
class _Frame:
    state: FileState
    changed_at: float  # clock time of the last change seen (backdated by the file's age when first seen)
    confirmed_at: float | None = None  # last look that found the state unchanged
    writing: bool = False  # a writer modified it and has not closed it (inotify only)


@dataclass
class _Scan:
    files: dict[str, _Frame] = field(default_factory=dict)
    info: ScanInfo | None = None
    stacks: dict[StackId, list[str]] | None = None  # grouping cache; None when files changed
    unplaced: list[Unplaced] = field(default_factory=list)


class StackTracker:
    """What is known of every frame in the hot folder, and which stacks are ready."""

    def __init__(
        self,
        naming: NamingSettings,
        completeness: CompletenessSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.naming = naming
        self.settle = completeness.settle_seconds
        self.timeout = completeness.stack_timeout_seconds
        self.clock = clock
        self._scans: dict[str, _Scan] = {}
        self._claimed: set[StackId] = set()
        self._done: dict[StackId, Signature] = {}
        self._not_before: dict[StackId, float] = {}
        self._reported: set[tuple[str, str]] = set()

    # --- what was seen -------------------------------------------------------------------------------------

    def observe(self, scan: str, name: str, state: FileState | None, *, writing: bool | None = None) -> None:
        """Record a look at file ``name`` of ``scan``: its state, or None if it is gone.

        ``writing``: True after a modification event, False after a close-after-write event, None if unknown.
        """
        now = self.clock()
        folder = self._scans.setdefault(scan, _Scan())
        frame = folder.files.get(name)
        if state is None:
            if frame is not None:
                del folder.files[name]
                folder.stacks = None
                self._reported.discard((scan, name))
            return
        if frame is None:
            frame = folder.files[name] = _Frame(state, changed_at=now - max(0.0, state.age))
            folder.stacks = None
        elif (state.size, state.mtime_ns, state.complete) != (frame.state.size, frame.state.mtime_ns,
                                                               frame.state.complete):
            frame.state, frame.changed_at, frame.confirmed_at = state, now, None
        else:
            frame.confirmed_at = now
        if writing is not None:
            frame.writing = writing

    def set_scan_info(self, scan: str, info: ScanInfo | None) -> None:
        """What the scan's scan.json says (None: no or unreadable scan.json)."""
        self._scans.setdefault(scan, _Scan()).info = info

    def state(self, scan: str, name: str) -> FileState | None:
        """The last state seen of a file, or None if unknown."""
        folder = self._scans.get(scan)
        frame = folder.files.get(name) if folder else None
        return frame.state if frame else None

    def known(self, scan: str) -> set[str]:
        folder = self._scans.get(scan)
        return set(folder.files) if folder else set()

    def scans(self) -> list[str]:
        return list(self._scans)

    # --- what to do next -----------------------------------------------------------------------------------

    def unsettled(self) -> int:
        """Files still changing or not yet confirmed by a look after their quiet period."""
        return sum(
            1
            for folder in self._scans.values()
            for frame in folder.files.values()
            if frame.confirmed_at is None or frame.confirmed_at - frame.changed_at < self.settle
        )

    def to_recheck(self) -> list[tuple[str, str]]:
        """Files whose quiet period has passed but that no later look has confirmed yet: look at them again."""
        now = self.clock()
        due = []
        for scan, folder in self._scans.items():
            for name, frame in folder.files.items():
                settled = frame.confirmed_at is not None and frame.confirmed_at - frame.changed_at >= self.settle
                if not settled and now - frame.changed_at >= self.settle:
                    due.append((scan, name))
        return due

    def ready(self) -> list[ReadyStack]:
        """Stacks that are complete now and neither in flight, nor done with these inputs, nor backing off."""
        now = self.clock()
        found = []
        for scan, folder in self._scans.items():
            stacks = self._grouped(scan, folder)
            newest = {stack: max(folder.files[n].state.mtime_ns for n in names) for stack, names in stacks.items()}
            latest = max(newest.values(), default=0)
            for stack, names in stacks.items():
                if stack in self._claimed or now < self._not_before.get(stack, float("-inf")):
                    continue
                frames = [folder.files[n] for n in names]
                signature = tuple((n, f.state.size, f.state.mtime_ns) for n, f in zip(names, frames))
                if self._done.get(stack) == signature:
                    continue
                if not all(self._usable(frame, now) for frame in frames):
                    continue
                expected = expected_frames(stack, self.naming, folder.info)
                moved_on = newest[stack] < latest
                reason = self._complete_because(len(names), expected, moved_on, folder.info,
                                                 now - max(f.changed_at for f in frames))
                if reason:
                    found.append(ReadyStack(stack, tuple(names), signature, reason, expected))
        return found

    def take_unplaced(self) -> list[tuple[str, Unplaced]]:
        """Files no stack could take, each reported once (until it disappears and comes back)."""
        new = []
        for scan, folder in self._scans.items():
            self._grouped(scan, folder)
            for item in folder.unplaced:
                if (scan, item.name) not in self._reported:
                    self._reported.add((scan, item.name))
                    new.append((scan, item))
        return new

    def pending(self) -> int:
        """Stacks seen that are neither done with their current inputs nor in flight."""
        count = 0
        for scan, folder in self._scans.items():
            for stack, names in self._grouped(scan, folder).items():
                signature = tuple((n, folder.files[n].state.size, folder.files[n].state.mtime_ns) for n in names)
                if stack not in self._claimed and self._done.get(stack) != signature:
                    count += 1
        return count

    # --- what happened to a stack --------------------------------------------------------------------------

    def claim(self, stack: StackId) -> None:
        """The stack is queued or running: not ready again until released."""
        self._claimed.add(stack)

    def release(self, stack: StackId, *, done: Signature | None = None, retry_in: float = 0.0) -> None:
        """The stack left the pipeline: ``done`` with these inputs, or to be retried after ``retry_in`` s."""
        self._claimed.discard(stack)
        if done is not None:
            self._done[stack] = done
            self._not_before.pop(stack, None)
        elif retry_in > 0:
            self._not_before[stack] = self.clock() + retry_in

    def in_flight(self) -> int:
        return len(self._claimed)

    # --- rules ---------------------------------------------------------------------------------------------

    def _grouped(self, scan: str, folder: _Scan) -> dict[StackId, list[str]]:
        if folder.stacks is None:
            folder.stacks, folder.unplaced = group_files(scan, folder.files, self.naming)
        return folder.stacks

    def _usable(self, frame: _Frame, now: float) -> bool:
        if frame.confirmed_at is None or frame.confirmed_at - frame.changed_at < self.settle:
            return False
        quiet = now - frame.changed_at
        if frame.writing and quiet < self.timeout:  # an open file whose close event was lost must not block forever
            return False
        return frame.state.complete or quiet >= self.timeout

    def _complete_because(
        self, count: int, expected: int | None, moved_on: bool, info: ScanInfo | None, quiet: float
    ) -> str | None:
        if expected is not None and count >= expected:
            return "count"
        if moved_on and expected is None:
            return "next stack started"
        if info is not None and not info.running and expected is None:
            return "scan ended"
        if quiet >= self.timeout:
            return "timeout"
        return None

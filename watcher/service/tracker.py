"""Deciding when a stack is ready: pure logic over what was seen of each file, and a clock.

The tracker never touches the disk and never sleeps: the daemon tells it what it saw (a file's size, mtime,
whether it is whole by its format, whether a writer still has it open) and asks which stacks are ready. The clock
is injected, so every rule below is a unit test.

**Time is the daemon's, never the file's.** Every quiet period and timeout counts from when the tracker first saw
a file or saw it change -- not from the file's mtime: ``cp -a``, ``rsync -a``, ``unzip`` and file managers keep a
frame's old mtime, and a three-hour-old frame copied in now has only just arrived. Files found by the start-up
walk are new too. (mtimes only tell whether a file changed.)

A **frame is usable** when it is *settled* -- a look at least ``settle_seconds`` after its last change found it
unchanged -- no writer is known to have it open, and it is whole by its format: its end marker is present (JPEG
FF D9, PNG IEND), or, for a raw file, which has none, its structure lies inside the file. A frame that stays
incomplete for ``stack_timeout_seconds``, or once its scan.json says the scan ended (no writer will finish it), is
usable too: its stack is then stacked and fails with a clear "truncated" message instead of waiting forever.

A **stack is ready** when all its frames are usable and one of these holds (the record names which):

- ``count``: it has the expected number of frames (``naming.stack_size``, or ``focus_stacks`` in OpenScan3's
  scan.json);
- ``next stack started``: a frame of another stack of the same scan arrived after this stack's frames had all
  settled (the rig moved on);
- ``scan ended``: the scan's scan.json says it ended (or a zip scan, which arrives whole); also when the stack
  has its count but a frame never became whole, which only the scan's end made usable;
- ``timeout``: no frame of the stack arrived or changed for ``stack_timeout_seconds``.

The middle two apply only when no frame count is known. With a known count, a short stack more likely has frames
not seen *yet* -- a burst that overflowed the event queue, a finished scan copied in slowly after its scan.json --
than frames that will never come, so it waits for its count or the timeout; and while its scan.json says the scan
is still going (``pending``, ``running``, ``paused``: a paused scan may resume hours later), not even the timeout
cuts it short. Files found together (one walk) say nothing about which arrived first, so at start-up only
``count``, ``scan ended`` and ``timeout`` apply.

In ``fixed`` naming, where a stack is just the next ``stack_size`` names in natural order, a name arriving late
would shift every stack after it. A stack is therefore ready only when the names up to its last one form an
unbroken sequence (``IMG_0001``, ``IMG_0002``, ... -- nothing can still arrive in between) or no name was added
to or removed from its folder for ``stack_timeout_seconds``.

A stack that leaves the pipeline without a result (an input unreadable for now, a result folder full) is released
with a **backoff**: it may be tried again after ``settle_seconds``, then twice as long each time, at most every
:data:`MAX_BACKOFF_SECONDS`. Nothing is ever retried in a tight loop.

**Work per pass** follows what is changing, not what is kept: only files not yet settled are looked at again,
only stacks that are not done with their current inputs are considered, and a folder is regrouped only when its
names change. Everything known of a file, stack or scan is dropped when it disappears, so memory follows what is
in the hot folder, not how many nights the daemon has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from watcher.config import CompletenessSettings, NamingSettings
from watcher.names import natural_key
from watcher.record import Signature
from watcher.service.naming import (
    ScanInfo,
    StackId,
    Unplaced,
    expected_frames,
    group_files,
    unbroken_prefix,
)

MAX_BACKOFF_SECONDS = 300.0
_REFRESH_BUDGET = 0.05  # s of regrouping per ready() call: a start-up with 100 000 files spreads over passes


def signature(frames: Iterator[tuple[str, FileState]] | list[tuple[str, FileState]]) -> Signature:
    """A stack's input signature: ``(name, size, mtime_ns)`` of each frame, in frame order.

    The one definition used for ready stacks, records and ``status``: a stack is done when the signature in its
    record equals the signature of its frames now.
    """
    return tuple((name, state.size, state.mtime_ns) for name, state in frames)


@dataclass(frozen=True)
class FileState:
    """What one look at a file saw."""

    size: int
    mtime_ns: int
    complete: bool  # whole by its format: end marker, raw structure (True for formats with neither)


@dataclass(frozen=True)
class ReadyStack:
    stack: StackId
    namespace: str  # where its files were found (a hot-folder path, or a zip's): where to read them
    frames: tuple[str, ...]  # file names in frame order
    signature: Signature
    reason: str
    expected: int | None


@dataclass
class _Frame:
    state: FileState
    arrived: float  # clock time of the first look
    changed_at: float  # clock time of the first look, or of the last look that found it different
    confirmed_at: float | None = None  # last look that found the state unchanged
    writing: bool = False  # a writer modified it and has not closed it (inotify only)


@dataclass
class _Scan:
    files: dict[str, _Frame] = field(default_factory=dict)
    info: ScanInfo | None = None
    stacks: dict[StackId, list[str]] | None = None  # grouping cache; None when names changed
    unplaced: list[Unplaced] = field(default_factory=list)
    stable_through: str | None = None  # fixed naming: last name of the unbroken sequence of names
    names_changed_at: float = 0.0  # clock time a name was last added or removed
    last_arrival: float = float("-inf")  # clock time of the latest first look at any of its files
    ids: set[StackId] = field(default_factory=set)  # its stacks as of the last refresh


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
        # (scan, name) of files not yet confirmed settled, in the order they last changed: the due ones come first
        self._unsettled: dict[tuple[str, str], None] = {}
        self._stale: set[str] = set()  # scans whose stacks must be recomputed (names or states changed)
        self._where: dict[StackId, str] = {}  # every current stack -> the scan namespace its files are in
        self._open: set[StackId] = set()  # stacks not done with their current inputs and not claimed
        self._claimed: set[StackId] = set()
        self._done: dict[StackId, Signature] = {}
        self._backoff: dict[StackId, tuple[float, float]] = {}  # stack -> (not before, last delay)
        self._reported: set[tuple[str, str]] = set()
        self._regrouped: set[str] = set()  # scans regrouped since take_unplaced() last looked
        self._dropped: list[StackId] = []  # stacks forgotten since take_dropped() last looked

    # --- what was seen -------------------------------------------------------------------------------------

    def observe(self, scan: str, name: str, state: FileState | None, *, writing: bool | None = None,
                found_together: float | None = None) -> None:
        """Record a look at file ``name`` of ``scan``: its state, or None if it is gone.

        ``writing``: True after a modification event, False after a close-after-write event, None if unknown.
        ``found_together``: the clock time a walk that found the file began; the files one walk finds count as
        arriving together (a walk says nothing about their order), however many passes it takes.
        """
        now = self.clock()
        folder = self._scans.get(scan)
        frame = folder.files.get(name) if folder is not None else None
        if state is None:
            if frame is not None:
                del folder.files[name]
                self._names_changed(scan, folder, now)
                self._unsettled.pop((scan, name), None)
                self._reported.discard((scan, name))
            return
        if folder is None:
            folder = self._scans[scan] = _Scan()
        if frame is None:
            arrived = now if found_together is None else min(now, found_together)
            frame = folder.files[name] = _Frame(state, arrived=arrived, changed_at=now)
            folder.last_arrival = max(folder.last_arrival, arrived)
            self._names_changed(scan, folder, now)
            self._unsettled[(scan, name)] = None
        elif (state.size, state.mtime_ns, state.complete) != (frame.state.size, frame.state.mtime_ns,
                                                               frame.state.complete):
            frame.state, frame.changed_at, frame.confirmed_at = state, now, None
            self._unsettled.pop((scan, name), None)
            self._unsettled[(scan, name)] = None  # to the end: the latest change
            self._stale.add(scan)
        else:
            frame.confirmed_at = now
            if now - frame.changed_at >= self.settle:
                self._unsettled.pop((scan, name), None)
        if writing is not None:
            frame.writing = writing

    def set_scan_info(self, scan: str, info: ScanInfo | None) -> None:
        """What the scan's scan.json says (None: no or unreadable scan.json)."""
        folder = self._scans.get(scan)
        if folder is None:
            if info is None:
                return
            folder = self._scans[scan] = _Scan()
        folder.info = info
        self._stale.add(scan)

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

    def scan_info(self, scan: str) -> ScanInfo | None:
        """What the scan's scan.json said last (None: none, or unreadable)."""
        folder = self._scans.get(scan)
        return folder.info if folder is not None else None

    # --- what to do next -----------------------------------------------------------------------------------

    def unsettled(self) -> int:
        """Files still changing or not yet confirmed by a look after their quiet period."""
        return len(self._unsettled)

    def to_recheck(self) -> Iterator[tuple[str, str]]:
        """Files whose quiet period has passed but that no later look has confirmed yet: look at them again.

        Oldest change first; a generator the caller may leave early (the rest stays due).
        """
        now = self.clock()
        for scan, name in list(self._unsettled):
            frame = self._scans[scan].files.get(name) if scan in self._scans else None
            if frame is None:
                continue
            if now - frame.changed_at < self.settle:
                return  # the rest changed later still
            yield scan, name

    def ready(self) -> Iterator[ReadyStack]:
        """Stacks that are complete now and neither in flight, nor done with these inputs, nor backing off.

        A generator, in stack id order: the caller may stop early (a full queue) and ask again next pass.
        """
        self._refresh(budget=_REFRESH_BUDGET)
        now = self.clock()
        for stack in sorted(self._open):
            if stack not in self._open or now < self._backoff.get(stack, (float("-inf"), 0.0))[0]:
                continue
            scan = self._where[stack]
            folder = self._scans.get(scan)
            if folder is None or folder.stacks is None or stack not in folder.stacks:
                continue  # its folder is still to be regrouped (a later pass)
            names = folder.stacks[stack]
            frames = [folder.files[n] for n in names]
            ended = folder.info is not None and folder.info.ended
            if not all(self._usable(frame, now, ended) for frame in frames):
                continue
            if self.naming.mode == "fixed" and not self._names_settled(folder, names[-1], now):
                continue
            expected = expected_frames(stack, self.naming, folder.info)
            settled_at = max(f.changed_at for f in frames) + self.settle
            reason = self._complete_because(len(names), expected, folder.last_arrival >= settled_at, folder.info,
                                             now - max(f.changed_at for f in frames),
                                             truncated=not all(f.state.complete for f in frames))
            if reason:
                sig = signature((n, f.state) for n, f in zip(names, frames))
                yield ReadyStack(stack, scan, tuple(names), sig, reason, expected)

    def take_unplaced(self) -> list[tuple[str, Unplaced]]:
        """Files no stack could take, each reported once (until it disappears and comes back)."""
        self._refresh(budget=_REFRESH_BUDGET)
        new = []
        for scan in self._regrouped:
            for item in self._scans[scan].unplaced if scan in self._scans else ():
                if (scan, item.name) not in self._reported:
                    self._reported.add((scan, item.name))
                    new.append((scan, item))
        self._regrouped.clear()
        return new

    def take_dropped(self) -> list[StackId]:
        """Stacks forgotten since the last call (their files are gone): what is kept of them elsewhere can go."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def pending(self) -> int:
        """Stacks seen that are neither done with their current inputs nor in flight."""
        self._refresh()
        return len(self._open)

    def unfinished(self) -> list[StackId]:
        """Stacks seen that are not done with their current inputs: waiting, settling, queued or running."""
        return sorted(self._open | self._claimed)

    def stacks(self) -> Iterator[tuple[StackId, Signature]]:
        """Every stack seen, with the signature of its frames now."""
        self._refresh()
        for stack, scan in self._where.items():
            folder = self._scans[scan]
            yield stack, signature((n, folder.files[n].state) for n in folder.stacks[stack])

    def awaiting_timeout(self) -> list[StackId]:
        """Open stacks that ``stack_timeout_seconds`` may still complete (or make usable, for a frame that never
        became whole): what ``once`` waits for once nothing is :meth:`ready`. Not a stack whose scan is
        still going with a known count (only its count readies it), nor one backing off (see :meth:`waiting`)."""
        self._refresh()
        found = []
        for stack in sorted(self._open - set(self._backoff)):
            folder = self._scans.get(self._where[stack])
            if folder is None or folder.stacks is None or stack not in folder.stacks:
                continue
            if _timeout_applies(expected_frames(stack, self.naming, folder.info), folder.info):
                found.append(stack)
        return found

    def waiting(self) -> int:
        """Stacks backing off after a try that could not finish (an input unreadable, the results unwritable)."""
        self._refresh()
        return sum(1 for stack in self._backoff if stack in self._open)

    def is_done(self, stack: StackId) -> bool:
        """Whether ``stack`` is done with its inputs as last grouped (no regrouping: cheap, for every pass)."""
        return stack in self._done and stack not in self._open and stack not in self._claimed

    # --- what happened to a stack --------------------------------------------------------------------------

    def claim(self, stack: StackId) -> None:
        """The stack is queued or running: not ready again until released."""
        self._claimed.add(stack)
        self._open.discard(stack)

    def release(self, stack: StackId, *, done: Signature | None = None, retry: bool = False) -> float | None:
        """The stack left the pipeline: ``done`` with these inputs, or to be tried again (after a backoff if
        ``retry``). Returns the backoff in seconds, if one was set."""
        self._claimed.discard(stack)
        self._refresh(budget=_REFRESH_BUDGET)
        if stack not in self._where:
            return None  # its files are gone meanwhile
        delay = None
        if done is not None:
            self._done[stack] = done
            self._backoff.pop(stack, None)
            self._open.discard(stack)  # at once: a refresh may be some passes away (it reopens it if inputs changed)
        else:
            self._open.add(stack)
            if retry:
                previous = self._backoff.get(stack, (0.0, 0.0))[1]
                delay = min(MAX_BACKOFF_SECONDS, max(1.0, self.settle, 2 * previous))
                self._backoff[stack] = (self.clock() + delay, delay)
        self._stale.add(self._where[stack])
        return delay

    def undo(self, stack: StackId) -> None:
        """Forget that ``stack`` is done (its result went missing): it is considered again."""
        if self._done.pop(stack, None) is not None and stack in self._where:
            self._stale.add(self._where[stack])

    def in_flight(self) -> int:
        return len(self._claimed)

    # --- bookkeeping ---------------------------------------------------------------------------------------

    def _names_changed(self, scan: str, folder: _Scan, now: float) -> None:
        folder.stacks = None
        folder.names_changed_at = now
        self._stale.add(scan)

    def _refresh(self, budget: float | None = None) -> None:
        """Regroup the folders whose names changed, recompute which of their stacks are open, and forget the
        stacks (and folders) that are gone. With a ``budget`` (s), stop after that long: the rest stays stale."""
        deadline = None if budget is None else time.perf_counter() + budget
        while self._stale:
            if deadline is not None and time.perf_counter() > deadline:
                return
            scan = self._stale.pop()
            folder = self._scans.get(scan)
            if folder is None:
                continue
            if not folder.files and folder.info is None:
                del self._scans[scan]
                stacks = {}
            else:
                stacks = self._grouped(scan, folder)
            for stack in folder.ids - stacks.keys():
                self._drop(stack)
            folder.ids = set()
            for stack, names in stacks.items():
                if self._where.setdefault(stack, scan) != scan:
                    continue  # the same id from two folders (a regex 'scan' group): the first folder keeps it
                folder.ids.add(stack)
                sig = signature((n, folder.files[n].state) for n in names)
                if stack in self._claimed or self._done.get(stack) == sig:
                    self._open.discard(stack)
                else:
                    self._open.add(stack)

    def _drop(self, stack: StackId) -> None:
        self._dropped.append(stack)
        self._where.pop(stack, None)
        self._open.discard(stack)
        self._done.pop(stack, None)
        self._backoff.pop(stack, None)

    def _grouped(self, scan: str, folder: _Scan) -> dict[StackId, list[str]]:
        if folder.stacks is None:
            folder.stacks, folder.unplaced = group_files(scan, folder.files, self.naming)
            self._regrouped.add(scan)
            if self.naming.mode == "fixed":
                folder.stable_through = unbroken_prefix(folder.files)
        return folder.stacks

    # --- rules ---------------------------------------------------------------------------------------------

    def _usable(self, frame: _Frame, now: float, scan_ended: bool) -> bool:
        if frame.confirmed_at is None or frame.confirmed_at - frame.changed_at < self.settle:
            return False
        quiet = now - frame.changed_at
        if frame.writing and quiet < self.timeout:  # an open file whose close event was lost must not block forever
            return False
        return frame.state.complete or scan_ended or quiet >= self.timeout

    def _names_settled(self, folder: _Scan, last: str, now: float) -> bool:
        if now - folder.names_changed_at >= self.timeout:
            return True
        stable = folder.stable_through
        return stable is not None and natural_key(last) <= natural_key(stable)

    def _complete_because(
        self, count: int, expected: int | None, moved_on: bool, info: ScanInfo | None, quiet: float, *,
        truncated: bool,
    ) -> str | None:
        """Why a stack whose frames are all usable is complete, or None if it is not; ``truncated``: a frame is
        not whole by its format (only the timeout or the scan's end made it usable)."""
        ended = info is not None and info.ended
        if ended and truncated and (expected is None or count >= expected):
            return "scan ended"  # not "count": the record says what let a frame that is not whole go
        if expected is not None and count >= expected:
            return "count"
        if moved_on and expected is None:
            return "next stack started"
        if info is not None and info.ended and expected is None:
            return "scan ended"
        if quiet >= self.timeout and _timeout_applies(expected, info):
            return "timeout"
        return None


def _timeout_applies(expected: int | None, info: ScanInfo | None) -> bool:
    """Whether the stack timeout may complete a stack: not while its count is known and its scan is still going
    (a paused scan may resume hours later)."""
    still_going = info is not None and info.status is not None and not info.ended
    return not (expected is not None and still_going)


"""Focus-range feedback: did the frames of a stack cover the object, and was any frame wasted?

Pure functions over two numbers per frame that the engine records (``record["frames"][i]``), frames in focus
order (index 0 = the first frame of the stack = the nearest focus on OpenScan rigs):

- ``share``: the fraction of the result's weight that frame i contributed (a stack's shares sum to 1);
- ``focus_change``: how different frame i's sharpness map is from frame i-1's (None for frame 0); a repeated
  focus position gives a value near 0 compared with the stack's other steps.

Per stack (:func:`stack_advice`) and per scan, aggregated over its positions (:func:`scan_advice`), three things
are worth telling the user, in their terms:

- the nearest or farthest frame wins a large share: the range stops short of the object, "extend it";
- two neighbouring frames look the same: the focus did not move between them;
- a frame wins (almost) nothing: it is wasted capture time.

Used by the report; the engine may store :func:`stack_advice` in its record. Thresholds are relative to a
frame's fair share ``1 / n`` so that they mean the same for 3 and 30 frames.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

# An end frame wins "a large share" above max(EDGE_FAIR_SHARES / n, EDGE_MIN_SHARE). A range that just covers the
# object gives an end frame about half a fair share (it is sharp over half a focus step); past 1.5 fair shares,
# depth beyond the range is being collected by the end frame, blurred.
EDGE_FAIR_SHARES = 1.5
EDGE_MIN_SHARE = 0.2
# Two frames look the same when their focus change is below this fraction of the stack's median step.
DUPLICATE_STEP_FRACTION = 0.25
# A frame "wins nothing" below this fraction of a fair share.
UNUSED_FAIR_FRACTION = 0.1
# Scan level: an end frame's large share, or a duplicate pair, counts at "many positions" from this fraction of
# the scan's positions; a frame is wasted "anywhere" when it wins nothing at this fraction of them.
MANY_POSITIONS = 0.25
DUPLICATE_POSITIONS = 0.5
UNUSED_POSITIONS = 0.95

EXTEND_NEAR, EXTEND_FAR, DUPLICATE, UNUSED = "extend_near", "extend_far", "duplicate", "unused"


@dataclass(frozen=True)
class FrameMetrics:
    """The per-frame numbers of one stack, in focus order.

    Attributes
    ----------
    shares : tuple of float, length n
        Fraction of the result each frame contributed, each in [0, 1], summing to 1.
    changes : tuple of float or None, length n
        ``changes[i]`` compares frame i with frame i-1 (>= 0); ``changes[0]`` is None.
    """

    shares: tuple[float, ...]
    changes: tuple[float | None, ...]

    @property
    def count(self) -> int:
        return len(self.shares)


@dataclass(frozen=True)
class Advice:
    """One piece of feedback.

    Attributes
    ----------
    kind : str
        ``extend_near``, ``extend_far``, ``duplicate`` or ``unused``.
    frames : tuple of int
        0-based indices of the frames concerned (one, or a neighbouring pair for ``duplicate``).
    message : str
        What to do, in the user's terms (frame numbers are 1-based).
    positions, of : int
        At how many of how many positions it holds (1 of 1 for a single stack).
    """

    kind: str
    frames: tuple[int, ...]
    message: str
    positions: int = 1
    of: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def frame_metrics(frames: Sequence[Mapping]) -> FrameMetrics | None:
    """The shares and focus changes of a record's ``frames``, or None when the record does not carry them all.

    Records written before the engine measured them, and failed stacks, have none: no feedback then.
    """
    if not frames:
        return None
    try:
        shares = tuple(float(frame["share"]) for frame in frames)
        changes = tuple(None if index == 0 or frame.get("focus_change") is None else float(frame["focus_change"])
                        for index, frame in enumerate(frames))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(0.0 <= share <= 1.0 for share in shares):
        return None
    return FrameMetrics(shares, changes)


@dataclass(frozen=True)
class _Findings:
    """What one stack shows, before it is put into words."""

    near: bool
    far: bool
    duplicates: frozenset[int]  # i such that frames i-1 and i look the same
    unused: frozenset[int]


def edge_share_limit(count: int) -> float:
    """Share above which an end frame of a ``count``-frame stack wins "a large share"."""
    return max(EDGE_FAIR_SHARES / count, EDGE_MIN_SHARE)


def _find(metrics: FrameMetrics) -> _Findings:
    n = metrics.count
    if n < 2:
        return _Findings(False, False, frozenset(), frozenset())
    limit = edge_share_limit(n)
    steps = [change for change in metrics.changes[1:] if change is not None]
    duplicates: frozenset[int] = frozenset()
    if len(steps) >= 2:
        typical = statistics.median(steps)
        if typical > 0:
            duplicates = frozenset(i for i, change in enumerate(metrics.changes) if i > 0 and change is not None
                                   and change <= DUPLICATE_STEP_FRACTION * typical)
    unused = frozenset(i for i, share in enumerate(metrics.shares) if share < UNUSED_FAIR_FRACTION / n)
    # Two frames that both win nothing look alike because both are blurred everywhere: that is "unused", not
    # a repeated focus position.
    duplicates = frozenset(i for i in duplicates if not {i - 1, i} <= unused)
    return _Findings(metrics.shares[0] > limit, metrics.shares[-1] > limit, duplicates, unused)


def stack_advice(metrics: FrameMetrics) -> list[Advice]:
    """Feedback on one stack's focus range (empty when it looks right)."""
    found = _find(metrics)
    n = metrics.count
    advice = []
    for index, edge, kind in ((0, found.near, EXTEND_NEAR), (n - 1, found.far, EXTEND_FAR)):
        if edge:
            share = metrics.shares[index]
            advice.append(Advice(kind, (index,), f"{_extend(kind)}: the {_end(index, n)} gave {share:.0%} of the "
                                                 f"result, so parts {_beyond(kind)} it are probably not sharp."))
    for index in sorted(found.duplicates):
        advice.append(Advice(DUPLICATE, (index - 1, index), f"Frames {index} and {index + 1} look the same: the "
                                                            "focus did not move between them (the same focus "
                                                            "position twice), so one of them is wasted."))
    for frames in _unused_groups(found.unused, n):
        share = sum(metrics.shares[index] for index in frames)
        advice.append(Advice(UNUSED, frames, _unused(frames, n, f"({share:.1%} of the result)")))
    return advice


def scan_advice(stacks: Sequence[FrameMetrics]) -> list[Advice]:
    """Feedback on a scan's focus range, from the positions whose stacks have the scan's usual frame count.

    A scan shares one focus schedule, so what holds at many positions is a setting to change; what holds at one
    position is that position's business (see :func:`stack_advice`).
    """
    if not stacks:
        return []
    n = usual_count(stacks)
    same = [metrics for metrics in stacks if metrics.count == n]
    found = [_find(metrics) for metrics in same]
    total = len(same)
    advice = []
    for index, kind in ((0, EXTEND_NEAR), (n - 1, EXTEND_FAR)):
        hits = [metrics.shares[index] for metrics, f in zip(same, found) if (f.near if kind == EXTEND_NEAR else f.far)]
        if hits and len(hits) >= MANY_POSITIONS * total:
            advice.append(Advice(kind, (index,), f"{_extend(kind)}: the {_end(index, n)} gave a large share of the "
                                                 f"result (median {statistics.median(hits):.0%}) at {len(hits)} of "
                                                 f"{total} positions, so parts {_beyond(kind)} it are not sharp.",
                                 len(hits), total))
    pairs = Counter(index for f in found for index in f.duplicates)
    for index in sorted(pairs):
        if pairs[index] >= DUPLICATE_POSITIONS * total:
            advice.append(Advice(DUPLICATE, (index - 1, index), f"Frames {index} and {index + 1} look the same at "
                                                                f"{pairs[index]} of {total} positions: the focus did "
                                                                "not move between them (the same focus position "
                                                                "twice).", pairs[index], total))
    unused = Counter(index for f in found for index in f.unused)
    wasted = {index for index, hits in unused.items() if hits >= UNUSED_POSITIONS * total}
    for frames in _unused_groups(wasted, n):
        hits = min(unused[index] for index in frames)
        advice.append(Advice(UNUSED, frames, _unused(frames, n, f"at {hits} of {total} positions"), hits, total))
    return advice


def usual_count(stacks: Sequence[FrameMetrics]) -> int:
    """The scan's usual number of frames per stack (a stack with one frame more or less is that position's)."""
    return Counter(metrics.count for metrics in stacks).most_common(1)[0][0]


def _extend(kind: str) -> str:
    return f"Extend the focus range towards {'near' if kind == EXTEND_NEAR else 'far'}"


def _end(index: int, n: int) -> str:
    return f"{'nearest' if index == 0 else 'farthest'} frame ({index + 1} of {n})"


def _beyond(kind: str) -> str:
    return "nearer than" if kind == EXTEND_NEAR else "farther than"


def _unused_groups(unused: set[int] | frozenset[int], n: int) -> list[tuple[int, ...]]:
    """Unused frames as advice-sized groups: the run at the near end, each one inside, the run at the far end."""
    near = tuple(itertools.takewhile(unused.__contains__, range(n)))
    far = tuple(reversed(tuple(itertools.takewhile(unused.__contains__, range(n - 1, len(near) - 1, -1)))))
    inside = [(index,) for index in sorted(unused) if index not in near and index not in far]
    return [group for group in (near, *inside, far) if group]


def _unused(frames: tuple[int, ...], n: int, where: str) -> str:
    first, last = frames[0] + 1, frames[-1] + 1
    if len(frames) == 1:
        label, verb = f"Frame {first} of {n}", "adds"
    else:
        label, verb = f"Frames {first} {'and' if len(frames) == 2 else 'to'} {last} of {n}", "add"
    if first == 1:
        return (f"{label} {verb} nothing {where}: the focus range starts before the object; start it farther to "
                "save capture time.")
    if last == n:
        return (f"{label} {verb} nothing {where}: the focus range ends beyond the object; end it nearer to save "
                "capture time.")
    return f"{label} {verb} nothing {where}: it is wasted capture time."

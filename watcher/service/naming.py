"""Which stack a file belongs to, and the order of the frames in it, decided from file names alone.

Nothing here touches the disk: the observer lists files and reads ``scan.json``, the tracker keeps them, and both ask
this module what the names mean.

Naming modes (``naming.mode``)
------------------------------
``auto`` (default) applies these rules to the file *stem* (the name without its extension); the first
rule that matches wins:

1. OpenScan3, ``scanNN_PPP_fsKK`` (e.g. ``scan01_129_fs00.jpg``): stack ``scanNN_PPP`` (``scan01_129``,
   the name OpenScan's own stacker gives its output ``stacked_scan01_129.jpg``), frame ``KK``.
   Any number of digits is accepted in each field.
2. ``<stack>_f<frame>`` (e.g. ``pos12_f03``, ``bug_007_f2``): stack is everything before the final
   ``_f<digits>``.
3. ``<name>_<stack>-<frame>``, which covers both OpenScan2 forms ``{project}_{pass}_{position}-{focus}``
   and ``{project}_{position}-{focus}`` (e.g. ``owl_1_12-3``): stack is everything before the final
   ``-<digits>`` and must contain an underscore, frame is those digits.

The ``_f``/``_fs`` markers are matched case-insensitively. A name that matches none of these, such as a
camera's ``IMG_0001.jpg``, is reported as unplaced ("name matches no known stack pattern"); such files
need mode ``fixed``. Photos OpenScan writes that are not frames of a stack -- ``scanNN_PPP.jpg`` of a scan
taken without focus stacking, a project's ``thumbnail.jpg`` -- are unplaced *quietly*: expected, not news.

``fixed`` sorts all names naturally and cuts them into stacks of ``naming.stack_size`` frames. A stack is
named after the stem of its first frame, so the names of later stacks do not change when earlier stacks
are archived or deleted. The last stack may be short while its frames are still arriving, and a name that
arrives late shifts the stacks after it: :func:`unbroken_prefix` tells how far the names are known to be
complete.

``regex`` matches ``naming.pattern`` against the whole stem. Its named group ``stack`` names the stack
and ``frame`` orders the frames; an optional non-empty ``scan`` group adds a sub-namespace below the
scan folder. A name that does not match is unplaced.

In every mode frames are ordered numerically (``f9`` before ``f10``; only ASCII ``0``-``9`` count as digits,
so in ``auto`` ``a_f².jpg`` or ``a_f٣.jpg`` is unplaced, never a frame), stack and scan names must be single safe path
components (no ``..``, ``/`` or leading dot, at most 200 bytes: a longer one is unplaced with that reason, as
the names of its results would not fit; see :data:`MAX_NAME_BYTES`), and a second file for a frame that a
stack already has (``a_f1.jpg`` and ``a_f1.png``, or ``a_f01`` and ``a_f1``) is reported as unplaced
rather than dropped: the first in natural name order keeps the frame.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from watcher.config import NamingSettings
from watcher.names import display, natural_key, natural_parts

NAME_MAX = 255  # bytes in one file name (ext4, btrfs, exFAT, vfat, SMB)
# A stack's name plus the most we add to it must fit in NAME_MAX: "stacked_<stack>.depth.thumb.png" adds 24 bytes,
# and the hidden temp file of an atomic write (watcher.atomic) "." and ".tmp-<pid>-<8 hex>" up to 22 more.
MAX_NAME_BYTES = 200

NO_PATTERN = "name matches no known stack pattern"

# OpenScan3 writes scan.json with one of these final statuses; any other (or none) means it may still add
# frames. "paused" is not final: resuming continues the same scan.
_ENDED_STATUSES = frozenset({"completed", "cancelled", "error", "interrupted"})

_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
_PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp")

# re.ASCII: only 0-9 are frame digits, so a stray Unicode digit cannot make two different names equal.
_OPENSCAN3_STACK = r"scan\d+_\d+"
_AUTO_RULES = (
    re.compile(rf"(?P<stack>{_OPENSCAN3_STACK})_fs(?P<frame>\d+)", re.IGNORECASE | re.ASCII),
    re.compile(r"(?P<stack>.+)_f(?P<frame>\d+)", re.IGNORECASE | re.ASCII),
    re.compile(r"(?P<stack>.+_.+)-(?P<frame>\d+)", re.ASCII),
)
_IS_OPENSCAN3_STACK = re.compile(_OPENSCAN3_STACK, re.IGNORECASE | re.ASCII)
# OpenScan3's photos of a scan taken without focus stacking, and the thumbnail it writes into each project.
_OPENSCAN_NOT_STACKS = re.compile(rf"{_OPENSCAN3_STACK}|thumbnail", re.IGNORECASE | re.ASCII)
NOT_A_STACK = "an OpenScan photo that is not part of a focus stack"
_LAST_NUMBER = re.compile(r"(.*?)([0-9]+)([^0-9]*)", re.ASCII)


@dataclass(frozen=True, order=True)
class StackId:
    """One stack: its scan namespace and its name inside that scan.

    Attributes
    ----------
    scan : str
        POSIX relative path of the scan folder inside the hot folder (``""`` for the top level), or of an
        OpenScan2 scan zip (e.g. ``"2024-01-01_12.00.00-owl.zip"``).
    stack : str
        Stack name inside the scan; a safe single path component, so it can name the result file.
    """

    scan: str
    stack: str

    def __str__(self) -> str:
        return f"{self.scan}/{self.stack}" if self.scan else self.stack


@dataclass(frozen=True)
class Unplaced:
    """A file that belongs to no stack, and why.

    Attributes
    ----------
    name : str
        The file name as given.
    reason : str
        Human-readable explanation, for the log.
    quiet : bool
        Expected in the hot folder (OpenScan's own non-stack photos): ignored without a warning.
    """

    name: str
    reason: str
    quiet: bool = False


@dataclass(frozen=True)
class ScanInfo:
    """What an OpenScan3 ``scan.json`` tells about a scan.

    Attributes
    ----------
    focus_stacks : int or None
        Frames per stack (``settings.focus_stacks``, 1-99); None when absent or invalid.
    status : str or None
        Lower-cased scan status (``pending``, ``running``, ``paused``, ``completed``, ``cancelled``,
        ``error``, ``interrupted``); None when absent.
    positions : int or None
        Positions the scan will have (``settings.points``, 1-999), for progress; None when absent or invalid.
    """

    focus_stacks: int | None
    status: str | None
    positions: int | None = None

    @property
    def ended(self) -> bool:
        """True when the status says the scan has ended: it adds no more frames."""
        return self.status in _ENDED_STATUSES


def is_candidate(name: str, extensions: Collection[str]) -> bool:
    """Whether a file name may be a frame of a stack.

    Parameters
    ----------
    name : str
        File name (basename).
    extensions : collection of str
        Accepted extensions, lower-case with their dot, e.g. ``(".jpg", ".png")`` (as ``naming.extensions``
        is); a name's extension matches in any case.

    Returns
    -------
    bool
        False for hidden, temporary and system files, partial downloads, JSON metadata, OpenScan's own
        ``stacked_*`` results, and any extension not in ``extensions``.

    Examples
    --------
    >>> is_candidate("scan01_129_fs00.JPG", (".jpg",))
    True
    >>> is_candidate(".tmp_x1y2.json", (".jpg", ".json"))
    False
    """
    lowered = name.lower()
    if _is_temp_or_system(name) or lowered.endswith(".json") or lowered.startswith("stacked_"):
        return False
    return os.path.splitext(lowered)[1] in extensions


def is_scan_archive(name: str) -> bool:
    """Whether a file name is an OpenScan2 scan zip (``<date>-<project>.zip``, any ``.zip`` accepted)."""
    return not _is_temp_or_system(name) and name.lower().endswith(".zip")


def _is_temp_or_system(name: str) -> bool:
    # Leading dot: dotfiles, AppleDouble "._x", OpenScan's atomic ".tmp_*.json", our own temp files.
    lowered = name.lower()
    return (
        not name
        or name.startswith((".", "~$"))
        or name.endswith("~")
        or lowered in _SYSTEM_FILES
        or lowered.endswith(_PARTIAL_SUFFIXES)
    )


def is_safe_component(text: str) -> bool:
    """Whether ``text`` can be used as one path component without escaping its folder or hiding itself."""
    return component_problem(text) is None


def component_problem(text: str) -> str | None:
    """Why ``text`` cannot name a stack or a scan folder of the results, or None if it can.

    It must be non-empty, at most :data:`MAX_NAME_BYTES` bytes, without ``/``, ``\\`` or NUL, and not start
    with a dot (so not ``.`` or ``..``).
    """
    if not text:
        return "empty"
    if text.startswith("."):
        return "starts with a dot"
    if any(char in text for char in "/\\\0"):
        return "holds a slash, a backslash or NUL"
    size = len(os.fsencode(text))
    if size > MAX_NAME_BYTES:
        return (f"{size} bytes long, over {MAX_NAME_BYTES}: the names of its results, thumbnails and pages "
                f"would not fit in the {NAME_MAX} bytes a file name may have")
    return None


def group_files(
    scan: str, names: Iterable[str], settings: NamingSettings
) -> tuple[dict[StackId, list[str]], list[Unplaced]]:
    """Group the frame files of one scan namespace into stacks.

    Parameters
    ----------
    scan : str
        The namespace all ``names`` live in (see :attr:`StackId.scan`).
    names : iterable of str
        File names (basenames) already accepted by :func:`is_candidate`.
    settings : NamingSettings
        ``mode``, and ``stack_size`` or ``pattern`` as that mode needs.

    Returns
    -------
    stacks : dict of StackId to list of str
        Every stack, sorted by id, with its frame names in frame order.
    unplaced : list of Unplaced
        Files that belong to no stack, in natural name order, each with the reason.
    """
    # Natural name order first, so that which of two duplicate frames wins does not depend on listing order.
    ordered = sorted(set(names), key=natural_key)
    if settings.mode == "fixed":
        return _group_fixed(scan, ordered, settings.stack_size)

    pattern = None
    if settings.mode == "regex":
        if settings.pattern is None:
            raise ValueError("naming mode 'regex' needs naming.pattern")
        pattern = re.compile(settings.pattern)
    frames_by_stack: dict[StackId, dict[tuple, str]] = {}
    unplaced: list[Unplaced] = []
    for name in ordered:
        placed = _place_auto(scan, name) if pattern is None else _place_regex(scan, name, pattern)
        if isinstance(placed, Unplaced):
            unplaced.append(placed)
            continue
        stack_id, frame = placed
        problem = component_problem(stack_id.stack)
        if problem is not None:
            unplaced.append(Unplaced(name, _unsafe(stack_id.stack, problem)))
            continue
        frames = frames_by_stack.setdefault(stack_id, {})
        frame_number = natural_parts(frame)
        if frame_number in frames:
            reason = f"duplicate frame {frame} of stack {stack_id} (already {frames[frame_number]!r})"
            unplaced.append(Unplaced(name, reason))
            continue
        frames[frame_number] = name

    stacks = {
        stack_id: [frames[number] for number in sorted(frames)] for stack_id, frames in sorted(frames_by_stack.items())
    }
    return stacks, unplaced


def _unsafe(stack: str, problem: str) -> str:
    return f"unsafe stack name '{display(stack)}': {problem}"


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _place_auto(scan: str, name: str) -> tuple[StackId, str] | Unplaced:
    stem = _stem(name)
    for rule in _AUTO_RULES:
        match = rule.fullmatch(stem)
        if match:
            return StackId(scan, match["stack"]), match["frame"]
    if _OPENSCAN_NOT_STACKS.fullmatch(stem):
        return Unplaced(name, NOT_A_STACK, quiet=True)
    return Unplaced(name, NO_PATTERN)


def _place_regex(scan: str, name: str, pattern: re.Pattern[str]) -> tuple[StackId, str] | Unplaced:
    match = pattern.fullmatch(_stem(name))
    if match is None:
        return Unplaced(name, "name does not match naming.pattern")
    stack, frame = match["stack"], match["frame"]
    if not stack or not frame:
        return Unplaced(name, "naming.pattern matched with an empty 'stack' or 'frame' group")
    sub_scan = match.groupdict().get("scan")
    if sub_scan:
        problem = component_problem(sub_scan)
        if problem is not None:
            return Unplaced(name, _unsafe(sub_scan, problem) + " (group 'scan')")
        scan = f"{scan}/{sub_scan}" if scan else sub_scan
    return StackId(scan, stack), frame


def _group_fixed(
    scan: str, ordered: list[str], stack_size: int | None
) -> tuple[dict[StackId, list[str]], list[Unplaced]]:
    if stack_size is None:
        raise ValueError("naming mode 'fixed' needs naming.stack_size")
    stacks: dict[StackId, list[str]] = {}
    unplaced: list[Unplaced] = []
    for start in range(0, len(ordered), stack_size):
        frames = ordered[start : start + stack_size]
        stack_id = StackId(scan, _stem(frames[0]))
        problem = component_problem(stack_id.stack)
        if problem is not None:
            reason = _unsafe(stack_id.stack, problem)
        elif stack_id in stacks:
            # Only when files differing in extension alone start two stacks (e.g. stack_size 1).
            reason = f"stack name {stack_id.stack!r} already used by an earlier stack"
        else:
            stacks[stack_id] = frames
            continue
        unplaced.extend(Unplaced(name, reason) for name in frames)
    return stacks, unplaced


def unbroken_prefix(names: Iterable[str]) -> str | None:
    """The last name of the unbroken sequence that the names start with, in natural order.

    Names continue each other when they differ only in their last number, by one (``IMG_0009``, ``IMG_0010``;
    extensions are ignored): then no name can still arrive between them. In ``fixed`` naming, stacks up to this
    name cannot be shifted by a late arrival.

    Examples
    --------
    >>> unbroken_prefix(["a4.jpg", "a1.jpg", "a2.jpg"])
    'a2.jpg'
    >>> unbroken_prefix([]) is None
    True
    """
    ordered = sorted(set(names), key=natural_key)
    if not ordered:
        return None
    last = ordered[0]
    for name in ordered[1:]:
        if not _continues(last, name):
            break
        last = name
    return last


def _continues(previous: str, name: str) -> bool:
    a, b = _LAST_NUMBER.fullmatch(_stem(previous)), _LAST_NUMBER.fullmatch(_stem(name))
    return (a is not None and b is not None and a[1].casefold() == b[1].casefold()
            and a[3].casefold() == b[3].casefold() and int(b[2]) == int(a[2]) + 1)


def expected_frames(stack: StackId, settings: NamingSettings, scan_info: ScanInfo | None) -> int | None:
    """How many frames a complete stack has, when that is known.

    Parameters
    ----------
    stack : StackId
    settings : NamingSettings
    scan_info : ScanInfo or None
        The stack's scan's ``scan.json``, when there is one.

    Returns
    -------
    int or None
        In mode ``auto``, ``scan_info.focus_stacks`` for OpenScan3-named stacks (``scanNN_PPP``) when
        known; otherwise, and in the other modes, ``settings.stack_size`` (None when unset: the tracker then
        relies on its timeout).
    """
    if (
        settings.mode == "auto"
        and scan_info is not None
        and scan_info.focus_stacks is not None
        and _IS_OPENSCAN3_STACK.fullmatch(stack.stack)
    ):
        return scan_info.focus_stacks
    return settings.stack_size


def parse_scan_json(text: str) -> ScanInfo | None:
    """Read the fields that matter here from OpenScan3's ``scanNN/scan.json``. Never raises.

    OpenScan3 writes the ``Scan`` model there (``model_dump_json``), atomically on every step::

        {"project_name": "owl", "index": 1, "status": "running", "current_step": 12,
         "settings": {"points": 130, "focus_stacks": 5, "focus_range": [10.0, 15.0], ...}, ...}

    The scan may also sit under a top-level ``"scan"`` key. ``stacking_task_status.status`` (OpenScan's
    own stacker) is deliberately not read as the scan's status.

    Parameters
    ----------
    text : str
        The file's content.

    Returns
    -------
    ScanInfo or None
        None for malformed JSON, or when neither a valid ``focus_stacks`` (an integer 1-99) nor a status
        is present.
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested input
        return None
    if isinstance(data, dict) and isinstance(data.get("scan"), dict):
        data = data["scan"]
    if not isinstance(data, dict):
        return None

    settings = data.get("settings")
    focus_stacks = settings.get("focus_stacks") if isinstance(settings, dict) else data.get("focus_stacks")
    if isinstance(focus_stacks, bool) or not isinstance(focus_stacks, int) or not 1 <= focus_stacks <= 99:
        focus_stacks = None

    status = _status(data.get("status"))
    if focus_stacks is None and status is None:
        return None
    points = settings.get("points") if isinstance(settings, dict) else None
    positions = points if isinstance(points, int) and not isinstance(points, bool) and 1 <= points <= 999 else None
    return ScanInfo(focus_stacks=focus_stacks, status=status, positions=positions)


def _status(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    # Tolerate an enum dumped by name ("TaskStatus.RUNNING") as well as by value ("running").
    return value.rsplit(".", 1)[-1].strip().lower() or None

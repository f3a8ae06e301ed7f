"""File and folder names as the file system gives them, and as text that can always be written out.

On Linux a name is any bytes but ``/`` and NUL. Python decodes it as UTF-8 with ``surrogateescape``: a latin-1
folder ``caf\\xe9`` from a Samba share or a USB stick arrives as ``"caf\\udce9"``, a string every file operation
takes back exactly, but not text: it cannot be encoded as UTF-8, so it must never reach a log line, a record or
a page as it is. This module is the one home of what is done with such names:

- :func:`display` shows a name as valid text, each undecodable byte as ``\\xNN`` (``caf\\xe9``), for people
  (the log, records, the report). It cannot be turned back into the name (a name may hold a real backslash).
- :func:`name_fields` and :func:`name_from` keep a name in a JSON record: its display form, and its exact
  bytes only when that differs, so "is this stack done" compares the real names.
- :func:`displayable` applies :func:`display` to every string of a log event or a record.
- :func:`natural_key` orders names as people count (``f9`` before ``f10``).

Only ASCII ``0``-``9`` are digits here: ``²`` or ``٣`` in a name are text. Python's ``str.isdigit`` accepts
``²``, which ``int()`` refuses; nothing here calls ``int()`` on a name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote_from_bytes, unquote_to_bytes

_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGIT_RUNS = re.compile(r"([0-9]+)")
_EXACT = "_bytes"  # "name" is shown, "name_bytes" is exact (see name_fields)


def display(text: str) -> str:
    """``text`` as valid Unicode: a byte the name could not be decoded from is shown as ``\\xNN``.

    Examples
    --------
    >>> display("caf\\udce9")
    'caf\\\\xe9'
    >>> display("café")
    'café'
    """
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(_escaped, text)


def _escaped(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def displayable(value: object) -> object:
    """``value`` with every string in it (in dicts, lists and tuples, keys too) made :func:`display`-able."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, Mapping):
        return {displayable(key): displayable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [displayable(item) for item in value]
    return value


def name_fields(key: str, name: str) -> dict[str, str]:
    """A name for a JSON record: ``{key: display}``, plus ``{key + "_bytes": percent-encoded bytes}`` when
    the display form is not the name itself (only then: records of well-formed names stay as they were).

    Examples
    --------
    >>> name_fields("name", "caf\\udce9_f1.jpg")
    {'name': 'caf\\\\xe9_f1.jpg', 'name_bytes': 'caf%E9_f1.jpg'}
    >>> name_fields("name", "café_f1.jpg")
    {'name': 'café_f1.jpg'}
    """
    shown = display(name)
    if shown == name:
        return {key: name}
    return {key: shown, key + _EXACT: quote_from_bytes(os.fsencode(name), safe="/")}


def name_from(fields: Mapping, key: str) -> str | None:
    """The exact name that :func:`name_fields` stored under ``key``; None if it is missing or not text."""
    exact = fields.get(key + _EXACT)
    if exact is None:
        shown = fields.get(key)
        return shown if isinstance(shown, str) else None
    if not isinstance(exact, str):
        return None
    return os.fsdecode(unquote_to_bytes(exact))


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value and ignores case: ``img2``, ``img10``, ``IMG11``.

    Keys of any two strings compare without error, and only equal strings have equal keys (``"a1"`` and
    ``"a01"``, or ``"A"`` and ``"a"``, are ordered by the text itself as a last resort).

    Parameters
    ----------
    text : str
        Any string, undecodable bytes (surrogates) and non-ASCII digits included.

    Returns
    -------
    tuple
        ``(parts, text)``: ``parts`` (:func:`natural_parts`) alternates case-folded text and digit runs.
    """
    return (natural_parts(text), text)


def natural_parts(text: str) -> tuple:
    """The part of :func:`natural_key` that ignores case and leading zeros: equal for ``A1`` and ``a01``."""
    # re.split with a capturing group alternates text, digits, text, ..., so the items at any index have
    # the same type in every key and tuples compare without TypeError. A digit run becomes
    # (length, digits) without leading zeros: numeric order with no int() and no limit on its size.
    parts = _DIGIT_RUNS.split(text.casefold())
    return tuple(_number(part) if index % 2 else part for index, part in enumerate(parts))


def _number(digits: str) -> tuple[int, str]:
    significant = digits.lstrip("0")
    return (len(significant), significant)

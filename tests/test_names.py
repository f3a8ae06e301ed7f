"""Names as the file system gives them, and as text (watcher.names): display, records, natural order."""

from __future__ import annotations

import json
import os
import random
import sys
import unicodedata

import pytest

from watcher.names import display, displayable, name_fields, name_from, natural_key

ODD = ["caf\udce9", "d\udce9j\udce0_f1.jpg", "café", "cafe\u0301", "x1²", "a²_f1", "pos٣", "٣٣", "²1", "1²",
       "it's \"q\" #1 ?x %20 <b> & co", "a\\xe9", "\U0001f600"]


def shuffled(names: list[str], seed: int = 0) -> list[str]:
    names = list(names)
    random.Random(seed).shuffle(names)
    return names


def test_natural_key_orders_numbers_and_ignores_case() -> None:
    names = ["img10", "IMG2", "img1", "img02b", "a", "img", "10", "9", "img2a", "b1c10", "b1c9"]
    assert sorted(names, key=natural_key) == [
        "9",
        "10",
        "a",
        "b1c9",
        "b1c10",
        "img",
        "img1",
        "IMG2",
        "img2a",
        "img02b",
        "img10",
    ]


def test_natural_key_is_a_total_order() -> None:
    # Mixed shapes must never raise TypeError, and only equal strings tie.
    names = ["1a", "a1", "a", "1", "", "a01", "A1", "_", "9" * 5000, "a" + "9" * 5000, *ODD]
    ordered = sorted(names, key=natural_key)
    assert all(sorted(shuffled(names, seed), key=natural_key) == ordered for seed in range(5))
    assert len({natural_key(n) for n in names}) == len(names)
    # Equal ignoring case and leading zeros: adjacent, then ordered by the text itself.
    position = ordered.index("A1")
    assert ordered[position : position + 3] == ["A1", "a01", "a1"]


def test_only_ascii_digits_are_numbers_and_no_unicode_digit_breaks_the_order() -> None:
    # Every character str.isdigit() accepts (², ٣, ①, ...), before, between and after ASCII digits: no int() of
    # what int() refuses, and only 0-9 are counted.
    digits = [chr(code) for code in range(sys.maxunicode + 1) if chr(code).isdigit() and not chr(code).isascii()]
    assert "²" in digits and "٣" in digits and len(digits) > 500
    names = [f"{prefix}{digit}{suffix}" for digit in digits for prefix, suffix in (("a1", ""), ("", "1"), ("a", "b"))]
    ordered = sorted(names, key=natural_key)
    assert len(ordered) == len(names)
    assert sorted(["a10", "a9", "a²", "a٣"], key=natural_key) == ["a9", "a10", "a²", "a٣"]
    assert natural_key("a٣") != natural_key("a3") and unicodedata.digit("٣") == 3


@pytest.mark.parametrize("name", ODD)
def test_a_name_in_a_record_is_valid_text_and_comes_back_exactly(name: str) -> None:
    fields = name_fields("name", name)
    text = json.dumps(fields, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate
    back = json.loads(text)
    assert name_from(back, "name") == name
    assert back["name"] == display(name)
    assert ("name_bytes" in back) == (display(name) != name)  # only when the name is not valid text


def test_undecodable_bytes_are_shown_as_hex_escapes() -> None:
    assert display(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert display("café") == "café" and display("cafe\u0301") == "cafe\u0301"
    assert display("\ud800 not from a name") == "\\ud800 not from a name"  # a stray surrogate: still valid text
    event = {"stack": "caf\udce9/pos", "outputs": [("caf\udce9/pos.jpg", 3)], "n": 1, "caf\udce9": None}
    assert displayable(event) == {"stack": "caf\\xe9/pos", "outputs": [["caf\\xe9/pos.jpg", 3]], "n": 1,
                                  "caf\\xe9": None}


def test_a_record_name_that_is_not_text_is_none() -> None:
    assert name_from({"name": 3}, "name") is None
    assert name_from({"name": "x", "name_bytes": 3}, "name") is None
    assert name_from({}, "name") is None

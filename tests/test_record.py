"""A stack's record with odd names: valid UTF-8 JSON, and "done" still compares the exact names (watcher.record)."""

from __future__ import annotations

import json
import os

import pytest

from watcher.config import ResultsSettings
from watcher.record import UnreadableRecord, parse_record, parse_time, record_from
from watcher.service.inputs import dispose_inputs
from watcher.service.naming import StackId
from watcher.service.placement import Placement
from watcher.service.records import RecordStore, build_record

LATIN1 = os.fsdecode(b"d\xe9j\xe0")  # "d\udce9j\udce0": a latin-1 name from a Samba share


def _strict(data: bytes) -> dict:
    """JSON as a strict reader takes it: UTF-8, and no string a UTF-8 writer could not write again."""
    record = json.loads(data.decode("utf-8"))
    json.dumps(record, ensure_ascii=False).encode("utf-8")
    return record


def test_a_record_of_undecodable_names_is_valid_utf8_and_its_stack_stays_done(tmp_path):
    scan, hot = os.fsdecode(b"caf\xe9"), tmp_path / "hot"
    (tmp_path / "results").mkdir()
    store = RecordStore(Placement(tmp_path / "results", "mirror", "jpg"), after_success="keep")
    stack = StackId(scan, LATIN1)
    frames = [f"{LATIN1}_f{k}.jpg" for k in (1, 2)]
    (hot / scan).mkdir(parents=True)
    for name in frames:
        (hot / scan / name).write_bytes(b"frame")
    signature = tuple((name, 5, (hot / scan / name).stat().st_mtime_ns) for name in frames)
    paths = store.placement.prepare(stack)
    paths.image.write_bytes(b"image")
    outputs = store.output_sizes([paths.image])
    record = build_record(stack, signature, status="ok", reason="count", attempts=1, started_at=0.0,
                          finished_at=1.0, outputs=outputs, engine={"frames": [{"name": n} for n in frames]},
                          error=f"{hot / scan / frames[0]}: a warning naming the file")
    store.write(stack, record)

    written = _strict(paths.record.read_bytes())
    assert written["stack"] == "caf\\xe9/d\\xe9j\\xe0" and written["frames"][0]["name"] == "d\\xe9j\\xe0_f1.jpg"
    assert written["inputs"][0]["name"] == "d\\xe9j\\xe0_f1.jpg"
    assert written["inputs"][0]["name_bytes"] == "d%E9j%E0_f1.jpg"
    assert written["outputs"][0]["path_bytes"] == "caf%E9/d%E9j%E0.jpg"
    assert written["error"].endswith("caf\\xe9/d\\xe9j\\xe0_f1.jpg: a warning naming the file")
    assert store.done(stack, signature) is not None  # the exact names match the files, the output is there
    assert store.load(stack).signature == signature
    assert dispose_inputs(ResultsSettings(), hot / scan, scan, signature) == "kept"


def test_a_record_from_before_names_were_kept_so_still_counts():
    # Written by an earlier version: the name as JSON's "\udce9" escape, which Python reads back exactly.
    old = b'{"stack": "d\\udce9j", "status": "ok", "inputs": [{"name": "d\\udce9j_f1.jpg", "size": 1, ' \
          b'"mtime_ns": 2}], "outputs": [{"path": "d\\udce9j.jpg"}], "error": "d\\udce9j: no"}'
    record = parse_record(old)
    assert record.signature == (("d\udce9j_f1.jpg", 1, 2),)
    assert record.outputs == (("d\udce9j.jpg", None),)  # no size recorded: any size will do
    assert (record.stack, record.error) == ("d\\xe9j", "d\\xe9j: no")  # shown as valid text


@pytest.mark.parametrize("inputs", [[{"name": "a", "name_bytes": 7, "size": 1, "mtime_ns": 2}],
                                    [{"name_bytes": ["a"], "size": 1, "mtime_ns": 2}]])
def test_exact_names_of_the_wrong_type_make_a_record_not_ours(inputs):
    with pytest.raises(UnreadableRecord, match="'inputs' is not a list"):
        record_from({"stack": "a", "status": "ok", "inputs": inputs})


def test_record_times_are_aware_and_unreadable_ones_are_none():
    assert parse_time("2026-11-30T22:00:00+01:00").utcoffset().total_seconds() == 3600
    assert parse_time("2026-11-30T22:00:00").tzinfo is not None  # taken as local time
    assert parse_time("yesterday") is None and parse_time(None) is None and parse_time(5) is None

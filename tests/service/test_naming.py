"""Tests of file-name grouping into stacks (watcher.service.naming)."""

import json
import random

import pytest

from watcher.config import NamingSettings
from watcher.service.naming import (
    NO_PATTERN,
    NOT_A_STACK,
    ScanInfo,
    StackId,
    Unplaced,
    expected_frames,
    group_files,
    is_candidate,
    is_safe_component,
    is_scan_archive,
    parse_scan_json,
    unbroken_prefix,
)

AUTO = NamingSettings()
EXTENSIONS = AUTO.extensions


def shuffled(names: list[str], seed: int = 0) -> list[str]:
    names = list(names)
    random.Random(seed).shuffle(names)
    return names


# --- auto mode ---------------------------------------------------------------------------------------------


def test_openscan3_positions_out_of_order_frames_in_numeric_order() -> None:
    # Path-optimised capture order: positions arrive out of sequence; 12 frames so fs2 < fs10 matters.
    positions = [129, 7, 64]
    names = [f"scan01_{p:03d}_fs{k:02d}.jpg" for p in positions for k in range(12)]
    names += ["scan01_005_fs2.jpg", "scan01_005_fs10.jpg", "scan01_005_fs1.jpg"]  # tolerant digit counts

    stacks, unplaced = group_files("owl/scan01", shuffled(names), AUTO)

    assert unplaced == []
    assert list(stacks) == sorted(
        StackId("owl/scan01", s) for s in ["scan01_129", "scan01_007", "scan01_064", "scan01_005"]
    )
    assert stacks[StackId("owl/scan01", "scan01_129")] == [f"scan01_129_fs{k:02d}.jpg" for k in range(12)]
    assert stacks[StackId("owl/scan01", "scan01_005")] == [
        "scan01_005_fs1.jpg",
        "scan01_005_fs2.jpg",
        "scan01_005_fs10.jpg",
    ]


def test_openscan3_stack_name_matches_openscan_stacked_output() -> None:
    stacks, _ = group_files("", ["scan01_129_fs00.jpg", "scan01_129_fs01.jpg"], AUTO)
    (stack_id,) = stacks
    assert f"stacked_{stack_id.stack}.jpg" == "stacked_scan01_129.jpg"
    assert str(stack_id) == "scan01_129"


def test_openscan2_both_name_forms() -> None:
    archive = "2024-01-01_12.00.00-owl.zip"
    names = ["owl_1_12-0.jpg", "owl_1_12-1.jpg", "owl_1_12-10.jpg", "owl_1_12-2.jpg", "owl_2_12-0.jpg"]
    names += ["my-owl_3-1.jpg", "my-owl_3-0.jpg"]  # {project}_{position}-{focus}, project with a dash

    stacks, unplaced = group_files(archive, shuffled(names), AUTO)

    assert unplaced == []
    assert stacks == {
        StackId(archive, "my-owl_3"): ["my-owl_3-0.jpg", "my-owl_3-1.jpg"],
        StackId(archive, "owl_1_12"): ["owl_1_12-0.jpg", "owl_1_12-1.jpg", "owl_1_12-2.jpg", "owl_1_12-10.jpg"],
        StackId(archive, "owl_2_12"): ["owl_2_12-0.jpg"],
    }
    assert str(StackId(archive, "owl_1_12")) == f"{archive}/owl_1_12"


def test_underscore_f_form() -> None:
    names = ["pos12_f03.jpg", "pos12_f1.jpg", "pos12_F10.png", "bug_007_f2.tif", "bug_007_f1.tif"]

    stacks, unplaced = group_files("", shuffled(names), AUTO)

    assert unplaced == []
    assert stacks == {
        StackId("", "bug_007"): ["bug_007_f1.tif", "bug_007_f2.tif"],
        StackId("", "pos12"): ["pos12_f1.jpg", "pos12_f03.jpg", "pos12_F10.png"],
    }


def test_raw_frames_are_grouped_as_jpeg_frames_are_in_every_mode() -> None:
    """OpenScan3's DNG scans (scanNN_PPP_fsKK.dng), a DSLR on a rail (_f names, fixed, regex): raw suffixes are
    frames by default, in any case."""
    assert {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"} <= set(EXTENSIONS)
    names = [f"scan01_003_fs{k:02d}.dng" for k in range(3)] + ["pos7_f2.CR2", "pos7_f1.CR2", "owl_7_2-0.NEF"]
    stacks, unplaced = group_files("owl/scan01", shuffled(names), AUTO)
    assert unplaced == [] and all(is_candidate(name, EXTENSIONS) for name in names)
    assert stacks == {
        StackId("owl/scan01", "scan01_003"): [f"scan01_003_fs{k:02d}.dng" for k in range(3)],
        StackId("owl/scan01", "pos7"): ["pos7_f1.CR2", "pos7_f2.CR2"],
        StackId("owl/scan01", "owl_7_2"): ["owl_7_2-0.NEF"],
    }
    fixed, _ = group_files("", [f"DSC{i:04d}.ARW" for i in (3, 1, 2, 4)], NamingSettings(mode="fixed", stack_size=2))
    assert fixed == {StackId("", "DSC0001"): ["DSC0001.ARW", "DSC0002.ARW"],
                     StackId("", "DSC0003"): ["DSC0003.ARW", "DSC0004.ARW"]}
    regex = NamingSettings(mode="regex", pattern=r"bug_(?P<stack>\d+)_(?P<frame>\d+)")
    assert group_files("", ["bug_1_2.RAF", "bug_1_1.RAF"], regex)[0] == {StackId("", "1"): ["bug_1_1.RAF",
                                                                                            "bug_1_2.RAF"]}


def test_first_matching_rule_wins() -> None:
    # "_f<digits>" at the end wins over the dash rule; OpenScan3 wins over everything.
    stacks, _ = group_files("", ["a_b-3_f1.jpg", "scan02_001_fs01.jpg"], AUTO)
    assert set(stacks) == {StackId("", "a_b-3"), StackId("", "scan02_001")}


@pytest.mark.parametrize(
    "name",
    [
        "IMG_0001.jpg",  # camera names need mode fixed
        "DSC-0001.jpg",  # dash rule needs an underscore before the stack's last part
        "2024-01-01.jpg",
        "photo_f.jpg",
        "a_-3.jpg",
    ],
)
def test_unplaced_names_are_reported_with_a_reason(name: str) -> None:
    stacks, unplaced = group_files("", [name, "pos1_f0.jpg"], AUTO)
    assert stacks == {StackId("", "pos1"): ["pos1_f0.jpg"]}
    assert unplaced == [Unplaced(name, NO_PATTERN)]


@pytest.mark.parametrize("name", ["scan01_129.jpg", "scan02_000.JPG", "thumbnail.jpg"])
def test_openscan_photos_that_are_not_stacks_are_unplaced_quietly(name: str) -> None:
    """OpenScan3 writes scanNN_PPP.jpg for scans without focus stacking, and a thumbnail.jpg per project:
    expected files, not news (a warning each would be ~130 per scan)."""
    stacks, unplaced = group_files("", [name, "pos1_f0.jpg"], AUTO)
    assert stacks == {StackId("", "pos1"): ["pos1_f0.jpg"]}
    assert unplaced == [Unplaced(name, NOT_A_STACK, quiet=True)]


def test_unbroken_prefix_tells_how_far_fixed_names_are_complete() -> None:
    assert unbroken_prefix(["a1.jpg", "a2.jpg", "a4.jpg"]) == "a2.jpg"
    assert unbroken_prefix(["IMG_0009.JPG", "IMG_0010.jpg", "IMG_0011.jpg"]) == "IMG_0011.jpg"
    assert unbroken_prefix(["x.jpg", "y.jpg"]) == "x.jpg"
    assert unbroken_prefix(["a1_f.jpg", "a2_g.jpg"]) == "a1_f.jpg"  # the text after the number differs


def test_unplaced_names_are_never_lumped_together() -> None:
    names = ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg", "DSC-7.jpg"]
    stacks, unplaced = group_files("", names, AUTO)
    assert stacks == {}
    assert sorted(u.name for u in unplaced) == sorted(names)
    assert all(u.reason == NO_PATTERN for u in unplaced)


def test_duplicate_frames_reported_whatever_the_listing_order() -> None:
    names = ["a_f1.png", "a_f1.jpg", "a_f01.jpg", "a_f2.jpg"]
    for seed in range(5):
        stacks, unplaced = group_files("", shuffled(names, seed), AUTO)
        # Natural name order: a_f01.jpg < a_f1.jpg < a_f1.png, so a_f01.jpg keeps frame 1.
        assert stacks == {StackId("", "a"): ["a_f01.jpg", "a_f2.jpg"]}
        assert [u.name for u in unplaced] == ["a_f1.jpg", "a_f1.png"]
        assert all(u.reason.startswith("duplicate frame 1 of stack a") for u in unplaced)


def test_auto_rejects_unsafe_stack_names() -> None:
    long_stack = "x" * 201
    stacks, unplaced = group_files("", [f"{long_stack}_f1.jpg", "ok_f1.jpg"], AUTO)
    assert list(stacks) == [StackId("", "ok")]
    assert unplaced[0].name == f"{long_stack}_f1.jpg" and unplaced[0].reason.startswith("unsafe stack name")


def test_a_stack_name_is_measured_in_bytes_so_its_results_names_fit_the_file_system() -> None:
    # 120 characters, 240 bytes: the file exists (250 bytes), but "<stack>.depth.thumb.png" could not.
    too_long, longest = "é" * 120, "é" * 100
    stacks, unplaced = group_files("", [f"{too_long}_f1.jpg", f"{longest}_f1.jpg"], AUTO)
    assert list(stacks) == [StackId("", longest)]
    [refused] = unplaced
    assert refused.name == f"{too_long}_f1.jpg" and "240 bytes long, over 200" in refused.reason


def test_only_ascii_digits_number_frames_and_odd_names_group_as_they_are() -> None:
    latin1 = "d\udce9j\udce0"  # os.fsdecode(b"d\xe9j\xe0")
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    names = ["a_f\u00b2.jpg", "a_f\u0663.jpg", "a_f1.jpg", f"{latin1}_f1.jpg", f"{nfc}_f1.jpg", f"{nfd}_f1.jpg",
             "x1\u00b2_f2.jpg", "x1\u00b2_f10.jpg", "it's \"q\" #1 ?x %20 <b> & co_f1.jpg"]
    stacks, unplaced = group_files("", shuffled(names), AUTO)
    assert [u.name for u in unplaced] == ["a_f\u00b2.jpg", "a_f\u0663.jpg"]  # ² and ٣ are no frame numbers
    assert all(u.reason == NO_PATTERN for u in unplaced)
    assert stacks[StackId("", "x1\u00b2")] == ["x1\u00b2_f2.jpg", "x1\u00b2_f10.jpg"]
    odd = "it's \"q\" #1 ?x %20 <b> & co"
    assert {StackId("", latin1), StackId("", nfc), StackId("", nfd), StackId("", odd)} < set(stacks)


# --- fixed mode --------------------------------------------------------------------------------------------


def test_fixed_mode_groups_in_natural_order_with_short_last_stack() -> None:
    settings = NamingSettings(mode="fixed", stack_size=3)
    names = [f"IMG_{i}.jpg" for i in range(1, 9)]  # IMG_1 .. IMG_8, unpadded: lexical order would be wrong

    stacks, unplaced = group_files("cam", shuffled(names), settings)

    assert unplaced == []
    assert stacks == {
        StackId("cam", "IMG_1"): ["IMG_1.jpg", "IMG_2.jpg", "IMG_3.jpg"],
        StackId("cam", "IMG_4"): ["IMG_4.jpg", "IMG_5.jpg", "IMG_6.jpg"],
        StackId("cam", "IMG_7"): ["IMG_7.jpg", "IMG_8.jpg"],
    }


def test_fixed_mode_ids_stable_after_first_stack_removed() -> None:
    settings = NamingSettings(mode="fixed", stack_size=2)
    names = [f"IMG_{i:04d}.jpg" for i in range(1, 7)]
    before, _ = group_files("", names, settings)

    after, unplaced = group_files("", names[2:], settings)  # first stack archived after processing

    assert unplaced == []
    assert after == {key: frames for key, frames in before.items() if key.stack != "IMG_0001"}
    assert list(after) == [StackId("", "IMG_0003"), StackId("", "IMG_0005")]


def test_fixed_mode_reports_colliding_stack_names() -> None:
    settings = NamingSettings(mode="fixed", stack_size=1)
    stacks, unplaced = group_files("", ["a.png", "a.jpg", "b.jpg"], settings)
    assert stacks == {StackId("", "a"): ["a.jpg"], StackId("", "b"): ["b.jpg"]}
    assert [u.name for u in unplaced] == ["a.png"] and "already used" in unplaced[0].reason


# --- regex mode --------------------------------------------------------------------------------------------


def test_regex_mode_with_scan_group_extends_namespace() -> None:
    settings = NamingSettings(mode="regex", pattern=r"(?P<scan>[a-z]+)_p(?P<stack>\d+)_z(?P<frame>\d+)")
    names = ["owl_p1_z10.jpg", "owl_p1_z9.jpg", "cat_p1_z0.jpg", "nothing.jpg"]

    stacks, unplaced = group_files("rig", names, settings)

    assert stacks == {
        StackId("rig/cat", "1"): ["cat_p1_z0.jpg"],
        StackId("rig/owl", "1"): ["owl_p1_z9.jpg", "owl_p1_z10.jpg"],
    }
    assert [u.name for u in unplaced] == ["nothing.jpg"]
    top, _ = group_files("", ["owl_p1_z1.jpg"], settings)
    assert list(top) == [StackId("owl", "1")]


def test_regex_mode_empty_optional_scan_group_keeps_namespace() -> None:
    settings = NamingSettings(mode="regex", pattern=r"(?:(?P<scan>[a-z]+)-)?(?P<stack>p\d+)_(?P<frame>\w+)")
    stacks, _ = group_files("rig", ["p1_b.jpg", "p1_a.jpg", "x-p1_a.jpg"], settings)
    assert stacks == {StackId("rig", "p1"): ["p1_a.jpg", "p1_b.jpg"], StackId("rig/x", "p1"): ["x-p1_a.jpg"]}


@pytest.mark.parametrize("bad", ["..", ".hidden", "a/b", "a\\b", "."])
@pytest.mark.parametrize("group", ["stack", "scan"])
def test_regex_mode_rejects_path_traversal(bad: str, group: str) -> None:
    other = "scan" if group == "stack" else "stack"
    settings = NamingSettings(mode="regex", pattern=rf"(?P<{group}>.+)@(?P<{other}>\w+)@(?P<frame>\d+)")
    # The names come from a regex over arbitrary text (e.g. zip members), so slashes can reach us.
    name = f"{bad}@ok@1.jpg"

    stacks, unplaced = group_files("", [name], settings)

    assert stacks == {}
    assert len(unplaced) == 1 and unplaced[0].reason.startswith("unsafe stack name")


def test_regex_mode_empty_stack_group_is_unplaced() -> None:
    settings = NamingSettings(mode="regex", pattern=r"(?P<stack>[a-z]*)_(?P<frame>\d+)")
    stacks, unplaced = group_files("", ["_1.jpg", "a_1.jpg"], settings)
    assert list(stacks) == [StackId("", "a")]
    assert [u.name for u in unplaced] == ["_1.jpg"]


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".DS_Store",
        "._scan01_001_fs00.jpg",
        ".tmp_abc123.json",
        ".pos1_f1.jpg.tmp-42-0a1b2c3d",
        "Thumbs.db",
        "desktop.ini",
        "~$report.jpg",
        "pos1_f1.jpg~",
        "pos1_f1.jpg.part",
        "pos1_f1.jpg.crdownload",
        "pos1_f1.tmp",
        "scan01_001_fs00.json",
        "scan.json",
        "stacked_scan01_001.jpg",
        "scan01_001_fs00.npy",
        "pos1_f1",
        "",
    ],
)
def test_is_candidate_rejects_temp_system_and_metadata(name: str) -> None:
    assert not is_candidate(name, (*EXTENSIONS, ".json"))


@pytest.mark.parametrize("name", ["scan01_001_fs00.jpg", "pos1_f1.JPEG", "owl_1_2-3.TIF", "IMG_0001.png"])
def test_is_candidate_accepts_frames(name: str) -> None:
    assert is_candidate(name, EXTENSIONS)
    assert not is_candidate(name, (".dng",))


def test_is_scan_archive() -> None:
    assert is_scan_archive("2024-01-01_12.00.00-owl.zip")
    assert is_scan_archive("OWL.ZIP")
    assert not is_scan_archive(".owl.zip")
    assert not is_scan_archive("owl.zip.part")
    assert not is_scan_archive("owl.jpg")


@pytest.mark.parametrize("text", ["a", "scan01_129", "x" * 200, "é" * 100, "a.b", "with space", "caf\udce9"])
def test_is_safe_component_accepts(text: str) -> None:
    assert is_safe_component(text)


@pytest.mark.parametrize("text", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\0b", "x" * 201, "é" * 101])
def test_is_safe_component_rejects(text: str) -> None:
    assert not is_safe_component(text)


# --- scan.json ---------------------------------------------------------------------------------------------

REAL_SCAN_JSON = {
    "project_name": "owl",
    "index": 1,
    "created": "2025-03-01T10:00:00",
    "status": "running",
    "settings": {
        "path_method": "fibonacci",
        "points": 130,
        "image_format": "jpeg",
        "min_theta": 12.0,
        "max_theta": 125.0,
        "optimize_path": True,
        "optimization_algorithm": "nearest_neighbor",
        "focus_stacks": 5,
        "focus_range": [10.0, 15.0],
    },
    "camera_name": "imx519",
    "camera_settings": {"shutter": 400, "AF": False},
    "current_step": 12,
    "system_message": None,
    "last_updated": "2025-03-01T10:05:00",
    "description": None,
    "duration": 301.5,
    "photos": ["scan01_000_fs00.jpg"],
    "task_id": "5f0c",
    "stacking_task_status": {"task_id": "77aa", "status": "completed"},
}


def test_parse_scan_json_real_looking() -> None:
    info = parse_scan_json(json.dumps(REAL_SCAN_JSON, indent=2))
    # stacking_task_status.status is OpenScan's own stacker, not the scan: it must not end the scan.
    assert info == ScanInfo(focus_stacks=5, status="running", positions=130)
    assert not info.ended


@pytest.mark.parametrize(
    ("status", "running"),
    [
        ("pending", True),
        ("running", True),
        ("paused", True),
        ("RUNNING", True),
        ("TaskStatus.RUNNING", True),
        ("completed", False),
        ("cancelled", False),
        ("error", False),
        ("interrupted", False),
        ("ScanStatus.COMPLETED", False),
    ],
)
def test_parse_scan_json_status(status: str, running: bool) -> None:
    info = parse_scan_json(json.dumps({**REAL_SCAN_JSON, "status": status}))
    assert info is not None and info.ended is not running


@pytest.mark.parametrize(
    "text",
    ["", "{", "not json", "[1, 2]", "null", "42", '"running"', "{}", '{"project_name": "owl"}', "[" * 100_000],
)
def test_parse_scan_json_malformed_or_useless(text: str) -> None:
    assert parse_scan_json(text) is None


@pytest.mark.parametrize("bad", [0, 100, -1, 5.0, "5", True, None, [5]])
def test_parse_scan_json_invalid_focus_stacks(bad: object) -> None:
    data = {**REAL_SCAN_JSON, "settings": {**REAL_SCAN_JSON["settings"], "focus_stacks": bad}}
    assert parse_scan_json(json.dumps(data)) == ScanInfo(focus_stacks=None, status="running", positions=130)


def test_parse_scan_json_partial_and_nested() -> None:
    assert parse_scan_json('{"settings": {"focus_stacks": 7}}') == ScanInfo(7, None)
    assert parse_scan_json('{"status": "completed"}') == ScanInfo(None, "completed")
    assert parse_scan_json('{"focus_stacks": 6}') == ScanInfo(6, None)
    assert parse_scan_json('{"scan": {"status": "paused", "settings": {"focus_stacks": 3}}}') == ScanInfo(3, "paused")
    assert parse_scan_json('{"status": 3, "settings": "x"}') is None
    assert not ScanInfo(focus_stacks=4, status=None).ended  # unknown status: more frames may come


# --- expected_frames ---------------------------------------------------------------------------------------


def test_expected_frames_per_mode() -> None:
    info = ScanInfo(focus_stacks=5, status="running")
    openscan3 = StackId("owl/scan01", "scan01_129")
    other = StackId("", "pos12")

    assert expected_frames(openscan3, AUTO, info) == 5
    assert expected_frames(openscan3, AUTO, None) is None
    assert expected_frames(openscan3, AUTO, ScanInfo(None, "running")) is None
    assert expected_frames(other, AUTO, info) is None
    # In auto mode stack_size is the fallback for names scan.json does not cover (e.g. OpenScan2 zips).
    assert expected_frames(other, NamingSettings(stack_size=4), info) == 4
    assert expected_frames(openscan3, NamingSettings(stack_size=4), info) == 5

    fixed = NamingSettings(mode="fixed", stack_size=3)
    assert expected_frames(openscan3, fixed, info) == 3

    regex = NamingSettings(mode="regex", pattern=r"(?P<stack>.+)_(?P<frame>\d+)")
    assert expected_frames(openscan3, regex, info) is None
    assert expected_frames(other, regex.model_copy(update={"stack_size": 6}), info) == 6

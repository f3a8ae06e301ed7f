"""Beside OpenScan3's firmware: results in its scans' ``stacked/`` folders, the files it writes that are not
stacks, its scan.json, and a firmware user that must still read and delete what we write."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import (
    Rig,
    below,
    openscan3_exif,
    openscan3_name,
    openscan3_stack,
    with_exif,
    write_frame,
    write_openscan3_stacks,
    write_scan_json,
)

FIRMWARE_UID, RIG_GID = 54321, 54320  # the firmware's user and the rig's group (no names needed)


def openscan_config(rig: Rig, **results) -> Path:
    return rig.config(results_folder=rig.hot, results={"layout": "openscan", **results})


def record_of(rig: Rig, project: str, scan: int, position: int) -> Path:
    """Where an openscan stack's record is: in focus-watcher's own folder, not in the firmware's ``stacked/``."""
    folder = f"scan{scan:02d}"
    return rig.hot / ".focus-watcher" / "stacks" / project / folder / f"stacked_{folder}_{position:03d}.json"


def wait_stacked(daemon, stacks: list[str]) -> None:
    """Each of ``stacks`` done (the records are in the projects folder: :meth:`Daemon.wait_done` looks elsewhere)."""
    for stack in stacks:
        daemon.wait_event("stack.done", timeout=30, stack=stack)


def shipped_by_the_firmware(project: Path) -> set[str]:
    """What OpenScan3 sends out of a project, stacked photos preferred (as the firmware's code at 58e1653 does):
    its ZIP download takes everything in a scan folder but the originals and their metadata
    (routers/v0_9/projects.py ``_add_scan_directory_to_zip``); its cloud upload every JPEG of the project, a
    scan's ``stacked/`` JPEGs instead of its photos (controllers/services/cloud.py ``_collect_project_photos``).
    Paths relative to ``project``."""
    shipped = set()
    preferred = set()
    for scan in sorted(project.glob("scan*")):
        stacked = [p for p in (scan / "stacked").rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")]
        if not stacked:
            shipped |= {p.relative_to(project).as_posix() for p in scan.rglob("*") if p.is_file()}
            continue
        preferred.add(scan)
        originals = {p.name for p in scan.glob("scan*_fs*.jpg")}
        metadata = {f"metadata/{Path(name).stem}.json" for name in originals}
        for path in scan.rglob("*"):
            relative = path.relative_to(scan).as_posix()
            if path.is_file() and relative not in originals and relative not in metadata:
                shipped.add(path.relative_to(project).as_posix())
    for path in project.rglob("*"):
        photo = path.is_file() and path.suffix.lower() in (".jpg", ".jpeg")
        if photo and not any(scan in path.parents for scan in preferred):
            shipped.add(path.relative_to(project).as_posix())
    return shipped


def test_openscan_layout_refuses_png_at_start_naming_the_key(rig):
    """OpenScan3 indexes and uploads stacked/stacked_*.jpg as JPEG: PNG bytes under that name would break both."""
    config = rig.config(results_folder=rig.hot, results={"layout": "openscan"}, stacking={"output_format": "png"})
    for command in ("config", "run"):
        done = rig.cli(command, config=config, timeout=30)
        assert done.returncode == 2, done
        assert 'stacking.output_format must be "jpg" with results.layout = "openscan"' in done.stderr


def test_photos_openscan_writes_that_are_not_stacks_are_ignored_quietly(rig, frames):
    """A scan taken without focus stacking (scan01_000.jpg ...) and the project's thumbnail.jpg are expected
    files: no ``file.unplaced`` warning (that would be ~130 per scan); a stacked scan beside them is stacked."""
    daemon = rig.start(openscan_config(rig))
    write_frame(rig.hot / "owl" / "thumbnail.jpg", frames.small[0])
    write_scan_json(rig.hot / "owl" / "scan01", "completed", 1)
    for position in range(20):
        write_frame(rig.hot / "owl" / "scan01" / f"scan01_{position:03d}.jpg", frames.small[position % 7])
    [stack] = write_openscan3_stacks(rig.hot, "owl", 2, {0: frames.stack(3)})
    daemon.wait_event("stack.done", stack=stack)
    assert (rig.hot / "owl" / "scan02" / "stacked" / "stacked_scan02_000.jpg").is_file()
    time.sleep(0.6)
    assert daemon.events("file.unplaced") == []
    assert daemon.events("stack.ready") and {e["stack"] for e in daemon.events("stack.ready")} == {stack}
    assert daemon.terminate() == 0


def test_a_failed_stack_says_it_leaves_a_gap_in_the_upload_or_puts_its_sharpest_frame_there(rig, frames):
    """OpenScan3's cloud upload takes only stacked/ once a scan has results there, so a failed stack drops its
    position: its record and log line say so. With ``results.on_failure = "sharpest_frame"`` the sharpest
    readable frame -- the camera's own file, byte for byte -- goes where the result would, marked in the record."""
    bad = [frames.small[0], frames.small[1], b"this is not a JPEG at all \xff\xd9"]  # usable at once, fails
    daemon = rig.start(openscan_config(rig))
    [first] = write_openscan3_stacks(rig.hot, "owl", 1, {5: bad})
    failed = daemon.wait_event("stack.failed", stack=first)[0]
    assert failed["upload_gap"] is True and failed["fallback"] is None
    record = json.loads(record_of(rig, "owl", 1, 5).read_text())
    assert any("cloud upload" in w for w in record["warnings"]) and record["outputs"] == [], record
    assert not (rig.hot / "owl" / "scan01" / "stacked" / "stacked_scan01_005.jpg").exists()
    assert daemon.terminate() == 0

    daemon = rig.start(openscan_config(rig, on_failure="sharpest_frame"))
    [second] = write_openscan3_stacks(rig.hot, "owl", 2, {5: bad})
    failed = daemon.wait_event("stack.failed", stack=second)[0]
    image = rig.hot / "owl" / "scan02" / "stacked" / "stacked_scan02_005.jpg"
    record = json.loads(record_of(rig, "owl", 2, 5).read_text())
    assert record["status"] == "failed" and record["fallback"]["frame"] == failed["fallback"], record
    assert image.read_bytes() == bad[record["fallback"]["index"]]
    assert record["outputs"] == [{"path": "owl/scan02/stacked/stacked_scan02_005.jpg", "bytes": image.stat().st_size}]
    assert daemon.terminate() == 0


def test_nothing_of_ours_rides_along_with_a_project_whatever_the_projects_are_called(rig, frames):
    """Beside the firmware (results folder = projects folder): a project named ``report`` used to hold our pages
    and thumbnails, which its upload sent; our records rode along in every ZIP download. Now the report, the
    records and depth maps and the pid file are in ``.focus-watcher/`` (no project can be called that), and a
    project ships its photos, its own files and our stacked JPEGs, nothing else."""
    daemon = rig.start(rig.config(results_folder=rig.hot, results={"layout": "openscan"},
                                  stacking={"depthmap": True}))
    stacks = []
    for project in ("report", "owl"):
        (rig.hot / project).mkdir()
        (rig.hot / project / "openscan_project.json").write_text(json.dumps({"name": project, "scans": {}}))
        stacks += write_openscan3_stacks(rig.hot, project, 1, {0: frames.stack(3), 1: frames.stack(3, offset=2)},
                                         status="completed")
    wait_stacked(daemon, stacks)
    index = rig.hot / "index.html"
    daemon.wait_for(lambda: index.is_file() and "report/scan01" in index.read_text() and "owl/scan01" in
                    index.read_text(), 60, "the report of both projects")
    for project in ("report", "owl"):
        ours = shipped_by_the_firmware(rig.hot / project) - {"openscan_project.json", "scan01/scan.json"}
        assert ours == {"scan01/stacked/stacked_scan01_000.jpg", "scan01/stacked/stacked_scan01_001.jpg"}, ours
        assert record_of(rig, project, 1, 0).is_file()
        assert record_of(rig, project, 1, 0).with_name("stacked_scan01_000.depth.png").is_file()
    assert (rig.hot / ".focus-watcher" / "report" / "report" / "scan01" / "stacked_scan01_000.thumb.jpg").is_file()
    assert 'href=".focus-watcher/report/report/scan01/index.html"' in index.read_text()
    assert (rig.hot / ".focus-watcher" / "pid").read_text() == f"{daemon.pid}\n"
    assert sorted(p.name for p in rig.hot.iterdir()) == [".focus-watcher", "focus-watcher.log", "index.html",
                                                         "owl", "report"]
    assert daemon.terminate() == 0


def test_results_of_openscan3_frames_carry_the_camera_data_meshers_need_unless_turned_off(rig, frames):
    """OpenScan3's frames carry only Model: an IMX519 stack's result gains Make, FocalLength, the 35 mm value for
    its 320 x 240 crop and the focal-plane resolution, and its record says so; an unknown camera gets nothing,
    with the reason; with ``stacking.camera.fill_exif = false`` the result keeps the frame's EXIF as it was."""
    imx519 = [with_exif(frame, openscan3_exif("imx519")) for frame in frames.stack(3)]
    unknown = [with_exif(frame, openscan3_exif("ov64a40")) for frame in frames.stack(3)]
    daemon = rig.start(openscan_config(rig))
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {0: imx519, 1: unknown})
    for stack in stacks:
        daemon.wait_event("stack.done", stack=stack, timeout=30)
    assert daemon.terminate() == 0
    stacked = rig.hot / "owl" / "scan01" / "stacked"
    record = json.loads(record_of(rig, "owl", 1, 0).read_text())["camera_exif"]
    with Image.open(stacked / "stacked_scan01_000.jpg") as image:
        exif = image.getexif()
        focal = exif.get_ifd(0x8769)
    assert (exif[0x010F], exif[0x0110]) == ("Arducam", "imx519")
    assert (float(focal[0x920A]), focal[0xA405], round(float(focal[0xA20E]), 2)) == (4.28, 379, 8196.72)
    assert record == {"model": "imx519", "source": "table", "kept": [], "notes": [], "added": {
        "Make": "Arducam", "FocalLength": 4.28, "FocalLengthIn35mmFilm": 379, "FocalPlaneXResolution": 8196.7213,
        "FocalPlaneYResolution": 8196.7213, "FocalPlaneResolutionUnit": 3}}
    record = json.loads(record_of(rig, "owl", 1, 1).read_text())["camera_exif"]
    assert record["added"] == {} and "ov64a40 is not in the table" in record["notes"][0]

    daemon = rig.start(rig.config(results_folder=rig.hot, results={"layout": "openscan"},
                                  stacking={"camera": {"fill_exif": False}}))
    [stack] = write_openscan3_stacks(rig.hot, "owl", 2, {0: imx519})
    daemon.wait_event("stack.done", stack=stack, timeout=30)
    assert daemon.terminate() == 0
    stacked = rig.hot / "owl" / "scan02" / "stacked"
    record = json.loads(record_of(rig, "owl", 2, 0).read_text())["camera_exif"]
    assert record["added"] == {} and record["notes"] == ["off (stacking.camera.fill_exif = false)"]
    with Image.open(stacked / "stacked_scan02_000.jpg") as image:
        exif = image.getexif()
        assert exif[0x0110] == "imx519" and 0x010F not in exif and 0x920A not in exif.get_ifd(0x8769)


def test_a_symlinked_stacked_folder_is_never_written_through(rig, frames):
    """``stacked`` as a link to elsewhere would redirect our writes: the stack waits (results.unsafe, with a
    backoff) and nothing is written there; once the link is gone the stack is stacked into a real folder."""
    elsewhere = rig.root / "elsewhere"
    elsewhere.mkdir()
    (rig.hot / "owl" / "scan01").mkdir(parents=True)
    (rig.hot / "owl" / "scan01" / "stacked").symlink_to(elsewhere, target_is_directory=True)
    daemon = rig.start(openscan_config(rig))
    [stack] = write_openscan3_stacks(rig.hot, "owl", 1, {3: frames.stack(3)})
    unsafe = daemon.wait_event("results.unsafe", stack=stack)[0]
    assert "symbolic link" in unsafe["error"]
    assert list(elsewhere.iterdir()) == []
    (rig.hot / "owl" / "scan01" / "stacked").unlink()
    daemon.wait_event("stack.done", stack=stack, timeout=20)
    assert (rig.hot / "owl" / "scan01" / "stacked" / "stacked_scan01_003.jpg").is_file()
    assert list(elsewhere.iterdir()) == [] and daemon.events("stack.failed") == []
    assert daemon.terminate() == 0


def test_records_an_earlier_build_kept_in_stacked_count_where_they_are_and_move_out_at_start(rig, frames):
    """Earlier builds kept openscan records in ``stacked/``. After the upgrade no stack is stacked again: such a
    record counts, and the daemon moves it to its place when it starts (a rename), also the record of a stack
    whose photos were deleted meanwhile (OpenScan3's "delete photos"), which no walk finds again."""
    daemon = rig.start(openscan_config(rig))
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.stack(3), 1: frames.stack(3, offset=2)},
                                    status="completed")
    wait_stacked(daemon, stacks)
    assert daemon.terminate() == 0
    stacked = rig.hot / "owl" / "scan01" / "stacked"
    before = {}
    for position in (0, 1):  # where an earlier build wrote them
        record = record_of(rig, "owl", 1, position)
        before[position] = record.read_bytes()
        record.rename(stacked / record.name)
    for k in range(3):
        (rig.hot / "owl" / "scan01" / f"scan01_001_fs{k:02d}.jpg").unlink()

    daemon = rig.start(openscan_config(rig), wait_ready=False)
    start = daemon.wait_event("daemon.start")[0]
    assert start["records_moved"] == 2, start
    assert sorted(os.listdir(stacked)) == ["stacked_scan01_000.jpg", "stacked_scan01_001.jpg"]
    for position in (0, 1):
        assert record_of(rig, "owl", 1, position).read_bytes() == before[position]
    status = json.loads(rig.cli("status", "--json", config=openscan_config(rig)).stdout)
    assert (status["done"], status["pending"]) == (2, 0), status
    [later] = write_openscan3_stacks(rig.hot, "owl", 2, {0: frames.stack(3)}, status="completed")
    wait_stacked(daemon, [later])  # it has looked at the whole folder by now: nothing else was stacked
    assert {e["stack"] for e in daemon.events("stack.started")} == {later}
    assert daemon.terminate() == 0


def test_a_deleted_project_takes_its_records_and_its_report_with_it(rig, frames):
    """Records and thumbnails live apart from the project now, so they must not outlive it: when OpenScan3
    deletes a project, its records, depth maps and thumbnails go, and the report drops it; a project deleted
    while the daemon was stopped is tidied when it starts."""
    config = rig.config(results_folder=rig.hot, results={"layout": "openscan"}, stacking={"depthmap": True})
    daemon = rig.start(config)
    owl = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.stack(3)}, status="completed")
    cat = write_openscan3_stacks(rig.hot, "cat", 1, {0: frames.stack(3)}, status="completed")
    wait_stacked(daemon, owl + cat)
    ours = rig.hot / ".focus-watcher"
    index = rig.hot / "index.html"
    daemon.wait_for(lambda: index.is_file() and "owl/scan01" in index.read_text(), 60, "the report of owl")
    shutil.rmtree(rig.hot / "owl")
    daemon.wait_event("record.forgotten", stack=owl[0], timeout=20)
    assert not (ours / "stacks" / "owl").exists()
    assert not below(ours / "report" / "owl", "*.thumb.*")
    daemon.wait_for(lambda: "owl/scan01" not in index.read_text(), 60, "the report without owl")
    assert record_of(rig, "cat", 1, 0).is_file()
    assert daemon.terminate() == 0

    shutil.rmtree(rig.hot / "cat")
    daemon = rig.start(config)
    assert daemon.events("daemon.start")[0]["record_folders_forgotten"] == 1
    assert not (ours / "stacks" / "cat").exists()
    daemon.wait_for(lambda: "cat/scan01" not in index.read_text(), 60, "the report without cat")
    assert not (ours / "report" / "cat").exists()  # pages and thumbnails gone, so its folders could go
    assert daemon.terminate() == 0


def test_a_fifo_in_place_of_scan_json_does_not_hang_the_loop(rig, frames):
    """A FIFO named scan.json blocked the main loop in open() forever; now it is refused after opening, and the
    scan is stacked without its scan.json."""
    daemon = rig.start(rig.config(naming={"stack_size": 3}))
    folder = rig.hot / "owl" / "scan01"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "scan.json")
    stacks = write_openscan3_stacks(rig.hot, "owl", 2, {1: frames.stack(3)})
    for k in range(3):
        write_frame(folder / openscan3_name(1, 4, k), frames.small[k])
    stacks.append(openscan3_stack("owl", 1, 4))
    daemon.wait_for(lambda: rig.ok_records(stacks), 15, "both stacks")
    assert daemon.terminate() == 0


@pytest.fixture
def shared_rig(request):
    """A rig under a folder every user may traverse (pytest's tmp folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="focus-watcher-e2e-", dir="/tmp"))
    root.chmod(0o755)
    rig = Rig(root)
    rig.hot.mkdir()
    yield rig
    for daemon in rig.daemons:
        daemon.kill_group()
    if getattr(request.node, "e2e_failed", False):
        for daemon in rig.daemons:
            print(daemon.tail(60))
    shutil.rmtree(root, ignore_errors=True)


def as_firmware(*command: str) -> subprocess.CompletedProcess:
    """Run a system command as the firmware's user, in the rig's group only."""
    return subprocess.run(["setpriv", f"--reuid={FIRMWARE_UID}", f"--regid={RIG_GID}", "--clear-groups", *command],
                          capture_output=True, text=True, check=False, timeout=30)


def test_the_firmware_user_can_read_and_delete_what_we_write_under_the_units_umask(shared_rig, frames):
    """The unit's UMask=0027 made our stacked/ folders drwxr-x--- in our own group: OpenScan3 (another user in
    the rig's group) could no longer list, upload or delete its scan. A stacked/ (or masks/) folder we create
    takes the scan folder's group, group rwx and setgid; our files are group-readable. Checked as that other user
    (as root: the daemon runs without capabilities in the rig's group, as the service user would)."""
    rig = shared_rig
    scan = rig.hot / "owl" / "scan01"
    scan.mkdir(parents=True)
    as_root = os.geteuid() == 0
    if as_root:
        for path in (rig.hot / "owl", scan):
            os.chown(path, FIRMWARE_UID, RIG_GID)
            path.chmod(0o2775)  # OpenScan's projects, group-writable for the rig's group (setgid)
        prefix = ["setpriv", f"--groups={RIG_GID}", "--inh-caps=-all", "--bounding-set=-all"]
    else:
        prefix = []
    daemon = rig.start(openscan_config(rig, masks=["meshroom"]), prefix=prefix, umask=0o027)
    [stack] = write_openscan3_stacks(rig.hot, "owl", 1, {7: frames.stack(3)})
    daemon.wait_event("stack.done", stack=stack)
    stacked, masks = scan / "stacked", scan / "masks"
    image, mask = stacked / "stacked_scan01_007.jpg", masks / "stacked_scan01_007.png"
    assert os.listdir(stacked) == [image.name]  # the record is kept apart, in focus-watcher's own folder
    for folder, file in ((stacked, image), (masks, mask)):
        info = folder.stat()
        assert info.st_gid == scan.stat().st_gid and info.st_mode & 0o2070 == 0o2070, oct(info.st_mode)
        assert file.stat().st_gid == scan.stat().st_gid and file.stat().st_mode & 0o040, oct(file.stat().st_mode)
    assert daemon.terminate() == 0
    if not as_root:
        return  # another user's view needs root to take it
    listing = as_firmware("ls", str(stacked))
    assert listing.returncode == 0 and image.name in listing.stdout, listing
    assert as_firmware("cmp", str(image), str(image)).returncode == 0  # read it
    removed = as_firmware("rm", str(image))
    assert removed.returncode == 0, removed
    assert as_firmware("rmdir", str(stacked)).returncode == 0
    assert as_firmware("rm", "-r", str(masks)).returncode == 0  # deleting a scan deletes its masks
    assert not stacked.exists() and not masks.exists()
    assert stat.S_IMODE(scan.stat().st_mode) == 0o2775  # the scan folder itself is untouched

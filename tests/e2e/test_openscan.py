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

from tests.e2e.conftest import (
    Rig,
    openscan3_name,
    openscan3_stack,
    write_frame,
    write_openscan3_stacks,
    write_scan_json,
)

FIRMWARE_UID, RIG_GID = 54321, 54320  # the firmware's user and the rig's group (no names needed)


def openscan_config(rig: Rig, **results) -> Path:
    return rig.config(results_folder=rig.hot, results={"layout": "openscan", **results})


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
    record_path = rig.hot / "owl" / "scan01" / "stacked" / "stacked_scan01_005.json"
    record = json.loads(record_path.read_text())
    assert any("cloud upload" in w for w in record["warnings"]) and record["outputs"] == [], record
    assert not (rig.hot / "owl" / "scan01" / "stacked" / "stacked_scan01_005.jpg").exists()
    assert daemon.terminate() == 0

    daemon = rig.start(openscan_config(rig, on_failure="sharpest_frame"))
    [second] = write_openscan3_stacks(rig.hot, "owl", 2, {5: bad})
    failed = daemon.wait_event("stack.failed", stack=second)[0]
    image = rig.hot / "owl" / "scan02" / "stacked" / "stacked_scan02_005.jpg"
    record = json.loads(image.with_suffix(".json").read_text())
    assert record["status"] == "failed" and record["fallback"]["frame"] == failed["fallback"], record
    assert image.read_bytes() == bad[record["fallback"]["index"]]
    assert record["outputs"] == [{"path": "owl/scan02/stacked/stacked_scan02_005.jpg", "bytes": image.stat().st_size}]
    assert daemon.terminate() == 0


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
    the rig's group) could no longer list, upload or delete its scan. A stacked/ folder we create takes the scan
    folder's group, group rwx and setgid; our files are group-readable. Checked as that other user (as root:
    the daemon runs without capabilities in the rig's group, as the service user would)."""
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
    daemon = rig.start(openscan_config(rig), prefix=prefix, umask=0o027)
    [stack] = write_openscan3_stacks(rig.hot, "owl", 1, {7: frames.stack(3)})
    daemon.wait_event("stack.done", stack=stack)
    stacked = scan / "stacked"
    image, record = stacked / "stacked_scan01_007.jpg", stacked / "stacked_scan01_007.json"
    info = stacked.stat()
    assert info.st_gid == scan.stat().st_gid and info.st_mode & 0o2070 == 0o2070, oct(info.st_mode)
    assert image.stat().st_gid == scan.stat().st_gid and image.stat().st_mode & 0o040, oct(image.stat().st_mode)
    assert daemon.terminate() == 0
    if not as_root:
        return  # another user's view needs root to take it
    listing = as_firmware("ls", str(stacked))
    assert listing.returncode == 0 and image.name in listing.stdout, listing
    assert as_firmware("cmp", str(image), str(image)).returncode == 0  # read it
    removed = as_firmware("rm", str(image), str(record))
    assert removed.returncode == 0, removed
    assert as_firmware("rmdir", str(stacked)).returncode == 0
    assert not stacked.exists()
    assert stat.S_IMODE(scan.stat().st_mode) == 0o2775  # the scan folder itself is untouched

"""``focus-watcher doctor`` on deliberately broken setups: real temp folders, fake /proc and /sys trees, and a
fake ``vcgencmd`` on PATH."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest

from watcher.config import load_settings
from watcher.doctor import FAIL, OK, SKIP, WARN, Finding, Host, print_report, run_checks
from watcher.stacking.peak_memory import estimate_peak_bytes

IMX519 = (4656, 3496)  # the 16 MP camera of OpenScan rigs
GIB = 1 << 30


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG as far as its header goes: SOI, a baseline frame header (3 components), EOI."""
    frame_header = struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8\xff\xc0" + frame_header + b"\xff\xd9"


def write_frames(folder: Path, scan: str = "scan01", count: int = 3, size: tuple[int, int] = IMX519) -> None:
    (folder / scan).mkdir(parents=True, exist_ok=True)
    for k in range(count):
        (folder / scan / f"{scan}_000_fs{k:02d}.jpg").write_bytes(jpeg_header(*size))


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A healthy Pi 4 with 4 GiB: /proc and /sys trees, and a vcgencmd reporting no throttling."""
    root = tmp_path / "machine"
    files = {
        "proc/meminfo": "MemTotal:        4096000 kB\nMemFree:     2000000 kB\nMemAvailable:    3000000 kB\n",
        "proc/mounts": "/dev/mmcblk0p2 / ext4 rw,noatime 0 0\nproc /proc proc rw 0 0\n",
        "proc/sys/fs/inotify/max_user_watches": "65536\n",
        "sys/class/thermal/thermal_zone0/temp": "45000\n",
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        "bin/vcgencmd": '#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x0\n',
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "bin/vcgencmd").chmod(0o755)
    return root


def host_of(fake: Path, **changes) -> Host:
    return Host(**{"proc": fake / "proc", "sys": fake / "sys", "vcgencmd": str(fake / "bin/vcgencmd"),
                   "cpu_count": 4, **changes})


def settings_for(tmp_path: Path, **overrides):
    values = {"hot_folder": tmp_path / "hot", "results_folder": tmp_path / "results",
              "workers": {"count": 2, "memory_budget_mb": 2048}}
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    return load_settings(None, values)


def check(findings: list[Finding], name: str) -> Finding:
    return next(f for f in findings if f.name == name)


def test_healthy_setup_reports_no_fail(tmp_path, fake):
    write_frames(tmp_path / "hot")
    (tmp_path / "results").mkdir()
    findings = run_checks(settings_for(tmp_path), host_of(fake))
    out = io.StringIO()
    assert print_report(findings, out) == 0
    # Free disk depends on the machine running the tests; everything else must be ok, none merely skipped.
    unused = ("free disk", "archive folder", "cluster")
    assert {f.name: f.status for f in findings if f.name not in unused} == {
        f.name: OK for f in findings if f.name not in unused}
    assert check(findings, "cluster").status == SKIP
    disk = check(findings, "free disk")
    assert disk.status in (OK, WARN)
    assert "4656x3496" in check(findings, "stack memory").detail
    assert "0 FAIL" in out.getvalue() and out.getvalue().count("fix:") == (disk.status == WARN)


@pytest.mark.parametrize("how", ["read_only_mode", "sysfs_folder", "parent_is_a_file"])
def test_unwritable_results_folder(tmp_path, fake, how):
    """Mode 0o500 stops everyone but root, who writes through it. Two refusals that hold for root as well,
    without mounts or privileges: sysfs takes no new files (EACCES, or EROFS where it is mounted read-only),
    and a path through a regular file cannot be created by anyone (ENOTDIR)."""
    write_frames(tmp_path / "hot")
    if how == "read_only_mode":
        if os.geteuid() == 0:
            pytest.skip("root writes through mode 0o500 (the other cases fail for root too)")
        results = tmp_path / "results"
        results.mkdir(mode=0o500)
    elif how == "sysfs_folder":
        results = Path("/sys/kernel")
        if not results.is_dir():
            pytest.skip("no sysfs here")
    else:
        (tmp_path / "blocker").write_text("not a folder")
        results = tmp_path / "blocker" / "results"
    try:
        findings = run_checks(settings_for(tmp_path, results_folder=results), host_of(fake))
    finally:
        if how == "read_only_mode":
            results.chmod(0o700)  # so that pytest can remove tmp_path
    finding = check(findings, "results folder")
    assert finding.status == FAIL and str(results) in finding.detail
    if how == "parent_is_a_file":
        assert "is a file" in finding.detail and "set results_folder" in finding.fix
    else:
        assert "cannot write" in finding.detail and f"sudo mkdir -p {results}" in finding.fix
    assert print_report(findings, io.StringIO()) == 1
    assert not list(tmp_path.rglob(".focus-watcher-doctor-*")), "the write test must clean up"


def test_missing_results_folder_that_can_be_created_is_ok(tmp_path, fake):
    findings = run_checks(settings_for(tmp_path, results_folder=tmp_path / "new" / "results"), host_of(fake))
    finding = check(findings, "results folder")
    assert finding.status == OK and "does not exist yet" in finding.detail


def test_unwritable_archive_folder(tmp_path, fake):
    write_frames(tmp_path / "hot")
    (tmp_path / "blocker").write_text("")
    settings = settings_for(tmp_path, results={"after_success": "archive", "archive_folder": tmp_path / "blocker/a"})
    findings = run_checks(settings, host_of(fake))
    assert check(findings, "archive folder").status == FAIL
    assert "readable and writable" in check(findings, "hot folder").detail  # archiving moves inputs away


def test_read_only_hot_folder_with_delete_after_success(tmp_path, fake):
    if os.geteuid() == 0:
        pytest.skip("root writes through mode 0o500")
    write_frames(tmp_path / "hot")
    (tmp_path / "hot").chmod(0o500)
    try:
        findings = run_checks(settings_for(tmp_path, results={"after_success": "delete"}), host_of(fake))
    finally:
        (tmp_path / "hot").chmod(0o700)
    finding = check(findings, "hot folder")
    assert finding.status == FAIL and "results.after_success = delete" in finding.detail
    assert "ReadWritePaths=" in finding.fix


def test_missing_hot_folder(tmp_path, fake):
    findings = run_checks(settings_for(tmp_path), host_of(fake))
    finding = check(findings, "hot folder")
    assert finding.status == FAIL and "does not exist" in finding.detail
    assert f"mkdir -p {tmp_path / 'hot'}" in finding.fix
    assert check(findings, "stack memory").status == SKIP
    assert print_report(findings, io.StringIO()) == 1


def test_results_inside_hot_folder(tmp_path, fake):
    write_frames(tmp_path / "hot")
    # The settings model refuses this combination; a copy skips validation, as a hand-built Settings could.
    settings = settings_for(tmp_path).model_copy(update={"results_folder": tmp_path / "hot" / "out"})
    assert check(run_checks(settings, host_of(fake)), "results placement").status == FAIL
    openscan = settings.model_copy(update={"results": settings.results.model_copy(update={"layout": "openscan"})})
    findings = run_checks(openscan, host_of(fake))
    assert check(findings, "results placement").status == OK
    assert "writable" in check(findings, "hot folder").detail
    # Frames are still found: excluding a results folder inside the hot folder must not hide the scans.
    assert "4656x3496" in check(findings, "stack memory").detail


def test_tiny_memory_budget_fails_naming_the_setting(tmp_path, fake):
    write_frames(tmp_path / "hot")
    settings = settings_for(tmp_path, workers={"memory_budget_mb": 64})
    finding = check(run_checks(settings, host_of(fake)), "stack memory")
    need_mb = estimate_peak_bytes(*IMX519, 8, settings.stacking) // (1 << 20) + 1
    assert finding.status == FAIL
    assert "workers.memory_budget_mb = 64" in finding.detail and "refuses" in finding.detail
    assert f"workers.memory_budget_mb = {need_mb}" in finding.fix
    assert "stacking.blend" not in finding.fix  # no blend fits in 64 MiB: none is suggested


def test_a_cheaper_blend_that_fits_is_suggested(tmp_path, fake):
    write_frames(tmp_path / "hot")
    settings = settings_for(tmp_path, workers={"count": 1, "memory_budget_mb": 700},  # 16 MP: ~1330 MiB
                            stacking={"blend": "laplacian_pyramid"})
    finding = check(run_checks(settings, host_of(fake)), "stack memory")
    assert finding.status == FAIL and 'stacking.blend = "weighted" (~474 MiB)' in finding.fix


def test_a_stack_that_fits_alone_but_not_workers_count_times_warns(tmp_path, fake):
    write_frames(tmp_path / "hot")
    settings = settings_for(tmp_path, workers={"count": 3, "memory_budget_mb": 800})  # one 16 MP stack: ~474 MiB
    finding = check(run_checks(settings, host_of(fake)), "stack memory")
    assert finding.status == WARN and "runs 1 at a time" in finding.detail
    assert "workers.count = 1" in finding.fix


def test_frames_in_an_openscan2_zip_are_sized(tmp_path, fake):
    (tmp_path / "hot").mkdir()
    with zipfile.ZipFile(tmp_path / "hot" / "2024-05-01_10.00.00-owl.zip", "w") as archive:
        archive.writestr("owl_1-0.jpg", jpeg_header(9152, 6944))
    settings = settings_for(tmp_path, workers={"memory_budget_mb": 1000})  # one 64 MP stack: ~1043 MiB
    finding = check(run_checks(settings, host_of(fake)), "stack memory")
    assert finding.status == FAIL and "9152x6944" in finding.detail


def test_oversized_frames_fail_on_max_megapixels(tmp_path, fake):
    write_frames(tmp_path / "hot")
    settings = settings_for(tmp_path, stacking={"max_megapixels": 10})
    finding = check(run_checks(settings, host_of(fake)), "stack memory")
    assert finding.status == FAIL and "stacking.max_megapixels = 17" in finding.fix


def test_memory_budget_over_ram(tmp_path, fake):
    settings = settings_for(tmp_path, workers={"memory_budget_mb": 8192})  # the fake Pi has ~3.9 GiB
    finding = check(run_checks(settings, host_of(fake)), "memory budget")
    assert finding.status == FAIL and "workers.memory_budget_mb = 2800" in finding.fix


def test_inotify_limit_below_the_folder_count(tmp_path, fake):
    for scan in range(5):
        (tmp_path / "hot" / f"scan{scan:02d}" / "metadata").mkdir(parents=True)  # 1 + 5 + 5 = 11 folders
    limits = {"8": FAIL, "13": WARN, "14": OK}  # warn above 80 % of the limit
    for limit, status in limits.items():
        (fake / "proc/sys/fs/inotify/max_user_watches").write_text(limit)
        finding = check(run_checks(settings_for(tmp_path), host_of(fake)), "inotify watches")
        assert (finding.status, finding.detail.split()[0]) == (status, "11"), limit
    polling = settings_for(tmp_path, observer={"mode": "polling"})
    assert check(run_checks(polling, host_of(fake)), "inotify watches").status == SKIP


def test_inotify_fix_gives_the_sysctl_command(tmp_path, fake):
    (tmp_path / "hot" / "a").mkdir(parents=True)
    (fake / "proc/sys/fs/inotify/max_user_watches").write_text("1")
    finding = check(run_checks(settings_for(tmp_path), host_of(fake)), "inotify watches")
    assert finding.status == FAIL and "sudo sysctl fs.inotify.max_user_watches=524288" in finding.fix


def mount_line(device: str, point: Path, fstype: str) -> str:
    return f"{device} {str(point).replace(' ', chr(92) + '040')} {fstype} rw 0 0\n"  # /proc/mounts: space is \040


@pytest.mark.parametrize("fstype", ["cifs", "nfs4", "fuse.sshfs"])
def test_hot_folder_on_a_network_share(tmp_path, fake, fstype):
    share = tmp_path / "my share"
    write_frames(share / "hot")
    (fake / "proc/mounts").write_text(mount_line("/dev/root", Path("/"), "ext4") + mount_line("nas:/scans", share,
                                                                                             fstype))
    settings = settings_for(tmp_path, hot_folder=share / "hot")
    finding = check(run_checks(settings, host_of(fake)), "hot filesystem")
    assert finding.status == WARN and fstype in finding.detail and 'observer.mode = "polling"' in finding.fix
    polling = settings_for(tmp_path, hot_folder=share / "hot", observer={"mode": "polling"})
    assert check(run_checks(polling, host_of(fake)), "hot filesystem").status == OK
    # A local disk mounted below the share holds the hot folder; a share mounted over both later hides it again.
    with (fake / "proc/mounts").open("a") as mounts:
        mounts.write(mount_line("/dev/sda1", share / "hot", "ext4"))
    assert check(run_checks(settings, host_of(fake)), "hot filesystem").status == OK
    with (fake / "proc/mounts").open("a") as mounts:
        mounts.write(mount_line("nas:/other", share, fstype))
    assert check(run_checks(settings, host_of(fake)), "hot filesystem").status == WARN


@pytest.mark.parametrize(("millidegrees", "status"), [("82000", FAIL), ("76500", WARN), ("60000", OK)])
def test_cpu_temperature(tmp_path, fake, millidegrees, status):
    (fake / "sys/class/thermal/thermal_zone1").mkdir()
    (fake / "sys/class/thermal/thermal_zone1/temp").write_text(millidegrees)  # the hottest zone counts
    finding = check(run_checks(settings_for(tmp_path), host_of(fake)), "temperature")
    assert finding.status == status
    assert finding.status == OK or "fan" in finding.fix


@pytest.mark.parametrize(("value", "status"),
                         [("0x50005", FAIL), ("0x50000", WARN), ("0x80000", WARN), ("0x10000", WARN), ("0x0", OK)])
def test_throttled_bits_from_vcgencmd_on_path(tmp_path, fake, monkeypatch, value, status):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vcgencmd").write_text(f'#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled={value}\n')
    (bin_dir / "vcgencmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    finding = check(run_checks(settings_for(tmp_path), host_of(fake, vcgencmd="vcgencmd")), "power/throttling")
    assert finding.status == status
    if value == "0x50005":
        assert "now: under-voltage, throttled; since boot: under-voltage, throttled" in finding.detail
        assert "5 V/3 A" in finding.fix and "fan" in finding.fix
    if value == "0x80000":
        assert "soft temperature limit" in finding.detail and "5 V" not in finding.fix and "fan" in finding.fix
    if value == "0x10000":
        assert "since boot: under-voltage" in finding.detail and "5 V/5 A" in finding.fix and "fan" not in finding.fix


def test_not_a_pi_skips_heat_and_power(tmp_path, fake):
    host = host_of(fake, sys=tmp_path / "empty-sys", vcgencmd="focus-watcher-no-such-vcgencmd")
    findings = run_checks(settings_for(tmp_path), host)
    assert [check(findings, n).status for n in ("temperature", "power/throttling", "memory cgroup")] == [SKIP] * 3


def test_memory_cgroup_disabled(tmp_path, fake):
    (fake / "sys/fs/cgroup/cgroup.controllers").write_text("cpuset cpu io pids\n")
    finding = check(run_checks(settings_for(tmp_path), host_of(fake)), "memory cgroup")
    assert finding.status == WARN and "MemoryMax=" in finding.detail
    assert "cgroup_enable=memory" in finding.fix and "/boot/firmware/cmdline.txt" in finding.fix


def test_more_workers_than_cores(tmp_path, fake):
    finding = check(run_checks(settings_for(tmp_path, workers={"count": 6}), host_of(fake)), "workers")
    assert finding.status == WARN and "workers.count = 3" in finding.fix


@pytest.mark.parametrize(("free", "status"), [(50 << 20, FAIL), (1 * GIB, WARN), (20 * GIB, OK)])
def test_free_disk(tmp_path, fake, monkeypatch, free, status):
    write_frames(tmp_path / "hot", count=1)
    with open(next((tmp_path / "hot").rglob("*.jpg")), "r+b") as frame:
        frame.truncate(8 << 20)  # an 8 MiB frame (sparse): ~12 MiB per result, 100 results need ~1.2 GiB
    real = os.statvfs(tmp_path)
    fields = list(real)
    fields[4] = free // real.f_frsize  # f_bavail
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(fields))
    finding = check(run_checks(settings_for(tmp_path), host_of(fake)), "free disk")
    assert finding.status == status and "12.0 MiB per result" in finding.detail


def test_print_report_shows_fixes_and_exit_status():
    findings = [Finding("a", OK, "fine", "never shown"), Finding("b", WARN, "hm", "do this")]
    out = io.StringIO()
    assert print_report(findings, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ok", "a", "fine"] and lines[2].split() == ["fix:", "do", "this"]
    assert lines[-1] == "1 ok, 1 warn, 0 FAIL, 0 skip"
    assert print_report([*findings, Finding("c", FAIL, "broken", "mend")], io.StringIO()) == 1

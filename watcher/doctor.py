"""``focus-watcher doctor``: check the setup on the device, one line per check, with the fix for each problem.

Each check is a small function returning a :class:`Finding`. Nothing is changed, except a temp file created
and deleted to prove that a folder is writable (only an attempt tells: permissions, ACLs, read-only mounts and
full disks all say no in different ways). Where the checks look for /proc, /sys and ``vcgencmd`` comes from a
:class:`Host`, so tests point them at fake trees. The checks run as whoever runs ``doctor``, outside the
service's sandbox: fixes say where the unit's own settings (``ReadWritePaths=``) matter too.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, get_args

from watcher.config import BlendMethod, Settings, StackingSettings
from watcher.service.archive import ArchiveRefused
from watcher.service.observer import Found, HotFolder, excluded_results
from watcher.stacking.peak_memory import estimate_peak_bytes
from watcher.stacking.probe import ImageInfo
from watcher.stacking.sources import FrameError, FrameSource, FrameUnavailable, read_header

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MIB, GIB = 1 << 20, 1 << 30
_NETWORK_FS = {"cifs", "smb3", "smbfs", "nfs", "nfs4", "sshfs", "ceph", "9p"}
# vcgencmd get_throttled: bits 0-3 are true now; bits 16-19 the same conditions, "has occurred since boot".
_THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}
_SINCE_BOOT, _UNDER_VOLTAGE, _HEAT = 16, 0x10001, 0xE000E
_RELOAD = "(systemctl edit focus-watcher for the unit, then systemctl restart focus-watcher)"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    name: str  # e.g. "results folder"
    status: str  # ok | warn | FAIL | skip (does not apply to this machine or these settings)
    detail: str  # what was found, with the values and settings involved
    fix: str = ""  # for warn/FAIL: what to do, a command or a setting to change


@dataclass(frozen=True)
class Host:
    """Where the machine is read from: the real one by default, fake trees in tests."""

    proc: Path = Path("/proc")  # meminfo, mounts, sys/fs/inotify
    sys: Path = Path("/sys")  # class/thermal, fs/cgroup
    vcgencmd: str = "vcgencmd"  # the Pi firmware tool: a name looked up on PATH, or a path
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass(frozen=True)
class FrameSample:
    """A frame found in the hot folder, sized from its header."""

    where: str  # path, or "archive.zip:member"
    info: ImageInfo  # size and bit depth
    file_size: int


def run_checks(settings: Settings, host: Host | None = None) -> list[Finding]:
    """Run every check against ``settings`` on ``host`` (default: this machine), in the order of the report.

    With ``workers.executor = "dask"``, the cluster's checks (:mod:`watcher.doctor_cluster`) replace those of the
    local workers: what this machine's memory budget holds does not matter then."""
    host, frames = host or Host(), sample_frames(settings)
    findings = [check_hot_folder(settings), check_results_folder(settings), check_archive_folder(settings),
                check_results_placement(settings), check_inotify_watches(settings, host),
                check_filesystem(settings, host), check_disk(settings, frames)]
    if settings.workers.executor == "dask":
        local = 'workers.executor = "dask": the cluster\'s workers stack (cluster memory, below)'
        findings += [Finding(name, SKIP, local) for name in ("memory budget", "stack memory", "workers")]
        findings += check_cluster(settings, frames)
    else:
        findings += [check_ram(settings, host), check_stack_memory(settings, frames), check_workers(settings, host),
                     Finding("cluster", SKIP, 'workers.executor = "local": no cluster')]
    return [*findings, check_memory_cgroup(host), check_temperature(host), check_throttling(host)]


def check_cluster(settings: Settings, frames: list[FrameSample]) -> list[Finding]:
    """The Dask cluster's checks; one FAIL without Dask installed (an optional extra)."""
    try:
        from watcher.doctor_cluster import check_cluster as check
    except ImportError as exc:
        return [Finding("cluster", FAIL, f'workers.executor = "dask" needs Dask distributed ({exc})',
                        'pip install "focus-watcher[dask]"')]
    return check(settings, frames)


def print_report(findings: list[Finding], file: TextIO | None = None) -> int:
    """Print one line per finding (its fix below it for warn/FAIL) and a count per status to ``file`` (default
    stdout); return the exit status: 1 if any check failed, else 0."""
    out = file or sys.stdout
    width = max((len(f.name) for f in findings), default=0)
    for finding in findings:
        print(f"{finding.status:<4}  {finding.name:<{width}}  {finding.detail}", file=out)
        if finding.fix and finding.status in (WARN, FAIL):
            print(f"{'':<4}  {'':<{width}}  fix: {finding.fix}", file=out)
    counts = collections.Counter(f.status for f in findings)
    print(", ".join(f"{counts[s]} {s}" for s in (OK, WARN, FAIL, SKIP)), file=out)
    return 1 if counts[FAIL] else 0


def check_hot_folder(settings: Settings) -> Finding:
    """Exists and is readable; writable too when inputs are moved/deleted or openscan results go inside it."""
    name, hot = "hot folder", settings.hot_folder.resolve()
    if not hot.is_dir():
        what = "is not a folder" if hot.exists() else "does not exist"
        return Finding(name, FAIL, f"{hot} {what}", "set hot_folder to the scanner's capture folder (OpenScan3: "
                       f"/var/openscan3/projects, OpenScan2: /home/pi/OpenScan/scans), or create it: mkdir -p {hot}")
    try:
        with os.scandir(hot) as entries:
            next(entries, None)
    except OSError as exc:
        return Finding(name, FAIL, f"{hot}: cannot read it ({exc.strerror})",
                       f"make it readable by the service user: chmod -R g+rX {hot}, with the user in its group "
                       "(SupplementaryGroups= in the unit)")
    writes = []
    if settings.results.after_success != "keep":
        writes.append(f"results.after_success = {settings.results.after_success}")
    if settings.results.layout == "openscan" and _inside(settings.results_folder.resolve(), hot):
        writes.append("results.layout = openscan with the results inside it")
    if writes:
        error = _write_error(hot)
        if error:
            return Finding(name, FAIL, f"{hot}: readable, but not writable ({error}), needed by {' and '.join(writes)}",
                           f"chmod -R g+w {hot} for the service user's group, and add it to ReadWritePaths= {_RELOAD}")
        return Finding(name, OK, f"{hot}: readable and writable ({' and '.join(writes)})")
    return Finding(name, OK, f"{hot}: readable")


def check_results_folder(settings: Settings) -> Finding:
    """Exists and takes a file, or can be created."""
    return _writable_folder("results folder", settings.results_folder.resolve(), "results_folder")


def check_archive_folder(settings: Settings) -> Finding:
    """With ``results.after_success = archive``: the archive folder exists and takes a file, or can be created."""
    archive = settings.results.archive_folder
    if settings.results.after_success != "archive" or archive is None:
        return Finding("archive folder", SKIP, f"not used (results.after_success = {settings.results.after_success})")
    return _writable_folder("archive folder", archive.resolve(), "results.archive_folder")


def check_results_placement(settings: Settings) -> Finding:
    """Results inside the hot folder would be picked up as new frames, except in openscan's never-watched folders."""
    name, hot, results = "results placement", settings.hot_folder.resolve(), settings.results_folder.resolve()
    if not _inside(results, hot):
        return Finding(name, OK, "results folder is outside the hot folder")
    if settings.results.layout == "openscan":
        return Finding(name, OK, "results go into the scans' stacked/ folders, which are never watched")
    return Finding(name, FAIL, f"results folder {results} is inside the hot folder {hot}: results would be "
                   "stacked again as new frames", "set results_folder outside hot_folder (e.g. "
                   '/var/lib/focus-watcher/results), or results.layout = "openscan"')


def _writable_folder(name: str, folder: Path, setting: str) -> Finding:
    # A missing folder is created by the daemon: then its nearest existing ancestor must take a file.
    target = _existing_ancestor(folder)
    if not target.is_dir():
        return Finding(name, FAIL, f"{folder}: {target} is a file, not a folder", f"set {setting} to a folder")
    created = "" if target == folder else f" (does not exist yet, to be created in {target})"
    error = _write_error(target)
    if error:
        return Finding(name, FAIL, f"{folder}{created}: cannot write ({error})",
                       f"sudo mkdir -p {folder} && sudo chown focus-watcher: {folder}; outside "
                       f"/var/lib/focus-watcher also add it to ReadWritePaths= {_RELOAD}")
    return Finding(name, OK, f"{folder}: writable{created}")


def _write_error(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder``, or None. The hidden .tmp name is ignored by the watcher."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".focus-watcher-doctor-", suffix=".tmp"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_inotify_watches(settings: Settings, host: Host) -> Finding:
    """inotify needs one watch per folder under the hot folder (all of them, hidden ones too)."""
    name = "inotify watches"
    if settings.observer.mode == "polling":
        return Finding(name, SKIP, "observer.mode = polling: no inotify watches used")
    try:
        limit = int((host.proc / "sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return Finding(name, SKIP, "fs.inotify.max_user_watches not readable")
    hot = settings.hot_folder.resolve()
    folders = sum(1 for _ in os.walk(hot)) if hot.is_dir() else 0
    detail = f"{folders} folders to watch, fs.inotify.max_user_watches = {limit} (shared by all the user's programs)"
    raised = max(524288, -(-2 * folders // 65536) * 65536)  # double the need, rounded up: scans keep coming
    fix = (f"sudo sysctl fs.inotify.max_user_watches={raised} && echo fs.inotify.max_user_watches={raised} | "
           'sudo tee /etc/sysctl.d/60-focus-watcher.conf (survives reboots), or set observer.mode = "polling"')
    if folders > limit:
        return Finding(name, FAIL, detail + ": over the limit, new folders go unwatched", fix)
    if folders > 0.8 * limit:
        return Finding(name, WARN, detail + ": over 80 % of the limit", fix)
    return Finding(name, OK, detail)


def check_filesystem(settings: Settings, host: Host) -> Finding:
    """A network share delivers no inotify events for writes made by other hosts: it needs polling."""
    name, hot = "hot filesystem", settings.hot_folder.resolve()
    try:
        mounts = (host.proc / "mounts").read_text().splitlines()
    except OSError:
        return Finding(name, SKIP, "mount table not readable")
    best: tuple[Path, str] | None = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))  # \040 is a space
        if _inside(hot, point):
            best = (point, fields[2])  # listed in mount order: a later mount over the path hides earlier ones
    if best is None:
        return Finding(name, SKIP, f"no mount found for {hot}")
    point, fstype = best
    detail = f"{hot} is on {fstype} (mounted at {point})"
    if fstype not in _NETWORK_FS and not fstype.startswith("fuse."):
        return Finding(name, OK, detail)
    if settings.observer.mode == "polling":
        return Finding(name, OK, detail + ", watched by polling")
    return Finding(name, WARN, detail + ": a network/FUSE filesystem, inotify misses writes made elsewhere",
                   f'use observer.mode = "polling", and RequiresMountsFor={point} in the unit {_RELOAD}')


def sample_frames(settings: Settings, per_folder: int = 2, limit: int = 32) -> list[FrameSample]:
    """Size the first ``per_folder`` frames of each scan folder or zip (one scan's frames share a camera, other
    scans may not), at most ``limit`` in all (one header read each), from their headers."""
    if not settings.hot_folder.is_dir():
        return []
    taken: collections.Counter[str] = collections.Counter()
    samples = []
    folder = HotFolder(settings.hot_folder, settings.naming.extensions, exclude=excluded_results(settings))
    for found in folder.walk():
        if found.kind == "scan_json" or taken[found.scan] >= per_folder:
            continue
        sample = _probe(folder, found)
        if sample is not None:
            samples.append(sample)
            taken[found.scan] += 1
            if len(samples) >= limit:
                break
    return samples


def _probe(folder: HotFolder, found: Found) -> FrameSample | None:
    try:
        if found.kind == "archive":
            members = folder.archive_frames(found.path) or {}
            if not members:
                return None
            name, size = next(iter(members.items()))
            source, where = FrameSource(name, found.path, name), f"{found.path}:{name}"
        else:
            source, where, size = FrameSource.of(found.path), str(found.path), os.lstat(found.path).st_size
        info = read_header(source)
    except (OSError, ArchiveRefused, FrameError, FrameUnavailable):
        return None
    return FrameSample(where, info, size)


def check_disk(settings: Settings, frames: list[FrameSample]) -> Finding:
    """Free space where results go: room for ~100 results (at least 1 GiB), and never under 100 MiB."""
    name = "free disk"
    where = _existing_ancestor(settings.results_folder.resolve())
    try:
        stats = os.statvfs(where)
    except OSError as exc:
        return Finding(name, SKIP, f"cannot stat {where}: {exc.strerror}")
    free = stats.f_bavail * stats.f_frsize  # what an unprivileged user may use (root keeps a reserve)
    per_result = max((_result_bytes(f, settings.stacking) for f in frames), default=0)
    detail = f"{format_size(free)} free on the results filesystem ({where})"
    if per_result:
        detail += f", ~{format_size(per_result)} per result: room for ~{free // per_result}"
    fix = f"free space there (df -h {where}), or point results_folder at a larger disk (e.g. a USB SSD)"
    if free < 100 * MIB:
        return Finding(name, FAIL, detail, fix)
    if free < max(GIB, 100 * per_result):
        return Finding(name, WARN, detail, fix)
    return Finding(name, OK, detail)


def _result_bytes(frame: FrameSample, stacking: StackingSettings) -> int:
    """A JPEG result ~1.5x a JPEG frame (quality 95 vs OpenScan's 90; more for lossless frames, on the safe
    side); a lossless result at most its raw size."""
    pixels = frame.info.pixels
    deep = stacking.output_depth == "16" or (stacking.output_depth == "auto" and frame.info.bits > 8)
    size = frame.file_size * 3 // 2 if stacking.output_format == "jpg" else pixels * 3 * (2 if deep else 1)
    return size + (pixels if stacking.depthmap else 0)


def check_ram(settings: Settings, host: Host) -> Finding:
    """The memory budget against physical RAM and the unit's MemoryMax=85%."""
    name, budget_mb = "memory budget", settings.workers.memory_budget_mb
    try:
        info = dict(line.split(":", 1) for line in (host.proc / "meminfo").read_text().splitlines() if ":" in line)
        total, available = (int(info[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))  # kB
    except (OSError, KeyError, ValueError, IndexError):
        return Finding(name, SKIP, "/proc/meminfo not readable")
    detail = (f"workers.memory_budget_mb = {budget_mb}; MemTotal {format_size(total)}, MemAvailable now "
              f"{format_size(available)}")
    fix = f"workers.memory_budget_mb = {int(total * 0.7) // MIB} (70 % of RAM, the default)"
    if budget_mb * MIB > total:
        return Finding(name, FAIL, detail + ": over the RAM, so stacks can start that the OOM killer then kills",
                       fix)
    if budget_mb * MIB > total * 0.85:
        return Finding(name, WARN, detail + ": over the unit's MemoryMax=85 %, which kills workers first "
                       "(when the memory cgroup is on)", fix)
    return Finding(name, OK, detail)


def check_stack_memory(settings: Settings, frames: list[FrameSample]) -> Finding:
    """The biggest frame found: does one stack, and do workers.count stacks at once, fit the memory budget?"""
    name = "stack memory"
    if not frames:
        return Finding(name, SKIP, "no frames in the hot folder to size a stack from (run doctor after a scan)")
    stacking, workers = settings.stacking, settings.workers
    big = max(frames, key=lambda f: (f.info.pixels, f.info.bits))
    width, height, bits, megapixels = big.info.width, big.info.height, big.info.bits, big.info.pixels / 1e6
    if megapixels > stacking.max_megapixels:
        return Finding(name, FAIL, f"{big.where}: {megapixels:.1f} MP, over stacking.max_megapixels = "
                       f"{stacking.max_megapixels:g}: such frames are refused",
                       f"stacking.max_megapixels = {int(megapixels) + 1}")
    need = estimate_peak_bytes(width, height, bits, stacking) // MIB + 1
    budget = workers.memory_budget_mb
    detail = (f"largest frames {width}x{height} {bits}-bit ({Path(big.where).name}): one stack needs "
              f"~{need} MiB with stacking.blend = {stacking.blend}")
    if need > budget:
        fix = f"workers.memory_budget_mb = {need} or more, if the RAM allows"
        costs = {blend: estimate_peak_bytes(width, height, bits, stacking.model_copy(update={"blend": blend}))
                 // MIB + 1 for blend in get_args(BlendMethod)}
        cheapest = min(costs, key=costs.__getitem__)
        if costs[cheapest] <= budget:
            fix += f', or stacking.blend = "{cheapest}" (~{costs[cheapest]} MiB)'
        return Finding(name, FAIL, detail + f", over workers.memory_budget_mb = {budget}: the daemon refuses "
                       "these stacks", fix)
    at_once = budget // need
    if at_once < workers.count:
        return Finding(name, WARN, detail + f"; workers.count = {workers.count} would need {workers.count * need} "
                       f"MiB, the budget of {budget} MiB runs {at_once} at a time",
                       f"workers.count = {at_once} (more only wait), or workers.memory_budget_mb = "
                       f"{workers.count * need} if the RAM allows")
    return Finding(name, OK, detail + f"; workers.memory_budget_mb = {budget} holds {at_once} at once "
                   f"(workers.count = {workers.count})")


def check_memory_cgroup(host: Host) -> Finding:
    """Raspberry Pi kernels often boot with the memory cgroup off, and then MemoryHigh=/MemoryMax= do nothing."""
    name = "memory cgroup"
    try:
        controllers = (host.sys / "fs/cgroup/cgroup.controllers").read_text().split()
    except OSError:
        return Finding(name, SKIP, "no cgroup v2 hierarchy at /sys/fs/cgroup")
    if "memory" in controllers:
        return Finding(name, OK, "enabled: the unit's MemoryHigh=/MemoryMax= apply")
    return Finding(name, WARN, "disabled: systemd's MemoryHigh=/MemoryMax= do not apply (the daemon's own "
                   "workers.memory_budget_mb still does)", "append ' cgroup_enable=memory' to the single line of "
                   "/boot/firmware/cmdline.txt (/boot/cmdline.txt before bookworm), then reboot")


def check_temperature(host: Host) -> Finding:
    """The hottest thermal zone: a Pi throttles from 80 °C, which slows every stack of a long run."""
    name, temps = "temperature", []
    for zone in sorted((host.sys / "class/thermal").glob("thermal_zone*")):
        try:
            temps.append(int((zone / "temp").read_text()) / 1000)  # millidegrees
        except (OSError, ValueError):
            continue
    if not temps:
        return Finding(name, SKIP, "no thermal sensor (not a Raspberry Pi?)")
    hottest = max(temps)
    detail = f"CPU at {hottest:.1f} °C"
    fix = "fit a heatsink and fan (Pi 5: the Active Cooler) and give the case air; long runs heat up further"
    if hottest >= 80:
        return Finding(name, FAIL, detail + ": throttling (from 80 °C)", fix)
    if hottest >= 75:
        return Finding(name, WARN, detail + ": close to throttling (80 °C)", fix)
    return Finding(name, OK, detail)


def check_throttling(host: Host) -> Finding:
    """Decode ``vcgencmd get_throttled``: a bit set now is a FAIL, one set since boot a warning."""
    name, command = "power/throttling", shutil.which(host.vcgencmd)
    if command is None:
        return Finding(name, SKIP, "vcgencmd not found (not a Raspberry Pi?)")
    try:
        run = subprocess.run([command, "get_throttled"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return Finding(name, SKIP, f"vcgencmd failed: {exc}")
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", run.stdout)
    if run.returncode or not match:
        return Finding(name, SKIP, f"vcgencmd get_throttled said: {(run.stdout + run.stderr).strip()!r}")
    value = int(match.group(1), 16)
    now = [text for bit, text in _THROTTLE_BITS.items() if value >> bit & 1]
    since_boot = [text for bit, text in _THROTTLE_BITS.items() if value >> (bit + _SINCE_BOOT) & 1]
    if not now and not since_boot:
        return Finding(name, OK, f"throttled={match.group(1)}: no under-voltage or throttling since boot")
    detail = f"throttled={match.group(1)}: now: {', '.join(now) or 'none'}; since boot: {', '.join(since_boot)}"
    fixes = []
    if value & _UNDER_VOLTAGE:
        fixes.append("use the official supply, 5 V/3 A for a Pi 4, 5 V/5 A for a Pi 5, with a short cable")
    if value & _HEAT:
        fixes.append("cool the Pi: heatsink and fan (Pi 5: the Active Cooler)")
    return Finding(name, FAIL if now else WARN, detail, "; ".join(fixes))


def check_workers(settings: Settings, host: Host) -> Finding:
    """More workers than cores only makes every stack slower and holds more memory."""
    count, cores = settings.workers.count, host.cpu_count
    if count > cores:
        return Finding("workers", WARN, f"workers.count = {count} is more than the {cores} CPU cores",
                       f"workers.count = {max(1, cores - 1)} (one core stays for the capture firmware)")
    return Finding("workers", OK, f"workers.count = {count} on {cores} CPU cores")


def format_size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"

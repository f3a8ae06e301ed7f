"""Before any stack runs: ``once`` against a cluster that is not there, and ``doctor``'s look at the cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import watcher
from benchmarks.local_dask import Cluster, free_port
from tests.e2e.conftest import write_openscan3_stacks
from tests.test_doctor import jpeg_header
from watcher import __version__


def test_once_against_no_scheduler_gives_up_after_the_wait_with_one_line_and_marks_nothing_failed(rig, frames):
    """The environment, not the stacks: exit 1 with the reason on stderr and in the log, no record written,
    and the next ``once`` (against a cluster that is there) finds every stack still to do."""
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    config = rig.config(workers={"executor": "dask", "dask_scheduler": address, "dask_wait_for_worker_seconds": 2.0})
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {p: frames.stack(3, offset=p) for p in range(2)},
                                    status="completed")
    once = rig.start(config, command="once")
    assert once.wait_exit(60) == 1
    [gave_up] = once.events("once.gave_up")
    assert gave_up["error"].startswith(f"the Dask scheduler at {address} was unreachable for 2 s ("), gave_up
    assert gave_up["error"].endswith("nothing marked failed, the stacks are left for the next run"), gave_up
    lines = once.stderr_path.read_text().splitlines()
    assert lines[-1] == f"focus-watcher: {gave_up['error']}"  # the one line that is not JSON
    assert not any(line.startswith("focus-watcher:") for line in lines[:-1])
    assert all(json.loads(line) for line in lines[:-1])
    assert not once.events("stack.failed")
    assert rig.records() == {}
    assert once.events("daemon.stopped")[0]["failed"] == 0
    assert {e["stack"] for e in once.events("stack.ready")} == set(stacks)


CHECKS = ("cluster memory", "cluster versions", "cluster", "memory budget", "stack memory", "workers")


def doctor(rig, config) -> tuple[int, dict[str, tuple[str, str, str]]]:
    """``focus-watcher doctor``: its exit status, and its lines of :data:`CHECKS` by name: (status, detail, fix)."""
    done = rig.cli("doctor", config=config)
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    found, lines = {}, done.stdout.splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=False):
        status, _, rest = line.partition("  ")
        rest = rest.lstrip()
        for name in CHECKS:
            if rest.startswith(name + "  "):
                fix = after.strip().removeprefix("fix: ") if after.strip().startswith("fix: ") else ""
                found[name] = (status.strip(), rest[len(name):].strip(), fix)
                break
    return done.returncode, found


def test_doctor_checks_the_cluster_its_workers_and_whether_one_holds_a_stack(rig, cluster):
    """The shared cluster: two workers declaring 2 GB each. Before a scan, sized for 16 MP frames (both hold
    one); with 64 MP frames in the hot folder and the laplacian_pyramid blend (4389 MiB), none does: FAIL, and how
    to fix it. The local pool's checks (memory budget, workers.count) do not apply."""
    config = rig.config(workers={"executor": "dask", "dask_scheduler": cluster.address})
    status, found = doctor(rig, config)
    assert found["cluster"][0] == "ok", found
    assert found["cluster"][1].startswith(f"{cluster.address}: 2 workers, 2 threads (w1 on 127.0.0.1: 1 thread")
    assert found["cluster versions"][0] == "ok" and __version__ in found["cluster versions"][1]
    memory = found["cluster memory"]
    assert memory[0] == "ok" and "16 MP frames" in memory[1] and "2 of 2 workers hold one" in memory[1], memory
    assert "w1 holds 1.9 GiB (its memory resource)" in memory[1]
    for local in ("memory budget", "stack memory", "workers"):  # this machine's pool does not stack here
        assert found[local][0] == "skip" and 'workers.executor = "dask"' in found[local][1], found[local]

    scan = rig.hot / "scan01"
    scan.mkdir(parents=True)
    for k in range(2):
        (scan / f"scan01_000_fs{k:02d}.jpg").write_bytes(jpeg_header(9152, 6944))  # 64 MP, the header alone
    status, found = doctor(rig, rig.config(workers={"executor": "dask", "dask_scheduler": cluster.address},
                                           stacking={"blend": "laplacian_pyramid"}))
    memory = found["cluster memory"]
    assert memory[0] == "FAIL" and status == 1, memory
    assert "the largest frames here, 9152x6944 8-bit" in memory[1] and "0 of 2 workers hold one" in memory[1]
    assert "--memory-limit" in memory[2] and "stacking.blend" in memory[2]


def test_doctor_on_plain_workers_one_of_another_version(rig, tmp_path, request):
    """A plain worker started with no memory limit, taken to hold Dask's default; a worker running another
    focus-watcher version: FAIL, and it is not counted as one that can hold a stack."""
    other = tmp_path / "other-version"
    shutil.copytree(Path(watcher.__file__).parent, other / "watcher")
    init = other / "watcher" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', '"0.0.1"'))
    cluster = Cluster(tmp_path / "plain-cluster")
    cluster.root.mkdir()
    request.addfinalizer(cluster.close)
    cluster.start_scheduler()
    cluster.start_worker("unlimited", None, "--memory-limit", "0")
    cluster.start_worker("other", None, env={"PYTHONPATH": str(other)})
    cluster.wait_for_workers(2)

    status, found = doctor(rig, rig.config(workers={"executor": "dask", "dask_scheduler": cluster.address}))
    assert status == 1
    assert found["cluster"][0] == "ok" and "unlimited on 127.0.0.1: 1 thread, no memory limit" in found["cluster"][1]
    versions = found["cluster versions"]
    assert versions[0] == "FAIL" and versions[1].startswith("other runs focus-watcher 0.0.1;"), versions
    assert f'"focus-watcher[dask]=={__version__}"' in versions[2]
    memory = found["cluster memory"]
    assert memory[0] == "ok" and "1 of 2 workers hold one" in memory[1], memory
    assert "unlimited holds" in memory[1] and "(no memory limit: from Dask's default for its machine)" in memory[1]
    assert "other holds" not in memory[1]


def test_doctor_against_no_scheduler_fails_within_its_timeout(rig):
    address = f"tcp://127.0.0.1:{free_port()}"
    status, found = doctor(rig, rig.config(workers={"executor": "dask", "dask_scheduler": address}))
    assert status == 1
    assert found["cluster"][0] == "FAIL" and found["cluster"][1].startswith(f"{address}: unreachable within 5 s")
    assert "dask scheduler" in found["cluster"][2]
    assert found["cluster versions"][0] == found["cluster memory"][0] == "skip"

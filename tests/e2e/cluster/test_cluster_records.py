"""The daemon with ``workers.executor = "dask"`` against a real local cluster: the same results and records as
with the local pool, frames read by (mapped) path or shipped, and ``status`` showing the cluster."""

from __future__ import annotations

import json
import os

from tests.e2e.conftest import REPORT_FOLDER, openscan3_stack, paused, write_openscan3_stacks
from watcher.names import display

# What may differ between two runs of the same stacks, whatever runs them: times, and who ran them.
_RUN_FIELDS = ("started_at", "finished_at", "duration_seconds", "timings", "worker_peak_rss_mb", "worker")


def comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in _RUN_FIELDS}


def dask_config(rig, cluster, name: str = "focus-watcher.toml", workers: dict | None = None, **sections):
    return rig.config(name, workers={"executor": "dask", "dask_scheduler": cluster.address, **(workers or {})},
                      **sections)


def test_an_openscan3_scan_stacked_on_the_cluster_matches_the_local_executor_byte_for_byte(rig, cluster, frames):
    """Records identical except times and worker names; images, depth maps and masks byte-identical (the engine
    gives the same bytes whatever OpenCV's thread count, which differs between a local worker and a cluster
    worker). A failing stack's record and fallback image too, and a DNG stack's 16-bit TIFF (LibRaw's threads
    differ too)."""
    bad = [frames.small[0], frames.small[1], b"not a JPEG at all \xff\xd9"]
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.stack(3), 1: frames.stack(3, offset=3),
                                                        2: frames.medium[2:5], 3: bad}, status="completed")
    stacks += write_openscan3_stacks(rig.hot, "owl", 2, {0: frames.raw[:3]}, status="completed", suffix=".dng")
    same = {"stacking": {"depthmap": True}, "results": {"on_failure": "sharpest_frame", "masks": ["colmap", "openmvs"]}}
    local = rig.root / "local"
    once = rig.start(rig.config("local.toml", results_folder=local, **same), command="once")
    assert once.wait_exit(120) == 1  # one stack failed, as it should

    daemon = rig.start(dask_config(rig, cluster, **same))
    daemon.wait_for(lambda: set(rig.records()) == set(stacks), 60, "a record for every stack")
    assert daemon.terminate() == 0

    on_cluster, on_local = rig.records(), {}
    for path in local.rglob("*.json"):
        if path.is_relative_to(local / REPORT_FOLDER):  # the report's own state, not a record
            continue
        record = json.loads(path.read_text())
        on_local[record["stack"]] = record
    assert set(on_local) == set(stacks)
    for stack in stacks:
        assert comparable(on_cluster[stack]) == comparable(on_local[stack]), stack
        for output in on_cluster[stack]["outputs"]:
            assert (rig.results / output["path"]).read_bytes() == (local / output["path"]).read_bytes(), output
    failed = on_cluster[openscan3_stack("owl", 1, 3)]
    assert failed["status"] == "failed" and failed["fallback"] is not None and failed["outputs"]
    assert failed["worker"]["name"].split()[0] in {"w1", "w2"}, failed  # the worker that found the frame bad
    assert on_local[failed["stack"]]["worker"]["name"].startswith("local pid ")
    assert {on_cluster[s]["status"] for s in [*stacks[:3], stacks[4]]} == {"ok"}
    kinds = [output.get("kind") for output in on_cluster[stacks[0]]["outputs"]]
    assert kinds == [None, None, "mask", "mask"]  # image, depth map, the mask under two names
    assert on_cluster[stacks[4]]["outputs"][0]["path"] == "owl/scan02/scan02_000.tif"

    # Which worker stacked each stack: in its record and in the log, by name and host.
    ran = {e["stack"]: e for e in daemon.events("stack.running")}
    for stack in stacks[:3]:
        worker = on_cluster[stack]["worker"]
        assert worker["name"].split()[0] in {"w1", "w2"} and worker["host"] == os.uname().nodename, worker
        assert ran[stack]["worker"] == worker["name"] and ran[stack]["attempt"] == 1
        assert on_local[stack]["worker"]["name"].startswith("local pid ")
    assert daemon.events("cluster.connected") and not daemon.events("stack.requeued")
    assert not daemon.events("cluster.worker_unusable")  # the workers run this focus-watcher


def test_frames_by_a_mapped_path_or_shipped_by_the_daemon(rig, cluster, frames):
    """Workers that mount the share elsewhere read it through ``dask_path_map``; workers that cannot see it at
    all get the bytes from the daemon (``dask_frames = "ship"``: here the map points nowhere, so a worker that
    tried to read a path would fail)."""
    share = rig.root / "share"
    share.symlink_to(rig.hot, target_is_directory=True)  # the same folder, under the workers' prefix
    mapped = dask_config(rig, cluster, "mapped.toml", workers={"dask_path_map": {str(rig.hot): str(share)}})
    daemon = rig.start(mapped)
    first = write_openscan3_stacks(rig.hot, "owl", 1, {0: frames.stack(3)})
    daemon.wait_for(lambda: rig.ok_records(first), 40, "the stack read through the mapped path")
    assert daemon.terminate() == 0

    shipped = dask_config(rig, cluster, "shipped.toml",
                          workers={"dask_frames": "ship", "dask_path_map": {str(rig.hot): "/nonexistent/share"}})
    daemon = rig.start(shipped)
    second = write_openscan3_stacks(rig.hot, "owl", 2, {0: frames.stack(3, offset=1)})
    daemon.wait_for(lambda: rig.ok_records(second), 40, "the stack shipped to the cluster")
    assert daemon.terminate() == 0
    assert not daemon.events("inputs.unavailable") and not daemon.events("stack.failed")


def test_a_result_for_inputs_that_changed_while_the_cluster_stacked_them_is_not_written(rig, cluster, frames):
    """A frame touched while its stack runs on a worker: the result that comes back describes the old inputs, so
    it is not written; the stack is stacked again from what is there now, and its one record names those."""
    # "ship": the worker never sees the change
    daemon = rig.start(dask_config(rig, cluster, workers={"dask_frames": "ship"}))
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.big})
    running = daemon.wait_event("stack.running", stack=stack)[0]
    frame = rig.hot / "big" / "scan01" / "scan01_001_fs03.jpg"
    with paused(running["pid"]):  # touched while the worker holds the stack, whatever the machine's speed
        os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    changed = daemon.wait_event("inputs.unavailable", stack=stack, timeout=40)[0]
    assert "changed while the cluster stacked it" in changed["error"]
    assert not (rig.results / "big" / "scan01" / "scan01_001.jpg").exists()  # (the next run needs seconds)
    daemon.wait_event("stack.done", stack=stack, timeout=90)
    assert daemon.terminate() == 0
    record = rig.records()[stack]
    assert record["status"] == "ok"
    assert {i["name"]: i["mtime_ns"] for i in record["inputs"]}[frame.name] == frame.stat().st_mtime_ns


def test_status_shows_the_clusters_workers_and_what_they_run(rig, cluster, frames):
    daemon = rig.start(dask_config(rig, cluster))
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})
    running = daemon.wait_event("stack.running", stack=stack)[0]
    with paused(running["pid"]):  # the stack stays running across both status calls, however slow they are
        shown = rig.cli("status", "--json", config=dask_config(rig, cluster))
        text = rig.cli("status", config=dask_config(rig, cluster))
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)["cluster"]
    assert summary["scheduler"] == cluster.address and summary["error"] is None
    workers = {w["name"]: w for w in summary["workers"]}
    assert set(workers) == {"w1", "w2"}
    assert all(w["threads"] == 1 and w["memory_mb"] == int(2e9) >> 20 for w in workers.values())
    busy = running["worker"].split()[0]
    assert workers[busy]["stacks"] == [stack]
    assert workers[({"w1", "w2"} - {busy}).pop()]["stacks"] == []
    assert f"cluster {cluster.address}: 2 workers" in text.stdout and stack in text.stdout, text.stdout
    daemon.wait_event("stack.done", stack=stack, timeout=90)
    assert daemon.terminate() == 0


def test_a_stack_whose_name_is_not_utf8_is_stacked_on_the_cluster(rig, cluster, frames):
    """Dask sends task keys as UTF-8 (msgpack): a latin-1 project folder once made every submit fail to
    serialise, so its stacks waited for ever. The key carries the name as shown; the result has the exact name."""
    project = os.fsdecode(b"caf\xe9 #1")
    daemon = rig.start(dask_config(rig, cluster))
    [stack] = write_openscan3_stacks(rig.hot, project, 1, {0: frames.stack(3)})
    daemon.wait_event("stack.done", stack=display(stack), timeout=60)
    assert (rig.results / project / "scan01" / "scan01_000.jpg").is_file()
    assert daemon.terminate() == 0

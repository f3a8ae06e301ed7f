"""A plain ``dask worker`` (no ``--resources``): it takes stacks, as much as its memory limit holds, and never
one too big for it."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.local_dask import Cluster
from tests.e2e.conftest import write_openscan3_stacks

MIB = 1 << 20


def sixteen_megapixels() -> list[bytes]:
    """Three frames of OpenScan's 16 MP camera (4656x3496), black: a few hundred KB, about 473 MiB estimated."""
    return [cv2.imencode(".jpg", np.zeros((3496, 4656, 3), np.uint8))[1].tobytes()] * 3


def test_plain_workers_take_stacks_but_never_one_too_big_for_their_memory_limit(rig, tmp_path, frames, request):
    """A plain worker with ``--memory-limit 400MB`` holds 380 MB of stacks (where its nanny would kill it: 95 %):
    small stacks run there, a 16 MP stack never does -- it fails with a record after
    ``dask_wait_for_worker_seconds``. With a longer wait, a plain worker big enough that joins meanwhile takes
    the waiting stack (the scheduler is told to look again when the daemon gives the newcomer its memory)."""
    cluster = Cluster(tmp_path / "plain-cluster")
    cluster.root.mkdir()
    request.addfinalizer(cluster.close)
    cluster.start_scheduler()
    cluster.start_worker("small", None, "--memory-limit", "400MB")
    cluster.wait_for_workers(1)
    workers = {"executor": "dask", "dask_scheduler": cluster.address, "dask_wait_for_worker_seconds": 1.0}

    daemon = rig.start(rig.config("short-wait.toml", workers=workers))
    [big] = write_openscan3_stacks(rig.hot, "huge", 1, {1: sixteen_megapixels()})
    small = write_openscan3_stacks(rig.hot, "small", 1, {p: frames.stack(3, offset=p) for p in range(2)})
    daemon.wait_for(lambda: rig.ok_records(small), 60, "the small stacks, on the plain worker")
    failed = daemon.wait_event("stack.failed", stack=big, timeout=30)[0]
    offered = int(400e6 * 0.95) // MIB
    assert f"more than any worker of the cluster has: the largest offers {offered} MiB" in failed["error"], failed
    assert "--memory-limit" in failed["error"]
    records = rig.records()
    assert records[big]["status"] == "failed" and "worker" not in records[big]  # it never ran anywhere
    assert all(records[s]["worker"]["name"].startswith("small ") for s in small)
    assert not daemon.events("stack.running", stack=big)
    [joined] = daemon.events("cluster.worker_joined")
    assert (joined["worker"], joined["memory_mb"], joined["memory_from"]) == ("small", offered, "memory limit")
    assert not daemon.events("cluster.worker_unusable")
    assert daemon.terminate() == 0

    daemon = rig.start(rig.config("long-wait.toml", workers={**workers, "dask_wait_for_worker_seconds": 300.0}))
    [waiting] = write_openscan3_stacks(rig.hot, "huge", 2, {1: sixteen_megapixels()})
    daemon.wait_event("stack.waiting_for_memory", stack=waiting, timeout=30)
    cluster.start_worker("big", None)  # Dask's default memory limit: its share of this machine's memory
    daemon.wait_event("stack.done", stack=waiting, timeout=120)
    assert rig.records()[waiting]["worker"]["name"].startswith("big ")
    joined = daemon.events("cluster.worker_joined", worker="big")[0]
    assert joined["memory_from"] == "memory limit" and joined["memory_mb"] > 473, joined
    assert daemon.terminate() == 0

"""Faults of a cluster under a running daemon: a worker killed mid-stack, the scheduler stopped and restarted,
a stack too big for every worker. None may lose a stack, mark one failed for the environment's sake, or hang."""

from __future__ import annotations

import os
import signal
import time

import cv2
import numpy as np
import pytest
from distributed import Client
from structlog.testing import capture_logs

from benchmarks.local_dask import Cluster
from tests.e2e.conftest import paused, write_openscan3_stacks
from watcher.service.dask_cluster import _welcome, cluster_worker


def dask_config(rig, cluster, workers: dict | None = None):
    return rig.config(workers={"executor": "dask", "dask_scheduler": cluster.address, **(workers or {})})


def kill_the_worker_running(daemon, stack: str, attempt: int) -> dict:
    """SIGKILL the worker process running ``stack`` (its nanny restarts it, as after an OOM kill)."""
    running = daemon.wait_event("stack.running", stack=stack, count=attempt, timeout=40)[attempt - 1]
    assert running["attempt"] == attempt
    os.kill(running["pid"], signal.SIGKILL)
    return running


def test_a_worker_killed_mid_stack_runs_it_again_elsewhere(rig, cluster, frames):
    daemon = rig.start(dask_config(rig, cluster, {"retries": 1}))
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.big})
    killed = kill_the_worker_running(daemon, stack, 1)
    done = daemon.wait_event("stack.done", stack=stack, timeout=60)[0]
    assert done
    retry = daemon.events("stack.retry", stack=stack)
    assert len(retry) == 1 and killed["worker"] in retry[0]["error"] and "left mid-stack" in retry[0]["error"]
    [first, second] = daemon.events("stack.running", stack=stack)
    assert second["worker"] != first["worker"] and second["pid"] != killed["pid"]
    record = rig.records()[stack]
    assert record["status"] == "ok" and record["attempts"] == 2
    assert record["worker"]["name"] == second["worker"]
    assert daemon.terminate() == 0
    assert rig.assert_results_sound() == 1


def test_a_stack_whose_workers_keep_dying_fails_after_its_retries_with_a_record(rig, cluster, frames):
    daemon = rig.start(dask_config(rig, cluster, {"retries": 1}))
    [stack] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.big})
    kill_the_worker_running(daemon, stack, 1)
    second = kill_the_worker_running(daemon, stack, 2)
    failed = daemon.wait_event("stack.failed", stack=stack, timeout=60)[0]
    assert "left mid-stack" in failed["error"] and failed["attempts"] == 2
    record = rig.records()[stack]
    assert record["status"] == "failed" and record["attempts"] == 2
    assert second["worker"] in record["error"] and record["error"].endswith("(2 attempts)"), record["error"]
    assert record["worker"] == {"host": os.uname().nodename, "name": second["worker"]}, record  # it failed there
    assert failed["worker"] == second["worker"]
    assert not (rig.results / "big" / "scan01" / "scan01_001.jpg").exists()
    # The daemon goes on: the next stack is stacked (on the restarted workers).
    [next_stack] = write_openscan3_stacks(rig.hot, "small", 1, {0: frames.stack(3)})
    daemon.wait_event("stack.done", stack=next_stack, timeout=60)
    assert daemon.terminate() == 0


def test_the_scheduler_stopped_and_restarted_under_a_running_daemon(rig, own_cluster, frames):
    """Intake pauses while the scheduler is away (the stack running then is not failed, and stacks that became
    ready meanwhile wait), the daemon says so and reconnects by itself; afterwards every stack is done, once."""
    cluster = own_cluster
    daemon = rig.start(dask_config(rig, cluster))
    [running] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})
    worker = daemon.wait_event("stack.running", stack=running)[0]["pid"]
    with paused(worker):  # the stack is still running when the scheduler goes, however fast the machine is
        cluster.stop_scheduler()
    cluster.wait_workers_ended()  # the workers end with it, the running stack with them
    daemon.wait_event("cluster.disconnected", timeout=30)
    during = write_openscan3_stacks(rig.hot, "small", 1, {p: frames.stack(3, offset=p) for p in range(3)})
    daemon.wait_event("stack.ready", count=len(during), timeout=20)
    daemon.wait_event("cluster.unreachable", timeout=30)
    time.sleep(1.0)
    assert not daemon.events("stack.done") and not daemon.events("stack.failed")
    assert not any(e["stack"] in during for e in daemon.events("stack.running"))  # intake paused

    cluster.start_scheduler()  # same address; the workers come back as their units' Restart=always does
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    everything = [running, *during]
    daemon.wait_for(lambda: rig.ok_records(everything), 90, "every stack done after the restart")
    assert len(daemon.events("cluster.connected")) == 2
    assert daemon.events("stack.requeued", stack=running)
    assert not daemon.events("stack.failed")
    assert all(r["attempts"] == 1 for r in rig.records().values())
    assert daemon.terminate() == 0


def test_a_worker_welcomed_as_the_connection_closes_is_not_called_unusable(cluster):
    """The daemon stopping (or the scheduler going) while it lets a joining worker take stacks is the connection's
    loss, not the worker's fault: no "cannot run focus-watcher there, install it" line; the connection's keeper
    starts over (or ends, when the daemon closed it)."""
    client = Client(cluster.address, timeout=10, set_as_default=False)
    address, entry = next(iter(client.scheduler_info(n_workers=-1)["workers"].items()))
    client.close()
    with capture_logs() as logs, pytest.raises(ConnectionError):
        _welcome(client, cluster_worker(address, entry))
    assert not [e for e in logs if e["event"].startswith("cluster.worker_")], logs


def test_a_stack_too_big_for_every_workers_memory_fails_with_a_clear_record(rig, tmp_path, frames, request):
    """Workers that offer 300 MB each: 320x240 stacks fit (about 150 MiB estimated, mostly the worker's own
    footprint), a 16 MP stack (about 470 MiB estimated) fits none. It
    fails with a record saying so after waiting ``dask_wait_for_worker_seconds`` for a bigger worker, instead of
    waiting in the scheduler forever; the small stacks beside it are stacked."""
    cluster = Cluster(tmp_path / "small-cluster")
    cluster.root.mkdir()
    request.addfinalizer(cluster.close)
    cluster.start_scheduler()
    cluster.start_worker("w1", memory=300e6)
    cluster.start_worker("w2", memory=300e6)
    cluster.wait_for_workers(2)

    daemon = rig.start(dask_config(rig, cluster, {"dask_wait_for_worker_seconds": 1.0}))
    huge = cv2.imencode(".jpg", np.zeros((3496, 4656, 3), np.uint8))[1].tobytes()  # 16 MP, a few hundred KB
    [big] = write_openscan3_stacks(rig.hot, "huge", 1, {1: [huge] * 3})
    small = write_openscan3_stacks(rig.hot, "small", 1, {p: frames.stack(3, offset=p) for p in range(2)})
    failed = daemon.wait_event("stack.failed", stack=big, timeout=30)[0]
    assert "more than any worker of the cluster has: the largest offers 286 MiB" in failed["error"], failed
    record = rig.records()[big]
    assert record["status"] == "failed" and record["error"] == failed["error"]
    daemon.wait_for(lambda: rig.ok_records(small), 40, "the small stacks")
    assert daemon.events("stack.waiting_for_memory", stack=big)
    assert daemon.terminate() == 0


def test_a_stack_past_its_timeout_fails_and_its_stuck_worker_is_restarted(rig, cluster, frames):
    """A thread cannot be killed: the worker running a stack past ``workers.stack_timeout_seconds`` is restarted
    by its nanny, so that it is free again; the stack fails with a record, the next one is stacked."""
    daemon = rig.start(dask_config(rig, cluster, {"stack_timeout_seconds": 5.0}))
    [slow] = write_openscan3_stacks(rig.hot, "big", 1, {1: frames.medium})
    running = daemon.wait_event("stack.running", stack=slow)[0]
    with paused(running["pid"]):  # stuck for as long as it takes, however fast the machine is
        failed = daemon.wait_event("stack.failed", stack=slow, timeout=30)[0]
    assert failed["error"] == "timed out after 5 s" and rig.records()[slow]["status"] == "failed"
    left = daemon.wait_event("cluster.worker_left", timeout=30)[0]
    assert left["worker"] == running["worker"].split()[0]
    daemon.wait_event("cluster.worker_joined", count=3, timeout=60)  # w1, w2, and the restarted one
    [quick] = write_openscan3_stacks(rig.hot, "small", 1, {0: frames.stack(3)})
    daemon.wait_event("stack.done", stack=quick, timeout=60)
    assert daemon.terminate() == 0

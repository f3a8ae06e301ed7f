"""The cluster tests' clusters: real ``dask scheduler`` and ``dask worker`` processes on this machine
(:class:`benchmarks.local_dask.Cluster`). The fixtures close them whatever the test did.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed import Client

from benchmarks.local_dask import Cluster
from tests.e2e.conftest import wait_until


def wait_until_idle(cluster: Cluster, timeout: float = 60.0) -> None:
    """Both workers ("w1", "w2") connected and running no task (a worker killed by an earlier test is back)."""
    def idle():
        try:
            with Client(cluster.address, timeout=5, set_as_default=False) as client:
                workers = client.scheduler_info(n_workers=-1)["workers"]
                busy = [key for keys in client.processing().values() for key in keys]
        except OSError:
            return False
        return {w["name"] for w in workers.values()} == {"w1", "w2"} and not busy
    wait_until(idle, timeout, f"workers w1 and w2 idle at {cluster.address}", cluster.tail)


def _started(root: Path) -> Cluster:
    cluster = Cluster(root)
    cluster.root.mkdir()
    cluster.start_scheduler()
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.wait_for_workers(2)
    return cluster


@pytest.fixture(scope="package")  # stopped after the last test here: an idle cluster still costs CPU
def _shared_cluster(tmp_path_factory):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The tests here are one xdist group: one process runs them all, one after the other, and starts this cluster
        # once. A second start (in another process, or again after other tests) means the grouping broke, as it
        # did unnoticed when our collection hook marked the groups after pytest-xdist had read them, and as pytest
        # 9.2 breaks pytest-xdist 3.8's (pytest-dev/pytest-xdist#1386): each start costs seconds of CPU, and an
        # idle cluster keeps costing.
        first = tmp_path_factory.getbasetemp().parent / "shared-cluster-started"
        try:
            os.close(os.open(first, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pytest.fail("the shared Dask cluster was started a second time: the cluster tests are not one xdist "
                        "group (is --dist loadgroup grouping?)", pytrace=False)
    cluster = _started(tmp_path_factory.mktemp("shared") / "cluster")
    yield cluster
    cluster.close()


@pytest.fixture
def cluster(request, _shared_cluster):
    """A scheduler and two 1-thread workers ("w1", "w2", 2 GB memory resource each), up, registered and idle.

    Shared by the tests of this folder (starting one costs seconds of CPU): a test may kill a worker, whose nanny
    brings it back, and each test starts once both are back and nothing from an earlier test still runs on them.
    A test that stops the scheduler takes :func:`own_cluster` instead.
    """
    wait_until_idle(_shared_cluster)
    yield _shared_cluster
    if getattr(request.node, "e2e_failed", False):
        print(_shared_cluster.tail(40))


@pytest.fixture
def own_cluster(request, tmp_path):
    """Like :func:`cluster`, but this test's alone: it may stop the scheduler."""
    cluster = _started(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.close()
        if getattr(request.node, "e2e_failed", False):
            print(cluster.tail(40))

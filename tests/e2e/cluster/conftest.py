"""A real Dask cluster on this machine, started as the README starts one: ``dask scheduler`` and ``dask worker``
processes (each in its own process group, so a worker's nanny and its worker process go together).

Small on purpose (this machine has 2 cores): 1 thread per worker, no dashboards. :meth:`Cluster.close` kills
everything it started; the fixture calls it whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client

from tests.e2e.conftest import REPO, wait_until

DASK = Path(sys.executable).with_name("dask")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    port: int = field(default_factory=free_port)
    scheduler: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    _started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}-{len(self._started)}.log", "wb")  # noqa: SIM115 - the process keeps it
        process = subprocess.Popen([str(DASK), *argv], cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1",
                                        "DASK_TEMPORARY_DIRECTORY": str(self.root / "scratch"), **(env or {})},
                                   start_new_session=True)
        log.close()
        self._started.append(process)
        return process

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                   "--no-dashboard"])

    def start_worker(self, name: str, memory: float | None = 2e9, *options: str,
                     env: dict[str, str] | None = None) -> None:
        """``dask worker`` with 1 thread and ``memory`` bytes as its "memory" resource, or none declared (None: a
        plain worker, as the README's own example starts one); ``options``: more of ``dask worker``'s."""
        resources = ["--resources", f"memory={memory:.0f}"] if memory is not None else []
        self.workers[name] = self._spawn(name, ["worker", self.address, "--name", name, "--host", "127.0.0.1",
                                                "--nthreads", "1", *resources, "--no-dashboard", *options], env)

    def stop_scheduler(self) -> None:
        """SIGTERM, as ``systemctl stop`` does. The workers end with it (they need a scheduler):
        :meth:`wait_workers_ended`."""
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGTERM)
        self.scheduler.wait(30)

    def wait_workers_ended(self) -> None:
        for process in self.workers.values():
            process.wait(30)

    def info(self, timeout: float = 5.0) -> dict:
        """The scheduler's view of its workers, asked by a client of our own."""
        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> dict:
        def ready():
            try:
                workers = self.info()
            except OSError:
                return None
            return workers if len(workers) >= count else None
        return wait_until(ready, timeout, f"{count} Dask workers at {self.address}", self.tail)

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """Both workers ("w1", "w2") connected and running no task (a worker killed by an earlier test is back)."""
        def idle():
            try:
                with Client(self.address, timeout=5, set_as_default=False) as client:
                    workers = client.scheduler_info(n_workers=-1)["workers"]
                    busy = [key for keys in client.processing().values() for key in keys]
            except OSError:
                return False
            return {w["name"] for w in workers.values()} == {"w1", "w2"} and not busy
        wait_until(idle, timeout, f"workers w1 and w2 idle at {self.address}", self.tail)

    def tail(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path.name}:\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def close(self) -> None:
        for process in self._started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self._started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


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
    _shared_cluster.wait_until_idle()
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

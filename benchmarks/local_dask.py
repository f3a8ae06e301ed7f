"""A Dask cluster of processes on this machine, started as docs/cluster.md starts one: ``dask scheduler`` and
``dask worker``, each in its own process group (so a worker's nanny and its worker process go together).

Used by the cluster tests (tests/e2e/cluster) and the soak night's ``--executor dask``. Small on purpose: 1 thread
per worker, no dashboards. :meth:`Cluster.close` kills everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

DASK = Path(sys.executable).with_name("dask")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    root: Path  # the processes' logs and scratch
    port: int = field(default_factory=free_port)
    prefix: list[str] = field(default_factory=list)  # a command that runs each process (``setpriv ...``)
    scheduler: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    _started: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}-{len(self._started)}.log", "wb")  # noqa: SIM115 - the process keeps it
        process = subprocess.Popen([*self.prefix, str(DASK), *argv], cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1",
                                        "DASK_TEMPORARY_DIRECTORY": str(self.root / "scratch"), **(env or {})})
        log.close()
        self._started.append(process)
        return process

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                   "--no-dashboard"])

    def start_worker(self, name: str, memory: float | None = 2e9, *options: str,
                     env: dict[str, str] | None = None) -> None:
        """``dask worker`` with 1 thread and ``memory`` bytes as its "memory" resource, or none declared (None: a
        plain worker, as docs/cluster.md starts one); ``options``: more of ``dask worker``'s."""
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

    def wait_for_workers(self, count: int, timeout: float = 180.0) -> dict:
        """The scheduler's view once ``count`` workers are connected; TimeoutError (with the logs' tails) after
        ``timeout`` s (a safety net for loaded machines: workers start in seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                workers = self.info()
                if len(workers) >= count:
                    return workers
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Dask workers at {self.address} after {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.2)

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

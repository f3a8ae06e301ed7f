"""The daemon's connection to a Dask cluster: kept up by a background thread, read as snapshots.

:class:`ClusterConnection` connects to the scheduler, looks at its workers twice a second, logs who joins and
leaves (and lets each one that joins take stacks: :func:`~watcher.service.dask_task.take_stacks`), and, when
the scheduler goes away (stopped, crashed, the network down), drops the client and connects anew until it is
back -- a restarted scheduler knows nothing of the old client, its tasks or its subscriptions.
Everything that can block on the network happens in that thread; the daemon's loop reads :meth:`connected`,
a snapshot replaced whole, and never waits.

The workers report the start of each stack they run on the event topic :data:`TOPIC`; those reports come out
of :attr:`ClusterConnection.starts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

import structlog
from distributed import Client

from watcher import __version__
from watcher.service.dask_task import TOPIC, take_stacks

log = structlog.get_logger("focus-watcher")

CONNECT_TIMEOUT = 10.0  # s: one attempt to reach the scheduler
_REFRESH = 0.5  # s between two looks at the cluster's workers
_RETRY_CONNECT = 2.0  # s between two connection attempts while the scheduler is unreachable
KEY_PREFIX = "stack:"  # our task keys: stack:<stack id as shown (watcher.names.display)>:<token>


@dataclass(frozen=True)
class ClusterWorker:
    address: str
    name: str
    host: str
    threads: int
    memory: int | None  # bytes of its "memory" resource (declared, or given it on joining); None: takes no stack
    memory_limit: int | None  # bytes: where its nanny restarts it (--memory-limit); None: no limit


@dataclass(frozen=True)
class Cluster:
    """The connected cluster as last seen."""

    client: Client
    scheduler_id: str
    workers: tuple[ClusterWorker, ...]

    @property
    def threads(self) -> int:
        """Task slots of the workers that take stacks (those with a memory resource)."""
        return sum(w.threads for w in self.workers if w.memory is not None)

    @property
    def largest_memory(self) -> int:
        return max((w.memory or 0 for w in self.workers), default=0)

    def threads_by_host(self) -> dict[str, int]:
        hosts: dict[str, int] = {}
        for worker in self.workers:
            hosts[worker.host] = hosts.get(worker.host, 0) + worker.threads
        return hosts


class ClusterConnection:
    """The connection to the scheduler at ``address``, from construction until :meth:`close`."""

    def __init__(self, address: str, wake: threading.Event) -> None:
        self.address = address
        self.starts: queue.SimpleQueue[dict] = queue.SimpleQueue()  # the workers' start reports
        self._wake = wake  # set whenever something arrives for the daemon's loop
        self._cluster: Cluster | None = None
        self.error: str | None = None  # why the last attempt to connect failed
        self._closing = threading.Event()
        _route_dask_logs()
        self._thread = threading.Thread(target=self._keep_up, name="focus-watcher-cluster", daemon=True)
        self._thread.start()

    def connected(self) -> Cluster | None:
        """The cluster, if connected now."""
        cluster = self._cluster
        return cluster if cluster is not None and cluster.client.status == "running" else None

    def close(self) -> None:
        self._closing.set()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            _close(cluster.client, timeout=5)

    def _keep_up(self) -> None:
        unreachable_logged = False
        while not self._closing.is_set():
            try:
                client = Client(self.address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError: not there (yet)
                self.error = str(exc) or type(exc).__name__
                if not unreachable_logged:
                    log.error("cluster.unreachable", scheduler=self.address, error=self.error,
                              retry_every=_RETRY_CONNECT)
                    unreachable_logged = True
                self._closing.wait(_RETRY_CONNECT)
                continue
            unreachable_logged = False
            try:
                while not self._closing.is_set():
                    self._look(client)
                    self._closing.wait(_REFRESH)
            except Exception as exc:  # noqa: BLE001 - the scheduler went away: start over with a new client
                self._cluster = None
                if not self._closing.is_set():  # (closed by the daemon: not a loss)
                    log.error("cluster.disconnected", scheduler=self.address, error=str(exc) or type(exc).__name__)
                    self._wake.set()
                _close(client, timeout=2)

    def _look(self, client: Client) -> None:
        if client.status != "running":
            raise ConnectionError("the connection to the scheduler was lost")
        info = client.scheduler_info(n_workers=-1)
        workers = tuple(sorted((cluster_worker(address, entry) for address, entry in info.get("workers", {}).items()),
                               key=lambda w: w.name))
        previous = self._cluster
        if previous is None or previous.client is not client or previous.scheduler_id != info["id"]:
            client.subscribe_topic(TOPIC, self._on_start)  # (again after a scheduler restart: it forgot us)
            log.info("cluster.connected", scheduler=self.address, workers=len(workers),
                     threads=sum(w.threads for w in workers))
            previous = Cluster(client, info["id"], ())
        self._cluster = Cluster(client, info["id"], workers)
        self._wake.set()
        before = {w.address: w for w in previous.workers}
        for worker in workers:
            if worker.address not in before:
                _welcome(client, worker)
        for address in before.keys() - {w.address for w in workers}:
            log.warning("cluster.worker_left", worker=before[address].name, host=before[address].host)

    def _on_start(self, event: tuple[float, dict]) -> None:
        """Event handler (the client's thread): a worker started a run of a stack."""
        _timestamp, message = event
        if isinstance(message, dict):
            self.starts.put(message)
            self._wake.set()


def describe_cluster(address: str, timeout: float = CONNECT_TIMEOUT) -> dict:
    """For ``status``: the cluster's workers and the stacks each one runs now (from the scheduler alone: no daemon
    needed, and a worker that does not answer -- swapping, stopped -- cannot hang ``status``). The daemon sends no
    more stacks than the workers have threads, so what the scheduler has given a worker is what it runs.
    ``{"scheduler", "error", "workers": [{"name", "address", "host", "threads", "memory_mb", "memory_limit_mb",
    "stacks"}]}`` (``memory_mb``: its memory resource, declared or given it by the daemon);
    ``error`` says why there are no workers to show (the scheduler unreachable)."""
    try:
        with Client(address, timeout=timeout, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)
            running = client.processing()  # {worker address: [keys the scheduler has given it]}
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError: report it, do not fail status
        return {"scheduler": address, "error": str(exc) or type(exc).__name__, "workers": []}
    workers = []
    for worker in sorted((cluster_worker(*item) for item in info.get("workers", {}).items()), key=lambda w: w.name):
        stacks = sorted(filter(None, (stack_of(key) for key in running.get(worker.address, {}))))
        workers.append({"name": worker.name, "address": worker.address, "host": worker.host,
                        "threads": worker.threads, "memory_mb": None if worker.memory is None else worker.memory >> 20,
                        "memory_limit_mb": None if worker.memory_limit is None else worker.memory_limit >> 20,
                        "stacks": stacks})
    return {"scheduler": address, "error": None, "workers": workers}


def stack_of(key: object) -> str | None:
    """The stack id (as shown) in one of our task keys, None for anyone else's task."""
    if isinstance(key, str) and key.startswith(KEY_PREFIX):
        return key[len(KEY_PREFIX):].rpartition(":")[0]
    return None


def cluster_worker(address: str, entry: dict) -> ClusterWorker:
    """A worker as the scheduler describes it (an entry of ``scheduler_info()["workers"]``)."""
    memory = (entry.get("resources") or {}).get("memory")
    return ClusterWorker(address=address, name=str(entry.get("name", address)), host=str(entry.get("host", "")),
                         threads=int(entry.get("nthreads", 1)), memory=None if memory is None else int(memory),
                         memory_limit=entry.get("memory_limit") or None)


def _welcome(client: Client, worker: ClusterWorker) -> None:
    """A worker joined: let it take stacks (:func:`~watcher.service.dask_task.take_stacks` gives a plain worker
    its memory resource), say so, and warn about one that cannot run our tasks as they are sent: focus-watcher
    missing (it takes no stack), or another version (a job's fields may differ; its stacks would fail there)."""
    try:
        facts = client.run(take_stacks, workers=[worker.address]).get(worker.address)
    except Exception as exc:  # ModuleNotFoundError on the worker, it left meanwhile, or our connection went
        if client.status != "running":  # our connection went (the scheduler stopped, or the daemon is stopping)
            raise ConnectionError("the connection to the scheduler was lost") from exc
        log.info("cluster.worker_joined", worker=worker.name, host=worker.host, threads=worker.threads,
                 memory_mb=None if worker.memory is None else worker.memory >> 20, memory_from=None)
        log.error("cluster.worker_unusable", worker=worker.name, host=worker.host,
                  error=f"cannot run focus-watcher there ({type(exc).__name__}: {exc}): install "
                        f'"focus-watcher[dask]=={__version__}" in the worker\'s environment')
        return
    log.info("cluster.worker_joined", worker=worker.name, host=worker.host, threads=worker.threads,
             memory_mb=facts["memory"] >> 20, memory_from=facts["memory_from"])
    if facts["version"] != __version__:
        log.warning("cluster.worker_unusable", worker=worker.name, host=worker.host,
                    error=f"runs focus-watcher {facts['version']}, the daemon {__version__}: install the same version")


def _close(client: Client, timeout: float) -> None:
    with contextlib.suppress(Exception):  # closing a client whose scheduler is gone may complain; it is closed
        client.close(timeout=timeout)


def _route_dask_logs() -> None:
    """Dask's own log lines go through ours (JSON lines), warnings and worse only: its INFO chatter about
    connections is what our cluster.* events already say. The coroutines it cancels when we close a client
    whose scheduler is gone are logged as errors without a message: dropped, that is us closing it."""
    dask_log = logging.getLogger("distributed")
    for handler in dask_log.handlers[:]:
        dask_log.removeHandler(handler)
    dask_log.propagate = True
    dask_log.setLevel(logging.WARNING)
    logging.getLogger("distributed.client").addFilter(_not_a_cancellation)  # (filters are not inherited)


def _not_a_cancellation(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))

"""``doctor``'s look at the Dask cluster (``workers.executor = "dask"``): whether the daemon can reach it, the
workers it has, whether they run this focus-watcher, and whether one of them can hold a stack of the frames to
expect. It asks what the daemon asks: the scheduler's list of workers, and each worker what it runs and what it
can hold (:func:`~watcher.service.dask_task.worker_facts`, which does not change the worker). Each answer is
awaited for a few seconds at most: ``doctor`` never hangs on the network.
"""

from __future__ import annotations

from distributed import Client

from watcher import __version__
from watcher.config import Settings
from watcher.doctor import FAIL, MIB, OK, SKIP, WARN, Finding, FrameSample, format_size
from watcher.service.dask_cluster import ClusterWorker, cluster_worker
from watcher.service.dask_task import worker_facts
from watcher.stacking.peak_memory import estimate_peak_bytes

_TIMEOUT = 5.0  # s: for the scheduler to answer, and then for the workers
_OPENSCAN_FRAME = (4656, 3496, 8)  # 16 MP, OpenScan's IMX519 camera: the frames to expect before a scan is there
_LISTED = 4  # workers named in a line; the rest are counted


def check_cluster(settings: Settings, frames: list[FrameSample]) -> list[Finding]:
    """The ``cluster``, ``cluster versions`` and ``cluster memory`` findings."""
    address = settings.workers.dask_scheduler
    try:
        with Client(address, timeout=_TIMEOUT, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)
            workers = sorted((cluster_worker(*item) for item in info.get("workers", {}).items()),
                             key=lambda w: w.name)
            facts = client.run(worker_facts, on_error="return", callback_timeout=_TIMEOUT) if workers else {}
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError: not there, or not answering
        skipped = "the scheduler is unreachable"
        return [Finding("cluster", FAIL, f"{address}: unreachable within {_TIMEOUT:.0f} s "
                        f"({str(exc) or type(exc).__name__})",
                        "start it (dask scheduler), or set workers.dask_scheduler to where it runs; the daemon's "
                        "unit needs the network: systemd/focus-watcher.service.d/dask.conf (docs/cluster.md)"),
                Finding("cluster versions", SKIP, skipped), Finding("cluster memory", SKIP, skipped)]
    if not workers:
        skipped = "no worker connected"
        return [Finding("cluster", FAIL, f"{address}: reachable, but no worker is connected: stacks would wait",
                        f"start one on each machine that stacks: dask worker {address} "
                        "(systemd/focus-watcher-worker.service)"),
                Finding("cluster versions", SKIP, skipped), Finding("cluster memory", SKIP, skipped)]
    listed = "; ".join(_describe(w) for w in workers[:_LISTED])
    more = f"; and {len(workers) - _LISTED} more" if len(workers) > _LISTED else ""
    summary = Finding("cluster", OK, f"{address}: {len(workers)} workers, {sum(w.threads for w in workers)} "
                      f"threads ({listed}{more})")
    usable = {w.address: answer for w in workers
              if isinstance(answer := facts.get(w.address), dict) and answer["version"] == __version__}
    return [summary, _versions(workers, facts), _memory(settings, frames, workers, usable)]


def _describe(worker: ClusterWorker) -> str:
    limit = "no memory limit" if worker.memory_limit is None else f"memory limit {format_size(worker.memory_limit)}"
    return f"{worker.name} on {worker.host}: {worker.threads} thread{'s' * (worker.threads != 1)}, {limit}"


def _versions(workers: list[ClusterWorker], facts: dict) -> Finding:
    """Every worker runs this focus-watcher (another version's stacks would fail there, or be read wrong)."""
    name, wrong = "cluster versions", []
    for worker in workers:
        answer = facts.get(worker.address)
        if answer is None:
            wrong.append(f"{worker.name} did not answer")
        elif not isinstance(answer, dict):  # the exception it raised
            wrong.append(f"{worker.name} cannot run focus-watcher ({type(answer).__name__}: {answer})")
        elif answer["version"] != __version__:
            wrong.append(f"{worker.name} runs focus-watcher {answer['version']}")
    if wrong:
        return Finding(name, FAIL, f"{'; '.join(wrong)}; the daemon runs {__version__}",
                       f'install "focus-watcher[dask]=={__version__}" in each worker\'s environment, then restart '
                       "the workers (systemctl restart focus-watcher-worker)")
    return Finding(name, OK, f"every worker runs focus-watcher {__version__}")


def _memory(settings: Settings, frames: list[FrameSample], workers: list[ClusterWorker],
            usable: dict[str, dict]) -> Finding:
    """Can a worker that runs this focus-watcher (``usable``) hold one stack of the largest frames in the hot
    folder (before a scan: of 16 MP frames)?"""
    name = "cluster memory"
    if frames:
        big = max(frames, key=lambda f: (f.info.pixels, f.info.bits))
        width, height, bits, which = big.info.width, big.info.height, big.info.bits, "the largest frames here"
    else:
        (width, height, bits), which = _OPENSCAN_FRAME, "16 MP frames (OpenScan's camera; no frames here yet)"
    pixels = min(width * height, int(settings.stacking.max_megapixels * 1e6))  # larger ones are refused anyway
    need = estimate_peak_bytes(pixels, 1, bits, settings.stacking)
    holds = [(worker.name, usable[worker.address]["memory"], usable[worker.address]["memory_from"])
             for worker in workers if worker.address in usable]
    fitting = [held for held in holds if held[1] >= need]
    detail = (f"a stack of {which}, {width}x{height} {bits}-bit, needs ~{need // MIB + 1} MiB: "
              f"{len(fitting)} of {len(workers)} workers hold one")
    offers = "; ".join(f"{worker} holds {format_size(memory)} ({_FROM[source]})" for worker, memory, source in
                       holds[:_LISTED])
    detail += f" ({offers})" if offers else ""
    if fitting:
        return Finding(name, OK, detail)
    fix = (f"a worker with more memory: dask worker --memory-limit {need * 100 // 95 // MIB + 1}MiB or more (or "
           f"--resources memory={need}); or a cheaper stacking.blend (docs/engine.md, memory per frame size)")
    # Sized from frames that are here, such stacks fail; from the usual camera's, they may not come.
    return Finding(name, FAIL if frames else WARN, detail + ": such stacks would fail after "
                   f"workers.dask_wait_for_worker_seconds = {settings.workers.dask_wait_for_worker_seconds:g}", fix)


_FROM = {"resource": "its memory resource", "memory limit": "from its memory limit",
         "machine": "no memory limit: from Dask's default for its machine"}

"""Stacks per minute and per-stack overhead: the local worker pool vs. a Dask cluster of 1 and 2 workers.

    uv run python -m benchmarks.cluster [--stacks 12] [--frames 5] [--repeat 5]

Each executor is driven the way the daemon drives it (submit while it has room, collect what finished), with the
same jobs: synthetic stacks (benchmarks/synthetic.py, cached in benchmarks/out/) of ``--frames`` JPEG frames.

- **stacks/min**: ``--stacks`` 1 MP stacks, the executor kept full, from the first submission to the last result
  (and the median time the engine itself took per stack, with the executor's OpenCV threads: cores / slots).
- **overhead**: one stack at a time (``--repeat`` times at 1 MP, twice at 16 MP), the median of submit -> result
  minus the engine's own time (its record's ``total`` + ``save``): process start for the local pool; scheduling,
  sending the job, fetching the result bytes and writing them atomically for Dask.

The clusters are ``distributed.LocalCluster`` with worker processes (nanny and all) of 1 thread each on this
machine, so "2 workers" is the same 2 cores as "local pool, 2 processes": the table shows what the cluster costs,
not what more machines bring (that is ``stacks/min x machines``, less the overhead).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.speed import OUT
from watcher.config import LoggingSettings, Settings, StackingSettings
from watcher.log import configure_logging
from watcher.service.executor import Executor, Job, JobSpec, OutcomeKind
from watcher.service.pool import WorkerPool
from watcher.stacking.peak_memory import estimate_peak_bytes
from watcher.stacking.sources import FrameSource

SIZES = {"1 MP": (1152, 864), "16 MP": (4656, 3496)}


def cached_stack(label: str, frames: int) -> list[Path]:
    width, height = SIZES[label]
    folder = OUT / f"stack-{width}x{height}-{frames}"
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) == frames:
        return paths
    from benchmarks.synthetic import make_focal_stack, write_stack

    print(f"rendering a {label} x {frames} synthetic stack into {folder} (once) ...", file=sys.stderr, flush=True)
    return write_stack(make_focal_stack("coffee_tilt", size=(width, height), n_frames=frames), folder)


def job(frames: list[Path], output: Path, workers: int) -> Job:
    settings = StackingSettings()
    sources = tuple(FrameSource(p.name, p, None, (p.stat().st_size, p.stat().st_mtime_ns)) for p in frames)
    width, height = SIZES["16 MP"] if "4656" in frames[0].parent.name else SIZES["1 MP"]
    estimate = estimate_peak_bytes(width, height, 8, settings)
    spec = JobSpec(stack=output.stem, sources=sources, image=output, depthmap=None, settings=settings,
                   memory_limit_bytes=estimate + estimate // 4, threads=max(1, (os.cpu_count() or 1) // workers),
                   daemon_pid=os.getpid())
    return Job(spec, estimate)


def run(executor: Executor, jobs: list[Job]) -> list[tuple[float, float]]:
    """Run ``jobs`` as the daemon would; (submit -> result seconds, engine seconds) per job."""
    pending, done = list(jobs), []
    while pending or executor.running:
        while pending and executor.has_room_for(pending[0].estimate_bytes):
            executor.submit(pending.pop(0))
        for finished in executor.collect(timeout=0.05):
            if finished.outcome.kind != OutcomeKind.OK:
                raise RuntimeError(f"{finished.job.spec.stack}: {finished.outcome.kind} {finished.outcome.message}")
            timings = finished.outcome.record["timings"]
            done.append((finished.seconds, timings["total"] + timings["save"]))
    return done


@contextmanager
def local_pool(workers: int):
    yield WorkerPool(workers, 16 << 30, 600)


@contextmanager
def dask_cluster(workers: int):
    from distributed import LocalCluster

    from watcher.service.dask_executor import DaskExecutor

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the in-process scheduler's chatter
    with tempfile.TemporaryDirectory() as scratch, \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, resources={"memory": 8e9},
                         dashboard_address=None, local_directory=scratch) as cluster:
        executor = DaskExecutor(Settings(workers={"executor": "dask", "dask_scheduler": cluster.scheduler_address}))
        deadline = time.monotonic() + 60
        while executor.workers < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.1)
        try:
            yield executor
        finally:
            executor.shutdown(0)


def measure(name: str, start, workers: int, args: argparse.Namespace, out: Path) -> list[str]:
    small, big = cached_stack("1 MP", args.frames), cached_stack("16 MP", args.frames)
    with start(workers) as executor:
        run(executor, [job(small, out / "warm-up.jpg", workers)])  # imports on the workers, first fork
        began = time.monotonic()
        times = run(executor, [job(small, out / f"t{i}.jpg", workers) for i in range(args.stacks)])
        per_minute = args.stacks / (time.monotonic() - began) * 60
        engine = statistics.median(engine for _total, engine in times)
        overheads = []
        for frames, repeat in ((small, args.repeat), (big, 2)):
            times = [run(executor, [job(frames, out / f"o{i}.jpg", workers)])[0] for i in range(repeat)]
            overheads.append(statistics.median(total - engine for total, engine in times))
    print(f"  {name}: {per_minute:.1f} stacks/min", file=sys.stderr, flush=True)
    return [name, f"{per_minute:.1f}", f"{engine:.2f} s", f"{overheads[0] * 1000:.0f} ms",
            f"{overheads[1] * 1000:.0f} ms"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=12)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    configure_logging(LoggingSettings(level="warning"), None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows.append(measure("local pool, 2 processes", local_pool, 2, args, out))
        rows.append(measure("Dask, 1 worker x 1 thread", dask_cluster, 1, args, out))
        rows.append(measure("Dask, 2 workers x 1 thread", dask_cluster, 2, args, out))
    header = ["executor (this machine, 2 cores)", f"stacks/min (1 MP x {args.frames})", "engine s/stack",
              "overhead/stack, 1 MP", "overhead/stack, 16 MP"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

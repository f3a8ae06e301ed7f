"""The worker pool with real worker processes: results, memory limits, deaths, timeouts, the budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest

from tests.conftest import REPO
from watcher.config import StackingSettings
from watcher.service.executor import Job, JobSpec
from watcher.service.pool import WorkerPool
from watcher.stacking.sources import FrameSource


@pytest.fixture
def frames(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for k in range(3):
        image = cv2.GaussianBlur(rng.integers(0, 256, (1200, 1600, 3), np.uint8), (0, 0), 0.5 + k)
        paths.append(tmp_path / f"f{k}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def job(frames, out, memory=2 << 30, estimate=100 << 20, threads=1) -> Job:
    spec = JobSpec(stack="s", sources=tuple(FrameSource.of(p) for p in frames), image=out, depthmap=None,
                   settings=StackingSettings(), memory_limit_bytes=memory, threads=threads, daemon_pid=os.getpid())
    return Job(spec, estimate)


def run_to_end(pool: WorkerPool, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = pool.collect(timeout=0.2)
        if finished:
            return finished
    raise AssertionError("no worker finished")


def test_a_stack_runs_in_a_worker_and_reports_its_record(frames, tmp_path):
    pool = WorkerPool(workers=1, budget_bytes=1 << 30, timeout_seconds=60)
    pool.submit(job(frames, tmp_path / "out.jpg"))
    [finished] = run_to_end(pool)
    assert finished.outcome.kind == "ok" and finished.outcome.record["width"] == 1600
    assert finished.outcome.record["worker_peak_rss_mb"] > 10
    assert cv2.imread(str(tmp_path / "out.jpg")).shape == (1200, 1600, 3)


def test_a_stack_over_its_memory_limit_fails_alone_with_a_clear_message(frames, tmp_path):
    pool = WorkerPool(workers=1, budget_bytes=1 << 30, timeout_seconds=60)
    pool.submit(job(frames, tmp_path / "out.jpg", memory=20 << 20))  # far below what 1600x1200 needs
    [finished] = run_to_end(pool)
    assert finished.outcome.kind == "failed" and finished.outcome.message.startswith("out of memory")
    assert not (tmp_path / "out.jpg").exists()


def test_a_killed_worker_is_reported_as_died(frames, tmp_path):
    pool = WorkerPool(workers=1, budget_bytes=1 << 30, timeout_seconds=60)
    pool.submit(job(frames * 4, tmp_path / "out.jpg"))
    os.kill(pool._running[0].process.pid, signal.SIGKILL)
    [finished] = run_to_end(pool)
    assert finished.outcome.kind == "died" and "SIGKILL" in finished.outcome.message


def test_a_stack_past_its_timeout_is_killed(frames, tmp_path):
    pool = WorkerPool(workers=1, budget_bytes=1 << 30, timeout_seconds=0.3)
    pool.submit(job(frames * 4, tmp_path / "out.jpg"))
    [finished] = run_to_end(pool)
    assert finished.outcome.kind == "timeout" and "timed out" in finished.outcome.message
    assert pool.running == 0


def test_the_budget_admits_stacks_while_their_estimates_fit(frames, tmp_path):
    pool = WorkerPool(workers=3, budget_bytes=500 << 20, timeout_seconds=60)
    assert pool.has_room_for(900 << 20)  # an idle pool always takes one stack
    pool.submit(job(frames, tmp_path / "a.jpg", estimate=300 << 20))
    assert pool.has_room_for(200 << 20) and not pool.has_room_for(201 << 20)
    pool.submit(job(frames, tmp_path / "b.jpg", estimate=200 << 20))
    assert not pool.has_room_for(1)  # budget full (and a third worker would be free)
    done = []
    while len(done) < 2:
        done += run_to_end(pool)
    assert [f.outcome.kind for f in done] == ["ok", "ok"]


@pytest.mark.parametrize("blend", ["guided_weighted", "laplacian_pyramid"])
def test_opencvs_thread_count_does_not_change_a_single_byte(frames, tmp_path, blend):
    """A local worker runs OpenCV with cores // workers threads, a cluster worker with its host's share: the
    same stack must come out byte-identical whatever that number is (the engine is deterministic)."""
    pool = WorkerPool(workers=1, budget_bytes=1 << 30, timeout_seconds=60)
    outputs = []
    for threads in (1, 4):
        spec = job(frames, tmp_path / f"out-{threads}.jpg", threads=threads).spec
        pool.submit(Job(replace(spec, settings=StackingSettings(blend=blend)), 100 << 20))
        [finished] = run_to_end(pool)
        assert finished.outcome.kind == "ok"
        outputs.append((tmp_path / f"out-{threads}.jpg").read_bytes())
    assert outputs[0] == outputs[1]


def test_the_daemon_starts_without_the_engine():
    """The daemon names frames, reads their headers and estimates a stack's memory without numpy or OpenCV; only
    the workers, forked from a forkserver that has them loaded, stack. Measured (x86_64): importing the daemon took
    0.6-0.7 s of CPU and 69 MiB resident with them, 0.24-0.31 s and 39 MiB without; a Pi starts that much sooner
    and keeps 30 MiB more for the workers."""
    code = ("import sys, watcher.cli, watcher.service.daemon, watcher.service.status\n"
            "print(sorted(m for m in ('cv2', 'numpy', 'watcher.stacking.pipeline') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]", "the daemon's process loads the engine again"

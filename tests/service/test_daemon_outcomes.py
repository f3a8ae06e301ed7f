"""The daemon carries out the policy: a real Daemon on real folders, in this process, with an executor that
returns scripted outcomes instead of stacking (the executor seam), and the tracker's clock stepped by hand.
No worker processes, no sleeps; what is checked is what the daemon leaves in the results folder and its log."""

from __future__ import annotations

import json
from collections import defaultdict, deque

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from watcher.config import Settings
from watcher.service.daemon import Daemon
from watcher.service.executor import Finished, Job, Outcome, OutcomeKind, WorkerId

K = OutcomeKind
HOLD = None  # in a script: this run does not end by itself


class ScriptedExecutor:
    """An :class:`~watcher.service.executor.Executor` whose runs end as scripted, per stack, in order."""

    workers = 2
    budget = 1 << 40

    def __init__(self, script: dict[str, list[OutcomeKind | None]]) -> None:
        self.script = {stack: deque(kinds) for stack, kinds in script.items()}
        self.runs: dict[str, int] = defaultdict(int)
        self._running: list[Job] = []

    @property
    def running(self) -> int:
        return len(self._running)

    def has_room_for(self, estimate_bytes: int) -> bool:
        return len(self._running) < self.workers

    def submit(self, job: Job) -> None:
        self._running.append(job)

    def collect(self, timeout: float = 0.0) -> list[Finished]:
        finished = []
        for job in list(self._running):
            if self.script[job.spec.stack][0] is not HOLD:
                self._running.remove(job)
                finished.append(self._end(job))
        return finished

    def shutdown(self, grace_seconds: float) -> list[Finished]:
        finished = [Finished(job, Outcome(K.DIED, "stopped: the daemon shut down"), 0.0) for job in self._running]
        self._running = []
        return finished

    def unavailable(self) -> str | None:
        return None

    def _end(self, job: Job) -> Finished:
        stack = job.spec.stack
        self.runs[stack] += 1
        kind = self.script[stack].popleft()
        worker = WorkerId("rig", f"scripted worker {self.runs[stack]}")
        if kind is K.OK:
            job.spec.image.write_bytes(b"\xff\xd8 a stacked image \xff\xd9")  # what a worker leaves
            return Finished(job, Outcome(K.OK, record={"frames": []}, worker=worker), 0.1)
        return Finished(job, Outcome(kind, f"scripted {kind}", worker=worker), 0.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(tmp_path):
    hot = tmp_path / "hot"
    frame = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    for stack in ("a", "b"):
        for k in range(2):
            (hot / "scan").mkdir(parents=True, exist_ok=True)
            (hot / "scan" / f"{stack}_f{k}.jpg").write_bytes(frame)
    return tmp_path


def daemon_with(rig, script, retries=1) -> tuple[Daemon, ScriptedExecutor, Clock]:
    settings = Settings(hot_folder=rig / "hot", results_folder=rig / "results",
                        naming={"stack_size": 2}, completeness={"settle_seconds": 0.0},
                        workers={"retries": retries})
    executor = ScriptedExecutor(script)
    daemon = Daemon(settings, once=True, executor=executor)
    clock = Clock()
    daemon.tracker.clock = clock
    daemon.start()
    return daemon, executor, clock


def steps(daemon: Daemon, passes: int = 20) -> None:
    for _ in range(passes):
        daemon.step(wait=0.0)


def record(rig, stack: str) -> dict | None:
    path = rig / "results" / "scan" / f"{stack}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_dead_worker_is_retried_once_then_the_stack_is_recorded(rig):
    with capture_logs() as logs:
        daemon, executor, _ = daemon_with(rig, {"scan/a": [K.DIED, K.OK], "scan/b": [K.DIED, K.DIED]})
        steps(daemon)
        daemon.shutdown()
    daemon.lock.release()
    assert record(rig, "a")["status"] == "ok" and record(rig, "a")["attempts"] == 2
    failed = record(rig, "b")
    assert failed["status"] == "failed" and failed["error"] == "scripted died (2 attempts)"
    assert failed["worker"]["name"] == "scripted worker 2"  # the one it failed on: the last
    assert record(rig, "a")["worker"]["name"] == "scripted worker 2"
    assert executor.runs == {"scan/a": 2, "scan/b": 2}
    assert [e["stack"] for e in logs if e["event"] == "stack.retry"] == ["scan/a", "scan/b"]


def test_an_unreadable_input_waits_out_its_backoff_then_runs_again(rig):
    with capture_logs() as logs:
        daemon, executor, clock = daemon_with(rig, {"scan/a": [K.UNAVAILABLE, K.OK], "scan/b": [K.OK]})
        steps(daemon)
        assert record(rig, "a") is None and record(rig, "b")["status"] == "ok"
        [waited] = [e for e in logs if e["event"] == "inputs.unavailable"]
        assert waited["stack"] == "scan/a" and waited["retry_in"] >= 1.0 and waited["log_level"] == "warning"
        steps(daemon)
        assert executor.runs["scan/a"] == 1, "tried again before its backoff"
        clock.now += waited["retry_in"]
        steps(daemon)
        daemon.shutdown()
    daemon.lock.release()
    assert record(rig, "a")["status"] == "ok" and executor.runs["scan/a"] == 2


def test_content_errors_are_recorded_at_once_and_never_retried(rig):
    daemon, executor, _ = daemon_with(rig, {"scan/a": [K.FAILED], "scan/b": [K.TIMEOUT]}, retries=3)
    steps(daemon)
    daemon.shutdown()
    daemon.lock.release()
    assert record(rig, "a")["error"] == "scripted failed" and record(rig, "b")["error"] == "scripted timeout"
    assert executor.runs == {"scan/a": 1, "scan/b": 1}
    # Who ran it, in a failed record as in an ok one.
    assert record(rig, "a")["worker"] == record(rig, "b")["worker"] == {"host": "rig", "name": "scripted worker 1"}


def test_a_stack_the_daemon_stops_is_left_for_the_next_start(rig):
    daemon, executor, _ = daemon_with(rig, {"scan/a": [HOLD], "scan/b": [HOLD]})
    steps(daemon, 5)
    assert executor.running == 2
    daemon.stopping = True
    daemon.shutdown()
    daemon.lock.release()
    assert record(rig, "a") is None and record(rig, "b") is None

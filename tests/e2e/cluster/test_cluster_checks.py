"""Before any stack runs: ``once`` against a cluster that is not there."""

from __future__ import annotations

import json

from tests.e2e.cluster.conftest import free_port
from tests.e2e.conftest import write_openscan3_stacks


def test_once_against_no_scheduler_gives_up_after_the_wait_with_one_line_and_marks_nothing_failed(rig, frames):
    """The environment, not the stacks: exit 1 with the reason on stderr and in the log, no record written,
    and the next ``once`` (against a cluster that is there) finds every stack still to do."""
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    config = rig.config(workers={"executor": "dask", "dask_scheduler": address, "dask_wait_for_worker_seconds": 2.0})
    stacks = write_openscan3_stacks(rig.hot, "owl", 1, {p: frames.stack(3, offset=p) for p in range(2)},
                                    status="completed")
    once = rig.start(config, command="once")
    assert once.wait_exit(60) == 1
    [gave_up] = once.events("once.gave_up")
    assert gave_up["error"].startswith(f"the Dask scheduler at {address} was unreachable for 2 s ("), gave_up
    assert gave_up["error"].endswith("nothing marked failed, the stacks are left for the next run"), gave_up
    lines = once.stderr_path.read_text().splitlines()
    assert lines[-1] == f"focus-watcher: {gave_up['error']}"  # the one line that is not JSON
    assert not any(line.startswith("focus-watcher:") for line in lines[:-1])
    assert all(json.loads(line) for line in lines[:-1])
    assert not once.events("stack.failed")
    assert rig.records() == {}
    assert once.events("daemon.stopped")[0]["failed"] == 0
    assert {e["stack"] for e in once.events("stack.ready")} == set(stacks)


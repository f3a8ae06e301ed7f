"""The path mapping for cluster workers that mount the share elsewhere (``workers.dask_path_map``)."""

from __future__ import annotations

from pathlib import Path

from watcher.service.dask_cluster import stack_of
from watcher.service.dask_executor import worker_path

MAP = {"/srv/scans": "/mnt/nas/scans", "/srv/scans/rig2": "/elsewhere", "/data/": "/d"}


def test_a_prefix_is_replaced_by_whole_path_components_first_match_wins():
    assert worker_path(Path("/srv/scans/rig1/owl/scan01_000_fs00.jpg"), MAP) == \
        Path("/mnt/nas/scans/rig1/owl/scan01_000_fs00.jpg")
    assert worker_path(Path("/srv/scans/rig2/a.jpg"), MAP) == Path("/mnt/nas/scans/rig2/a.jpg")
    assert worker_path(Path("/data/x/a.jpg"), MAP) == Path("/d/x/a.jpg")  # a trailing slash is no matter


def test_paths_outside_every_prefix_are_left_alone():
    assert worker_path(Path("/srv/scansX/a.jpg"), MAP) == Path("/srv/scansX/a.jpg")  # not a component match
    assert worker_path(Path("/other/a.jpg"), MAP) == Path("/other/a.jpg")
    assert worker_path(Path("/srv/scans/a.jpg"), {}) == Path("/srv/scans/a.jpg")


def test_the_stack_of_a_task_key_and_nobody_elses():
    assert stack_of("stack:owl/scan01/scan01_003:0123456789ab") == "owl/scan01/scan01_003"
    assert stack_of("stack:a:b:c:0123456789ab") == "a:b:c"
    assert stack_of("inc-1234") is None and stack_of(("x", 0)) is None

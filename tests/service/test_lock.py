"""One owner per results folder."""

from __future__ import annotations

import pytest

from watcher.service.lock import PID_NAME, ResultsBusy, ResultsLock


def test_the_results_folder_has_one_owner_until_it_lets_go(tmp_path):
    first = ResultsLock(tmp_path).acquire()
    assert (tmp_path / PID_NAME).read_text().strip().isdigit()
    with pytest.raises(ResultsBusy, match="is in use by focus-watcher"):
        ResultsLock(tmp_path).acquire()
    first.release()
    ResultsLock(tmp_path).acquire().release()


def test_a_read_only_results_folder_can_still_be_locked(tmp_path):
    """A daemon restarted while its results folder is read-only or full must start (and wait), not crash."""
    tmp_path.chmod(0o555)
    try:
        lock = ResultsLock(tmp_path).acquire()  # (as root the pid file is written anyway)
        with pytest.raises(ResultsBusy):
            ResultsLock(tmp_path).acquire()
        lock.release()
    finally:
        tmp_path.chmod(0o755)

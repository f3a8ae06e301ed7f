"""One owner per results folder."""

from __future__ import annotations

import os

import pytest

from watcher.service.lock import ResultsBusy, ResultsLock


def test_the_results_folder_has_one_owner_until_it_lets_go(tmp_path):
    first = ResultsLock(tmp_path).acquire()
    with pytest.raises(ResultsBusy, match="is in use by focus-watcher"):
        ResultsLock(tmp_path).acquire()
    first.release()
    ResultsLock(tmp_path).acquire().release()


def test_the_pid_file_is_in_our_own_folder_never_among_the_projects(tmp_path):
    """With the openscan layout the results folder is OpenScan3's projects folder: the pid goes into
    ``.focus-watcher/`` (no project can have that name), and an earlier build's ``.focus-watcher.pid`` at the top
    is removed once the lock is ours."""
    (tmp_path / ".focus-watcher.pid").write_text("12345\n")
    lock = ResultsLock(tmp_path).acquire()
    assert (tmp_path / ".focus-watcher" / "pid").read_text() == f"{os.getpid()}\n"
    assert sorted(os.listdir(tmp_path)) == [".focus-watcher"]
    lock.release()


def test_a_state_folder_linked_out_of_the_results_folder_is_not_written_through(tmp_path):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir(), elsewhere.mkdir()
    (results / ".focus-watcher").symlink_to(elsewhere, target_is_directory=True)
    lock = ResultsLock(results).acquire()  # the lock holds all the same
    assert list(elsewhere.iterdir()) == []
    lock.release()


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

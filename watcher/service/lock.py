"""One daemon per results folder: an advisory lock held for the daemon's whole life.

Two daemons on one results folder (a second ``focus-watcher run``, a ``once`` from cron beside the service) would
stack the same stacks twice, and the newcomer's start-up clean-up would delete the other's temp files mid-write.
``flock`` on the results folder itself says who owns the output: the kernel releases it when the holder exits or
dies (even by ``kill -9``), so a stale lock never blocks a restart, and taking it needs no write -- a daemon
restarted while its results folder is full or read-only still starts, and waits. The holder's pid goes into
``.focus-watcher/pid`` (when it can be written), for the message: in our own folder, never among OpenScan3's
projects (:mod:`watcher.layout`). ``status``, ``doctor`` and ``config`` only read, and never take the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path, PurePosixPath

from watcher.layout import PID_FILE
from watcher.service.placement import UnsafeFolder, real_folder

_PID = PurePosixPath(PID_FILE)
_OLD_PID_FILE = ".focus-watcher.pid"  # where earlier builds wrote it: removed once the lock is ours


class ResultsBusy(RuntimeError):
    """Another process holds the results folder."""

    def __init__(self, folder: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder else "another process"
        super().__init__(f"results folder {folder} is in use by focus-watcher ({who}); only one daemon may "
                         "write to a results folder -- stop the other one first (status, doctor and config "
                         "work beside it)")
        self.holder = holder


class ResultsLock:
    """The results folder's lock, held from :meth:`acquire` until :meth:`release` or the process's end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def acquire(self) -> ResultsLock:
        """Take the lock without waiting; raise :class:`ResultsBusy` naming the holder if it is taken."""
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResultsBusy(self.folder, _holder(self.folder / PID_FILE)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        with contextlib.suppress(OSError, UnsafeFolder):  # full or read-only for now: the lock holds all the same
            (real_folder(self.folder, _PID.parent.parts) / _PID.name).write_text(f"{os.getpid()}\n")
            (self.folder / _OLD_PID_FILE).unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _holder(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is a focus-watcher (the file may be older than the holder)."""
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"focus-watcher" in command or b"watcher.cli" in command else None

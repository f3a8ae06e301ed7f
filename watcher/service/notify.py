"""The systemd notification protocol (``sd_notify``), without libsystemd.

A service started with ``Type=notify`` tells systemd it is ready, what it is doing and that it is still alive
by sending newline-separated ``KEY=value`` assignments, one datagram per message, to the unix socket named in
``$NOTIFY_SOCKET``. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op, so the daemon can
call the notifier unconditionally.

Typical use in the daemon's main loop::

    notifier = SystemdNotifier()
    notifier.ready(f"watching {hot_folder}")
    while running:
        ...                                  # one bounded iteration of real work
        if notifier.watchdog_due(time.monotonic()):
            notifier.watchdog()
    notifier.stopping("draining 2 running stacks")
    notifier.close()
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Self

# A STATUS= text comes from file names in a folder other users write to (Samba): a newline in a name must not
# smuggle in an extra assignment such as READY=1 or MAINPID=, so helpers flatten control characters.
_CONTROL = dict.fromkeys(range(32), " ") | {127: " "}

# Never let a wedged receiver stall the main loop (the loop that proves progress) for long: a full socket
# queue makes sendto() block, and a notification that cannot be delivered in this time is simply reported lost.
_SEND_TIMEOUT_SECONDS = 1.0


class SystemdNotifier:
    """Send ``sd_notify`` messages to systemd; a no-op when not started by systemd.

    Parameters
    ----------
    environ
        Where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``; defaults to ``os.environ``.
        The environment is only read, never changed.

    Attributes
    ----------
    enabled : bool
        True when a notification socket is configured (an absolute path, or ``@name`` for an abstract socket).
    watchdog_interval : float or None
        Seconds between watchdog pings: half of ``WATCHDOG_USEC``, as systemd recommends, so one late loop
        iteration does not get the service killed. None when no watchdog applies to this process.

    Notes
    -----
    The notifier belongs to the process that created it. A forked worker that inherits it stays silent: with
    ``NotifyAccess=main`` systemd would drop (and log) its messages anyway, and workers must never report
    progress for the daemon.
    """

    enabled: bool
    watchdog_interval: float | None

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._pid = os.getpid()
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self.enabled = self._address is not None
        self.watchdog_interval = _watchdog_interval(env, self._pid) if self.enabled else None

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (e.g. ``"READY=1"``, ``"STATUS=..."``) as one datagram.

        Returns
        -------
        bool
            True when the datagram was sent. False when disabled, when called from a process other than the
            one that created the notifier, when an assignment is malformed (empty, no ``=``, or a newline or NUL
            inside it) or when sending failed. Never raises: losing a status line must not stop the daemon.
        """
        if self._address is None or os.getpid() != self._pid or not assignments:
            return False
        if any("=" not in item or "\n" in item or "\0" in item for item in assignments):
            return False
        message = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            if self._socket is None:
                # One unbound datagram socket is enough: systemd reads our credentials from the kernel
                # (SO_PASSCRED on its side), and CLOEXEC keeps it out of exec'd children.
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.settimeout(_SEND_TIMEOUT_SECONDS)
            return self._socket.sendto(message, self._address) == len(message)
        except OSError:  # includes TimeoutError, a missing socket path, ECONNREFUSED from a dead listener
            return False

    def ready(self, status: str) -> bool:
        """Tell systemd that start-up is complete (``READY=1``), with a status line."""
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        """Replace the status line shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        """Ping the watchdog (``WATCHDOG=1``); :meth:`watchdog_due` says when."""
        sent = self.notify("WATCHDOG=1")
        if sent:
            # Only a delivered ping restarts the interval: after a failed one, the next loop iteration retries.
            self._last_ping = time.monotonic()
        return sent

    def stopping(self, status: str = "stopping") -> bool:
        """Tell systemd that shutdown has begun (``STOPPING=1``), with a status line."""
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def watchdog_due(self, now: float) -> bool:
        """True when a watchdog ping is due at monotonic time ``now``.

        Called by the daemon's main loop rather than run on a timer thread, so pings stop when the loop
        stops making progress, which is what the watchdog is for. Always False when there is no watchdog.
        """
        if self.watchdog_interval is None:
            return False
        return self._last_ping is None or now - self._last_ping >= self.watchdog_interval

    def close(self) -> None:
        """Close the socket, if one was opened. The notifier may still be used; it reopens on demand."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``, or None when it names no usable socket.

    systemd passes an absolute path or ``@name`` for an abstract socket (leading NUL byte instead of ``@``).
    Anything else (unset, empty, relative, ``vsock:`` addresses of newer systemd) disables notifications.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8")
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when no watchdog is set for process ``pid``."""
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        # systemd sets WATCHDOG_PID to the main process; an inherited environment in any other process
        # (a worker, a child tool) must not ping on the daemon's behalf.
        try:
            if int(watchdog_pid) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def _one_line(text: str) -> str:
    return text.translate(_CONTROL)

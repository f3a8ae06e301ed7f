"""The sd_notify client against real unix datagram sockets (a path in a temp dir, and an abstract name)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.service.notify import SystemdNotifier


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(1.0)
    return sock


def _no_datagram(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


@pytest.fixture()
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = _receiver(path)
    yield path, sock
    sock.close()


@pytest.fixture()
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"focus-watcher-test-{secrets.token_hex(8)}"
    sock = _receiver(b"\0" + name.encode())
    yield f"@{name}", sock
    sock.close()


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_messages_arrive_as_exact_datagrams(which: str, request: pytest.FixtureRequest) -> None:
    address, sock = request.getfixturevalue(which)
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    with SystemdNotifier(env) as notifier:
        assert notifier.enabled
        assert notifier.ready("watching /srv/hot") is True
        assert notifier.status("2 running, 5 queued") is True
        assert notifier.watchdog() is True
        assert notifier.stopping() is True
        assert notifier.stopping("draining 2 stacks") is True
        assert notifier.notify("STATUS=a", "EXTEND_TIMEOUT_USEC=5000000") is True
    received = [sock.recv(4096) for _ in range(6)]
    assert received == [
        b"READY=1\nSTATUS=watching /srv/hot",
        b"STATUS=2 running, 5 queued",
        b"WATCHDOG=1",
        b"STOPPING=1\nSTATUS=stopping",
        b"STOPPING=1\nSTATUS=draining 2 stacks",
        b"STATUS=a\nEXTEND_TIMEOUT_USEC=5000000",
    ]
    assert _no_datagram(sock)


def test_status_cannot_smuggle_assignments(path_socket: tuple[str, socket.socket]) -> None:
    # File names in the hot folder come from Samba users; a newline in one must not become READY=1 or MAINPID=.
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.status("stacking evil\nMAINPID=1\r\0.jpg") is True
    assert sock.recv(4096) == b"STATUS=stacking evil MAINPID=1  .jpg"
    assert notifier.notify("STATUS=x\nREADY=1") is False
    assert notifier.notify("READY") is False
    assert notifier.notify() is False
    assert _no_datagram(sock)
    notifier.close()


def test_non_ascii_status_is_utf8(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.status("Käfer_scan01") is True
    assert sock.recv(4096) == "STATUS=Käfer_scan01".encode()
    notifier.close()


@pytest.mark.parametrize("value", [None, "", "relative/notify", "@", "vsock:2:1234"])
def test_disabled_without_a_usable_socket(value: str | None) -> None:
    env = {"WATCHDOG_USEC": "10000000"} | ({} if value is None else {"NOTIFY_SOCKET": value})
    notifier = SystemdNotifier(env)
    assert notifier.enabled is False
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_due(time.monotonic()) is False


def test_defaults_to_os_environ(path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    address, sock = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = SystemdNotifier()
    assert notifier.enabled and notifier.watchdog_interval == 1.5
    assert notifier.watchdog() is True
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert SystemdNotifier().enabled is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 5.0),  # no WATCHDOG_PID: the watchdog is ours
        ("10000000", "self", 5.0),
        ("1", "self", 0.0000005),
        ("10000000", "other", None),  # inherited by a process systemd does not watch
        ("10000000", "junk", None),
        ("0", "self", None),
        ("-5", "self", None),
        ("", "self", None),
        ("1.5e6", "self", None),
        (None, "self", None),
    ],
)
def test_watchdog_interval_parsing(usec: str | None, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval == (None if expected is None else pytest.approx(expected))
    assert notifier.watchdog_due(time.monotonic()) is (expected is not None)


def test_dead_socket_path_returns_false(tmp_path: Path) -> None:
    missing = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-here")})
    assert missing.enabled
    assert missing.ready("x") is False
    assert missing.watchdog() is False

    # A socket file whose listener has gone: connection refused, still no exception.
    path = str(tmp_path / "gone")
    _receiver(path).close()
    assert os.path.exists(path)
    gone = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert gone.status("x") is False
    assert gone.watchdog() is False
    # A failed ping does not count: the next loop iteration tries again.
    assert gone.watchdog_due(time.monotonic()) is True
    gone.close()

    too_long = SystemdNotifier({"NOTIFY_SOCKET": "/" + "x" * 200})
    assert too_long.notify("READY=1") is False


def test_watchdog_due_timing(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000"})
    assert notifier.watchdog_interval == 10.0
    start = time.monotonic()
    assert notifier.watchdog_due(start) is True  # never pinged: ping straight away
    assert notifier.watchdog() is True
    after = time.monotonic()
    assert notifier.watchdog_due(after) is False
    assert notifier.watchdog_due(after + 5.0) is False
    assert notifier.watchdog_due(start + 9.9) is False
    assert notifier.watchdog_due(after + 10.0) is True
    assert notifier.watchdog_due(after + 60.0) is True
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.close()


# The child only sends (or not) one datagram and _exits; pytest's own threads are irrelevant to it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_stays_silent(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.status("parent") is True
    assert sock.recv(4096) == b"STATUS=parent"
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which must never return into pytest
        code = 1
        try:
            code = 0 if notifier.status("child") is False and notifier.ready("child") is False else 1
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert _no_datagram(sock)
    notifier.close()


def test_close_is_idempotent_and_reopens(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    notifier.close()  # nothing opened yet
    assert notifier.status("one") is True
    notifier.close()
    notifier.close()
    assert notifier.status("two") is True
    assert [sock.recv(4096), sock.recv(4096)] == [b"STATUS=one", b"STATUS=two"]
    notifier.close()


def test_socket_is_cloexec(path_socket: tuple[str, socket.socket]) -> None:
    address, _ = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert notifier.status("x") is True
    opened = notifier._socket
    assert opened is not None and opened.get_inheritable() is False and opened.type == socket.SOCK_DGRAM
    notifier.close()
    assert opened.fileno() == -1

"""systemd: socket activation with the real ``systemd-socket-activate`` (which binds, waits for
the first client, then execs the server with ``LISTEN_FDS``), and ``sd_notify`` datagrams
read from a notify socket the test binds. ``systemctl reload`` is SIGHUP: RELOADING=1, then
READY=1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, CliServer, recv_line, serve_args
from test_serve_listen import ask_unix
from twoway.errors import ConfigError
from twoway.systemd import Notifier, listen_sockets

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="needs systemd-socket-activate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """The datagram socket ``NOTIFY_SOCKET`` names, as systemd's would be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(10 * UNIT)

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def activated(
    servers: list[CliServer],
    listen: list[str],
    *args: str,
    notify: NotifySocket | None = None,
    extra: tuple[str, ...] = (),
    loop: str = "asyncio",
) -> CliServer:
    """``systemd-socket-activate -l ADDR... twoway serve upper ARGS``, once it listens (the
    server itself starts at the first client)."""
    assert ACTIVATE is not None
    program = [ACTIVATE, *[f"--listen={a}" for a in listen], *extra,
               "-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED=1"]  # fmt: skip
    if notify is not None:
        program += ["-E", f"NOTIFY_SOCKET={notify.path}"]
    server = CliServer(
        serve_args("upper", *args, port=None, loop=loop), program=[*program, *TWOWAY]
    )
    servers.append(server)
    server.wait_for(r"Listening on .* as 3")
    return server


def ask(port: int, line: bytes = b"hi") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT) as s:
        s.sendall(line + b"\n")
        return recv_line(s, timeout=15 * UNIT)


@needs_activate
def test_socket_activation_and_notify(
    servers: list[CliServer], notify: NotifySocket, loop: str
) -> None:
    port = free_port()
    server = activated(servers, [f"127.0.0.1:{port}"], notify=notify, loop=loop,
                       extra=("--fdname=chat",))  # fmt: skip
    # The first client wakes the server, which takes the socket instead of binding one.
    assert ask(port) == b'You said "HI"\n'
    server.wait_ready()
    assert server.port == port
    server.wait_for(rf"listening on 127\.0\.0\.1:{port} \(socket from systemd: chat\)")
    ready = notify.next()
    assert ready["READY"] == "1" and f"127.0.0.1:{port}" in ready["STATUS"]
    # systemctl reload: SIGHUP (ExecReload=kill -HUP $MAINPID, or Type=notify-reload).
    server.signal(signal.SIGHUP)
    reloading = notify.next()
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert notify.next()["READY"] == "1"
    assert ask(port) == b'You said "HI"\n'
    server.signal(signal.SIGTERM)
    assert notify.next()["STOPPING"] == "1"
    assert server.wait_exit() == 0
    assert server.error_lines() == []


@needs_activate
def test_activation_with_workers_and_two_sockets(
    tmp_path: Path, servers: list[CliServer], notify: NotifySocket
) -> None:
    port, path = free_port(), tmp_path / "act.sock"
    server = activated(servers, [f"127.0.0.1:{port}", str(path)], "--workers", "2",
                       "--host", "0.0.0.0", notify=notify,
                       extra=("--fdname=web:local",))  # fmt: skip
    assert ask(port) == b'You said "HI"\n'
    server.wait_for(r"listening on unix:.*\(worker \d, pid \d+\) \(sockets from systemd: "
                    r"web, local\)", count=2)  # fmt: skip
    server.wait_for(r"systemd socket activation: --host ignored")
    assert notify.next() == {"READY": "1", "STATUS": "2 workers"}
    for _ in range(4):
        assert ask(port) == b'You said "HI"\n'
        assert ask_unix(path) == b'You said "HI"\n'
    server.signal(signal.SIGHUP)
    assert notify.next()["RELOADING"] == "1"
    server.wait_for(r"reload: nothing to reload", count=2)
    server.signal(signal.SIGTERM)
    assert notify.next()["READY"] == "1"
    assert notify.next()["STOPPING"] == "1"
    assert server.wait_exit() == 0
    assert path.exists()  # systemd's socket: not ours to remove


@needs_activate
def test_a_datagram_socket_is_one_line(servers: list[CliServer]) -> None:
    port = free_port()
    server = activated(servers, [f"127.0.0.1:{port}"], extra=("--datagram",))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", port))  # wakes it
    assert server.wait_exit() == 1
    assert server.lines[-1] == (
        "twoway: systemd: descriptor 3 (unknown) is not a stream socket: twoway serves "
        "ListenStream= sockets only"
    )


@needs_activate
def test_systemd_off_binds_its_own_port(servers: list[CliServer]) -> None:
    port = free_port()
    server = activated(servers, [f"127.0.0.1:{port}"], "--systemd", "off", "--port", "0")
    with socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT):
        pass  # wakes it; it ignores the socket
    server.wait_ready()
    assert server.port != port and "from systemd" not in server.stderr
    assert ask(server.port) == b'You said "HI"\n'


# ---------------------------------------------------------------------- the pieces


def test_listen_fds_for_another_pid_are_left(tmp_path: Path) -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"}
    assert listen_sockets(env, pid=os.getpid() + 1) == []
    assert env == {}  # cleared all the same: a child must not take them either
    with pytest.raises(ConfigError, match="LISTEN_FDS='two' is not a number"):
        listen_sockets({"LISTEN_FDS": "two", "LISTEN_PID": str(os.getpid())})


def test_notifier_abstract_socket_and_absent_one() -> None:
    name = f"twoway-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5 * UNIT)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
    silent = Notifier({})
    assert not silent.active and not silent.ready("up")


def test_notifier_failure_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready("up") and not notifier.stopping()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_contrib_units_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "contrib" / "systemd"
    analyze = shutil.which("systemd-analyze")
    units = sorted(root.glob("*.s*"))
    assert {u.name for u in units} >= {"twoway-chat.socket", "twoway-chat.service"}
    service = (root / "twoway-chat.service").read_text()
    assert "Type=notify" in service and "ExecReload=/bin/kill -HUP $MAINPID" in service
    if analyze is None:
        return
    done = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    # Only our own units' complaints count (not a missing twoway binary or user here).
    mine = [line for line in done.stderr.splitlines()
            if "twoway-chat" in line and "Command" not in line and "User" not in line]  # fmt: skip
    assert mine == [], done.stderr

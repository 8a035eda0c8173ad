"""``--allow``/``--deny`` (flags, ``TWOWAY_*``, TOML) and ``--allow-file``/``--deny-file``
reread on SIGHUP: refused clients read ``error: access denied`` and are closed at once, are
logged once per address per minute, and never take a slot. Sources 127.0.0.2 and 127.0.0.3
are loopback addresses that need no setup."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from helpers import UNIT, CliServer, recv_until_eof
from helpers import start_server as start


def from_(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10 * UNIT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def refused(source: str, port: int) -> bool:
    """Whether a client from ``source`` is told ``error: access denied`` and closed."""
    with from_(source, port) as sock:
        sock.sendall(b"hello\n")
        sock.shutdown(socket.SHUT_WR)
        got = recv_until_eof(sock)
    if got == b"error: access denied\n":
        return True
    assert got.startswith(b'You said "HELLO"'), got
    return False


def served(source: str, port: int) -> bool:
    return not refused(source, port)


def test_deny_and_allow_from_flags(loop: str, servers: list[CliServer]) -> None:
    server = start(servers, "upper", "--deny", "127.0.0.3", "--deny", "10.0.0.0/8", loop=loop)
    assert "deny 2 networks" in server.stderr
    assert refused("127.0.0.3", server.port)
    assert served("127.0.0.2", server.port) and served("127.0.0.1", server.port)
    server.wait_for(r"127\.0\.0\.3:\d+: refused: access denied \(in the deny list\)")

    server = start(servers, "upper", "--allow", "127.0.0.2,127.0.0.4/32", loop=loop)
    assert served("127.0.0.2", server.port)
    assert refused("127.0.0.1", server.port) and refused("127.0.0.3", server.port)
    server.wait_for(r"refused: access denied \(not in the allow list\)")


def test_deny_wins_over_allow_from_env_and_toml(tmp_path: Path, servers: list[CliServer]) -> None:
    (tmp_path / "twoway.toml").write_text('allow = ["127.0.0.0/29"]\n')
    server = start(
        servers, "upper", "--config", str(tmp_path / "twoway.toml"),
        env={"TWOWAY_DENY": "127.0.0.3,192.0.2.0/24"},
    )  # fmt: skip
    assert refused("127.0.0.3", server.port)  # allowed by the file, denied by the environment
    assert served("127.0.0.2", server.port)
    assert served("127.0.0.1", server.port)


def test_a_refused_client_takes_no_slot(servers: list[CliServer]) -> None:
    server = start(
        servers, "upper", "--deny", "127.0.0.3", "--max-conns", "1", "--max-conns-per-ip", "1"
    )
    with from_("127.0.0.2", server.port) as held:
        held.sendall(b"hi\n")
        assert held.recv(100).startswith(b'You said "HI"')
        # The server is full, yet the denied client is told why it is really refused.
        for _ in range(3):
            assert refused("127.0.0.3", server.port)
    assert served("127.0.0.2", server.port)
    assert server.count("server full") == 0


def test_a_denied_client_reconnecting_in_a_loop_gives_a_bounded_log(
    loop: str, servers: list[CliServer]
) -> None:
    server = start(servers, "upper", "--deny", "127.0.0.3", loop=loop)
    for _ in range(300):
        assert refused("127.0.0.3", server.port)
    assert served("127.0.0.2", server.port)
    server.wait_for(r"connection from 127\.0\.0\.2")
    assert server.count("refused: access denied") == 1
    assert server.count("connection from 127.0.0.3") == 0


def test_deny_file_is_reread_on_sighup(tmp_path: Path, loop: str, servers: list[CliServer]) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# bad actors\n127.0.0.3\n")
    server = start(servers, "upper", "--deny-file", str(deny), loop=loop)
    with from_("127.0.0.2", server.port) as kept:  # open across the reloads
        kept.sendall(b"one\n")
        assert kept.recv(100).startswith(b'You said "ONE"')
        assert refused("127.0.0.3", server.port) and served("127.0.0.2", server.port)
        deny.write_text("127.0.0.2\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: access rules: deny 1 network")
        assert refused("127.0.0.2", server.port) and served("127.0.0.3", server.port)
        # A bad file: one line, and the rules in use stay.
        deny.write_text("127.0.0.2\nnot-a-network\n")
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload: deny file .*:2: 'not-a-network' is not an IP address")
        assert refused("127.0.0.2", server.port) and served("127.0.0.3", server.port)
        kept.sendall(b"two\n")  # a connection already open is never cut by a reload
        assert kept.recv(100).startswith(b'You said "TWO"')
    assert server.count("Traceback") == 0


def test_tls_port_refuses_before_the_handshake(tmp_path: Path, servers: list[CliServer]) -> None:
    import subprocess

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=x", "-days", "1", "-keyout", "k.pem", "-out", "c.pem"],
        cwd=tmp_path, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    server = start(
        servers, "upper", "--tls-cert", str(tmp_path / "c.pem"), "--tls-key",
        str(tmp_path / "k.pem"), "--deny", "127.0.0.3",
    )  # fmt: skip
    with from_("127.0.0.3", server.port) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        try:  # closed with no handshake at all (a reset: the hello was never read)
            assert recv_until_eof(sock) == b""
        except ConnectionResetError:
            pass
    server.wait_for(r"127\.0\.0\.3:\d+: refused: access denied \(in the deny list\)")
    assert server.count("TLS handshake failed") == 0

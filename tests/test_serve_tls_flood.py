"""A slow-handshake flood from one address cannot fill a TLS server: handshakes in progress
are counted per client address (``--max-handshakes-per-ip``), so stalled sockets from one
address take a few slots for the handshake timeout at most, and a client from another
address still gets in, with ``openssl s_client`` as the real peer."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from helpers import UNIT, CliServer
from helpers import start_server as start

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flood")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=flood", "-days", "2",
                    "-keyout", "k.pem", "-out", "c.pem"], cwd=d, capture_output=True,
                   check=True)  # fmt: skip
    return d


def closed_at_once(sock: socket.socket) -> bool:
    """Whether the server closed this silent socket (EOF or reset) within a short wait."""
    sock.settimeout(1 * UNIT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def s_client(port: int) -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof"],
        input=b"hello\nquit\n", capture_output=True, timeout=15 * UNIT, check=False,
    )  # fmt: skip
    return done.stdout.decode(errors="replace")


def test_stalled_handshakes_from_one_address_cannot_fill_the_server(
    cert: Path, servers: list[CliServer], loop: str
) -> None:
    server = start(
        servers, "upper", "--tls-cert", str(cert / "c.pem"), "--tls-key", str(cert / "k.pem"),
        "--max-conns", "20", "--max-handshakes-per-ip", "5", "--tls-handshake-timeout", "30",
        loop=loop,
    )  # fmt: skip
    stalled = []
    try:
        for _ in range(30):  # from 127.0.0.2: never a ClientHello
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", server.port))
            stalled.append(s)
        server.wait_for(r"127\.0\.0\.2:\d+: TLS handshake failed: too many handshakes in "
                        r"progress from 127\.0\.0\.2 \(max 5\): closed")  # fmt: skip
        shut = [closed_at_once(s) for s in stalled]
        assert shut.count(False) == 5, shut  # five hold a slot, the others were closed
        # Another address is served at once, though 30 sockets are open from the first.
        out = s_client(server.port)  # from 127.0.0.1
        assert 'You said "HELLO"' in out
        # The log is bounded: one line for the 25 refusals.
        assert server.count("too many handshakes in progress") == 1
    finally:
        for s in stalled:
            s.close()


def test_per_ip_connection_limit_bounds_handshakes_too(
    cert: Path, servers: list[CliServer]
) -> None:
    server = start(
        servers, "upper", "--tls-cert", str(cert / "c.pem"), "--tls-key", str(cert / "k.pem"),
        "--max-conns-per-ip", "2", "--tls-handshake-timeout", "30",
    )  # fmt: skip
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        server.wait_for(r"too many handshakes in progress from 127\.0\.0\.1 \(max 2\)")
        assert [closed_at_once(s) for s in stalled].count(False) == 2
    finally:
        for s in stalled:
            s.close()

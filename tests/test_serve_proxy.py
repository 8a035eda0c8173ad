"""``twoway serve ... --proxy-protocol --proxy-from CIDR`` behind the real HAProxy (v1 and v2,
then TLS), and hostile headers sent straight to the port: the real client's address is what
the logs, per-IP limits and allow/deny see; a header from an untrusted peer, a malformed,
truncated, oversized or stalled one is one log line and nothing else."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import UNIT, CliServer, recv_until_eof, run_cli
from helpers import start_server as start
from test_proxy_haproxy import HAPROXY, free_port, haproxy, listening

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="needs haproxy")

PROXY = ("--proxy-protocol", "--proxy-from", "127.0.0.1")


def wait_listening(port: int) -> None:
    """HAProxy logs nothing when it listens: poll /proc (see ``listening``)."""
    deadline = time.monotonic() + 10 * UNIT
    while not listening(port):
        assert time.monotonic() < deadline, "haproxy did not listen"
        time.sleep(0.02)


def front(tmp_path: Path, backend: int, send: str) -> tuple[int, str]:
    port = free_port()
    config = (
        f"frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n"
        f"backend b\n    server s 127.0.0.1:{backend} {send}\n"
    )
    return port, config


def from_(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(10 * UNIT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    return sock.recv(200)


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_the_real_client_address_through_haproxy(
    tmp_path: Path, loop: str, send: str, servers: list[CliServer]
) -> None:
    server = start(
        servers, "upper", *PROXY, "--max-conns-per-ip", "1", "--deny", "127.0.0.4", loop=loop
    )
    assert "with PROXY protocol from 1 network" in server.stderr
    port, config = front(tmp_path, server.port, send)
    with haproxy(tmp_path, config):
        wait_listening(port)
        with from_("127.0.0.2", port) as a:
            assert ask(a, b"hi").startswith(b'You said "HI"')
            me = a.getsockname()[1]
            server.wait_for(rf"connection from 127\.0\.0\.2:{me}\b")
            # Per-IP limits count the real client, not the proxy: a second one from
            # 127.0.0.2 is over the limit, one from 127.0.0.3 is not.
            with from_("127.0.0.2", port) as again:
                again.sendall(b"x\n")
                assert b"too many connections from 127.0.0.2" in recv_until_eof(again)
            with from_("127.0.0.3", port) as b:
                assert ask(b, b"other").startswith(b'You said "OTHER"')
        with from_("127.0.0.4", port) as denied:
            denied.sendall(b"x\n")
            assert recv_until_eof(denied) == b"error: access denied\n"
    server.wait_for(r"127\.0\.0\.4:\d+: refused: access denied")
    assert server.count("connection from 127.0.0.1") == 0
    assert server.count("Traceback") == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_proxy_v2_then_tls_through_haproxy(
    tmp_path: Path, loop: str, servers: list[CliServer]
) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=behind-haproxy", "-days", "1",
         "-keyout", "k.pem", "-out", "c.pem"],
        cwd=tmp_path, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    server = start(
        servers, "upper", *PROXY, "--tls-cert", str(tmp_path / "c.pem"),
        "--tls-key", str(tmp_path / "k.pem"), loop=loop,
    )  # fmt: skip
    port, config = front(tmp_path, server.port, "send-proxy-v2")
    with haproxy(tmp_path, config):
        wait_listening(port)
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-bind", "127.0.0.3:0",
             "-ign_eof"],
            input=b"hello\nquit\n", capture_output=True, timeout=15 * UNIT, check=False,
        )  # fmt: skip
    assert b'You said "HELLO"' in done.stdout, done.stderr
    assert b"behind-haproxy" in done.stdout
    server.wait_for(r"connection from 127\.0\.0\.3:\d+")


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.mark.parametrize(
    ("source", "data", "logged"),
    [
        ("127.0.0.2", b"PROXY TCP4 203.0.113.9 127.0.0.1 1 2\r\nhi\n", "not a trusted proxy"),
        ("127.0.0.1", b"hello, no header\n", "PROXY protocol: "),
        ("127.0.0.1", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY protocol: "),
        ("127.0.0.1", b"PROXY TCP4 " + b"1" * 200 + b"\r\n", "PROXY protocol: "),
        ("127.0.0.1", V2_SIG + b"\x21\x11\xff\xff" + b"\x00" * 100, "PROXY protocol: "),
        ("127.0.0.1", b"PROXY TCP4 1.2.", "PROXY protocol: "),  # then EOF: truncated
    ],
    ids=["untrusted", "no-header", "bare-lf", "oversized-v1", "oversized-v2", "truncated"],
)
def test_a_bad_header_is_one_line_and_nothing_else(
    source: str, data: bytes, logged: str, loop: str, servers: list[CliServer]
) -> None:
    server = start(servers, "upper", *PROXY, "--deny", "203.0.113.9", loop=loop)
    for _ in range(3):
        with from_(source, server.port) as sock:
            try:
                sock.sendall(data)
                # The server may have closed it already (an untrusted source is refused at
                # once): ENOTCONN or a reset here is that refusal, not a failure.
                sock.shutdown(socket.SHUT_WR)
                assert recv_until_eof(sock) == b""  # closed; the service never saw it
            except (ConnectionResetError, BrokenPipeError):
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise
    server.wait_for(logged)
    assert server.count(r": PROXY protocol: ") == 1  # three tries, one line
    assert server.count("connection from") == 0 and server.count("Traceback") == 0
    with from_("127.0.0.1", server.port) as good:  # the server is unaffected
        good.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 4001\r\n")
        assert ask(good, b"fine").startswith(b'You said "FINE"')
    server.wait_for(r"connection from 198\.51\.100\.7:5555")


def test_a_stalled_header_is_cut_at_the_proxy_timeout(servers: list[CliServer]) -> None:
    server = start(servers, "upper", *PROXY, "--proxy-timeout", f"{1 * UNIT:g}", "--max-conns", "2")
    with from_("127.0.0.1", server.port) as sock:
        sock.sendall(b"PROXY TCP4 1.2.3.4")
        try:
            assert recv_until_eof(sock, 10 * UNIT) == b""
        except ConnectionResetError:
            pass
    server.wait_for(r"PROXY protocol: no header within")


def test_proxy_needs_proxy_from() -> None:
    done = run_cli("serve", "upper", "--port", "0", "--proxy-protocol")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "twoway: --proxy-protocol needs --proxy-from CIDR: the proxies allowed to send the "
        "header (a forged header would defeat every per-address rule)"
    ]
    done = run_cli("serve", "upper", "--port", "0", "--proxy-from", "127.0.0.1")
    assert done.returncode != 0 and "--proxy-from needs --proxy-protocol" in done.stderr


def test_chat_sees_the_real_client(loop: str, servers: list[CliServer]) -> None:
    server = start(servers, "chat", *PROXY, loop=loop)
    with from_("127.0.0.1", server.port) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 4001\r\n")
        got = b""
        while b"you are" not in got:
            chunk = sock.recv(4096)
            assert chunk, got
            got += chunk
        server.wait_for(r"joined \S+ from 198\.51\.100\.7:5555")
    assert server.count("from 127.0.0.1") == 0

"""The services' own figures, each driven to a known value and read from a real scrape:
dump's fsync histogram and disk errors, file's bytes sent, the line services' lines, and
connections by transport (tcp, unix, tls, ws, wss)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers import UNIT, connect, recv_line, recv_until_eof

from .metricskit import scrape, start_metrics, wait_metric


def _upload(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, read to EOF (the FIN says "stored")."""
    with connect(port) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_until_eof(s)


@pytest.mark.parametrize("read", ["--splice", "--no-splice"])
def test_dump_counts_each_fsync_and_each_disk_error(
    servers: list[Any], tmp_path: Path, read: str
) -> None:
    d = tmp_path / "up"
    server, mport = start_metrics(servers, "dump", "--dir", str(d), "--fsync", "close", read)
    for i in range(3):
        assert _upload(server.port, b"x" * (100_000 + i)) == b""
    samples = wait_metric(mport, "twoway_dump_uploads", lambda v: v == 0)
    # --fsync close: one sync per upload, before its FIN.
    assert samples["twoway_dump_fsync_seconds_count"] == 3
    assert samples['twoway_dump_fsync_seconds_bucket{le="+Inf"}'] == 3
    assert samples["twoway_dump_fsync_seconds_sum"] > 0
    assert samples["twoway_dump_bytes_stored_total"] == 300_003
    assert samples["twoway_dump_disk_errors_total"] == 0
    # The directory gone under the server: each new upload cannot create its file.
    shutil.rmtree(d)
    for _ in range(2):
        with connect(server.port) as s:
            s.sendall(b"lost\n")
            assert recv_until_eof(s).startswith(b"error: cannot store data")
    samples = wait_metric(mport, "twoway_dump_disk_errors_total", lambda v: v >= 2)
    assert samples["twoway_dump_disk_errors_total"] == 2
    assert samples["twoway_dump_fsync_seconds_count"] == 3


@pytest.mark.parametrize("copy", [False, True], ids=["sendfile", "copied"])
def test_file_counts_bytes_sent(servers: list[Any], tmp_path: Path, copy: bool) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    args = ["-x"] if copy else []  # the hex dump must see the bytes: no sendfile
    server, mport = start_metrics(servers, "file", str(path), *args)
    for _ in range(3):
        with connect(server.port) as s:
            assert recv_until_eof(s) == path.read_bytes()
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert samples["twoway_file_bytes_sent_total"] == 3 * 10_240


@pytest.mark.parametrize("service", ["upper", "stamp", "peers"])
def test_line_services_count_lines(servers: list[Any], service: str) -> None:
    server, mport = start_metrics(servers, service)
    with connect(server.port) as s:
        if service == "stamp":
            assert recv_line(s) == b"Hello\n"
        # ASCII lines alone in their read (the fast path), a non-ASCII one, three in a read.
        for line in (b"one\n", b"two\r\n", "h\u00e9llo\n".encode(), b"a\nb\nc\n"):
            s.sendall(line)
            for _ in range(line.count(b"\n")):
                recv_line(s)
        samples = scrape(mport)
        s.sendall(b"quit\n")  # answered by the server, not by the service
        assert recv_until_eof(s) == b"Bye Bye!\n"
    assert samples["twoway_lines_received_total"] == 6
    assert samples["twoway_lines_sent_total"] == 6
    assert scrape(mport)["twoway_lines_received_total"] == 6


def _by_transport(samples: dict[str, float], name: str) -> dict[str, float]:
    return {t: samples[f'{name}{{transport="{t}"}}'] for t in ("tcp", "tls", "ws", "wss", "unix")}


def test_connections_by_transport_tcp_unix_ws(servers: list[Any], tmp_path: Path) -> None:
    from net.ws.wskit import WS_READY, RawWs

    path = str(tmp_path / "s.sock")
    server, mport = start_metrics(servers, "upper", "--unix", path, "--ws", "127.0.0.1:0")
    wsport = int(server.wait_for(WS_READY).group(3))
    tcp = connect(server.port)
    unix = socket.socket(socket.AF_UNIX)
    unix.settimeout(5 * UNIT)
    unix.connect(path)
    ws = RawWs(wsport)
    try:
        for s in (tcp, unix):
            s.sendall(b"hi\n")
            assert recv_line(s) == b'You said "HI"\n'
        samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 3)
        assert _by_transport(samples, "twoway_transport_connections_open") == {
            "tcp": 1, "tls": 0, "ws": 1, "wss": 0, "unix": 1
        }  # fmt: skip
        assert _by_transport(samples, "twoway_transport_connections_accepted_total") == {
            "tcp": 1, "tls": 0, "ws": 1, "wss": 0, "unix": 1
        }  # fmt: skip
    finally:
        for s in (tcp, unix):
            s.close()
        ws.sock.close()
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert set(_by_transport(samples, "twoway_transport_connections_open").values()) == {0}
    assert samples['twoway_transport_connections_accepted_total{transport="unix"}'] == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_connections_by_transport_tls_wss(servers: list[Any], tmp_path: Path) -> None:
    from net.ws.wskit import WS_READY, RawWs

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout", "k.pem", "-out", "c.pem"],
        cwd=tmp_path, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    server, mport = start_metrics(
        servers, "upper", "--tls-cert", cert, "--tls-key", key, "--ws", "127.0.0.1:0"
    )
    wsport = int(server.wait_for(WS_READY).group(3))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(connect(server.port), server_hostname="localhost")
    wss = RawWs(wsport, tls=ctx)
    try:
        tls.sendall(b"hi\n")
        assert recv_line(tls) == b'You said "HI"\n'
        samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 2)
        assert _by_transport(samples, "twoway_transport_connections_open") == {
            "tcp": 0, "tls": 1, "ws": 0, "wss": 1, "unix": 0
        }  # fmt: skip
    finally:
        tls.close()
        wss.sock.close()

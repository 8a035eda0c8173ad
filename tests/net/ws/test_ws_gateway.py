"""``--ws HOST:PORT``: WebSocket clients in the same rooms as TCP clients, and every abuse a
raw WebSocket client can commit: one log line each, and the server unaffected (a second
client still chats).

The server is a real ``twoway serve`` subprocess; clients are the websockets library's
sans-I/O client over plain sockets (:mod:`wskit`), its asyncio client, ``nc`` and HTTP.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from helpers import UNIT, CliServer, connect, proc_status_kib, recv_line

from .wskit import RawWs, chat_pair, start_ws

pytestmark = pytest.mark.timeout(60)


def still_chats(port: int) -> None:
    """Two fresh clients of the gateway talk: the server is unaffected."""
    a, b = chat_pair(port, ("after1", "after2"))
    a.send_text("still here")
    assert b.expect("after1: still here")
    a.close()
    b.close()


def test_ws_and_tcp_clients_share_a_room(servers: list[CliServer], loop: str) -> None:
    server, port = start_ws(servers, "chat", loop=loop)
    ws = RawWs(port)
    ws.expect("type /help for commands")
    ws.send_text("/nick webby")
    ws.expect("is now known as webby")
    tcp = connect(server.port)
    while b"type /help" not in recv_line(tcp):
        pass
    tcp.sendall(b"/nick tcpy\n")
    ws.expect("is now known as tcpy")
    ws.send_text("hello from the browser side")
    line = recv_line(tcp)
    while b"webby:" not in line:
        line = recv_line(tcp)
    assert line == b"webby: hello from the browser side\n"
    tcp.sendall(b"hello back\n")
    assert ws.expect("tcpy:") == "tcpy: hello back"
    # A message holding two lines is two lines; quit ends the session like on TCP.
    ws.send_text("one\ntwo")
    assert recv_line(tcp) == b"webby: one\n" and recv_line(tcp) == b"webby: two\n"
    ws.send_text("quit")
    ws.expect("Bye Bye!")
    assert ws.expect_close()[0] == 1000
    ws.close()
    tcp.close()


def test_every_line_service_takes_ws(servers: list[CliServer]) -> None:
    for service, answer in (("upper", 'You said "HI"'), ("stamp", "server reply: hi")):
        _, port = start_ws(servers, service)
        with RawWs(port) as ws:
            ws.send_text("hi")
            ws.expect(answer)


def test_echo_refuses_ws(servers: list[CliServer]) -> None:
    from helpers import run_cli

    out = run_cli("serve", "echo", "--port", "0", "--ws", "127.0.0.1:0")
    assert out.returncode != 0 and "ws" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_page_and_other_paths(servers: list[CliServer]) -> None:
    _, port = start_ws(servers, "chat")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and b"<title>twoway chat</title>" in body
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    csp = resp.getheader("Content-Security-Policy") or ""
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    for path, kind in (("/chat.js", "text/javascript"), ("/chat.css", "text/css")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and kind in resp.getheader("Content-Type", "")
        resp.read()
    for path in ("/nope", "/../etc/passwd", "/chat.js/x", "/favicon.ico"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 404, path
        resp.read()
    still_chats(port)


def test_oversized_message_closes_with_1009(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat", "--max-line", "1024")
    mark = len(server.lines)
    with RawWs(port) as ws:
        ws.expect("type /help")
        ws.send_text("x" * 1025)
        code, reason = ws.expect_close()
    assert code == 1009 and "1024" in reason
    server.wait_for("WebSocket closed: message too big", start=mark)
    # Fragments count together: 4 x 300 bytes is over 1024 too.
    with RawWs(port) as ws:
        ws.expect("type /help")
        ws.send_text(b"y" * 300, fin=False)
        for _ in range(2):
            ws.send_continuation(b"y" * 300, fin=False)
        ws.send_continuation(b"y" * 300, fin=True)
        assert ws.expect_close()[0] == 1009
    assert server.count("WebSocket closed: message too big") == 2
    still_chats(port)


def test_binary_frames_are_refused(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat")
    with RawWs(port) as ws:
        ws.expect("type /help")
        ws.send_binary(b"\x00\x01binary")
        code, reason = ws.expect_close()
    assert code == 1003 and "binary" in reason
    server.wait_for("WebSocket closed: binary message on a text service")
    assert server.count("WebSocket closed: binary") == 1
    still_chats(port)


def test_bad_utf8_closes_with_1007(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat")
    a, b = chat_pair(port)
    a.send_text(b"caf\xc3")  # a truncated sequence
    assert a.expect_close()[0] == 1007
    server.wait_for("WebSocket closed: invalid UTF-8 at byte 3")
    b.expect("alice left")
    b.send_text("fine")
    a.close()
    b.close()
    still_chats(port)


def test_fragment_flood_is_cut(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat")
    with RawWs(port) as ws:
        ws.expect("type /help")
        ws.send_text(b"", fin=False)
        # Empty continuation frames cost the sender 6 bytes each and the server nothing:
        # the count is what stops them.
        burst = b"".join(
            (ws.proto.send_continuation(b"", fin=False), ws.proto.data_to_send())[1][0]
            for _ in range(3000)
        )
        ws.send_raw(burst)
        code, reason = ws.expect_close()
    assert code == 1009 and "fragments" in reason
    assert server.count("WebSocket closed: more than 1024 fragments") == 1
    still_chats(port)


def test_malformed_frames_and_requests(servers: list[CliServer]) -> None:
    # --tls-handshake-timeout bounds the HTTP request of a WebSocket too.
    server, port = start_ws(servers, "chat", "--tls-handshake-timeout", "0.5")
    # An unmasked frame from a client is a protocol error (the library closes with 1002).
    with RawWs(port) as ws:
        ws.expect("type /help")
        ws.send_raw(b"\x81\x02hi")
        assert ws.expect_close()[0] == 1002
    server.wait_for("WebSocket closed: protocol error")
    # Garbage instead of an HTTP request: one line, the socket closed.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert s.recv(100) == b""
    server.wait_for("WebSocket handshake refused: not an HTTP request")
    # A socket that sends nothing is closed at the handshake deadline.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(100) == b""
    server.wait_for(r"handshake refused: no HTTP request within 0\.5 s")
    still_chats(port)


def test_origin_allowlist(servers: list[CliServer]) -> None:
    server, port = start_ws(
        servers, "chat", "--ws-origin", "https://chat.example.org", "--ws-origin", "http://b.test"
    )
    with RawWs(port, origin="https://evil.example", handshake=False) as ws:
        response = ws.handshake()
        assert response.status_code == 403
    server.wait_for("WebSocket handshake refused: origin https://evil.example is not allowed")
    for origin in ("https://chat.example.org", "HTTP://B.TEST:80", f"http://127.0.0.1:{port}"):
        with RawWs(port, origin=origin) as ws:
            assert ws.response is not None and ws.response.status_code == 101, origin
            ws.expect("type /help")
    # Without --ws-origin only the gateway's own page (and non-browsers) get in.
    server2, port2 = start_ws(servers, "chat")
    with RawWs(port2, origin="https://chat.example.org", handshake=False) as ws:
        assert ws.handshake().status_code == 403
    with RawWs(port2, origin=f"http://localhost:{port2}", handshake=False) as ws:
        assert ws.handshake().status_code == 403  # the Host header says 127.0.0.1
    with RawWs(port2) as ws:
        ws.expect("type /help")
    assert server2.count("handshake refused") == 2
    still_chats(port)


def test_a_tab_that_never_reads_is_cut(servers: list[CliServer]) -> None:
    # --ephemeral: what the store caches of 3 MB of chat is not the lazy tab's memory.
    server, port = start_ws(
        servers,
        "chat",
        "--flood-rate",
        "0",
        "--max-queued",
        "64k",
        "--slow-grace",
        "0",
        "--ephemeral",
    )
    lazy = RawWs(port, rcvbuf=4096)
    a = b = None
    try:
        lazy.expect("type /help")
        lazy.send_text("/nick lazy")
        a, b = chat_pair(port)
        rss_before = proc_status_kib(server.pid)
        line = "z" * 1000
        # Until the server gives up on the lazy tab: the kernel's send buffer towards it may
        # grow to a few MB first (autotuning), so the amount is not fixed in advance.
        for i in range(20_000):
            a.send_text(f"{i} {line}")
            if i % 100 == 99:
                b.expect(f"{i} z")
                if server.count("WebSocket too slow"):
                    break
        server.wait_for(r"127\.0\.0\.1:\d+: WebSocket too slow \(\d+ bytes queued\), disconnecting")
        server.wait_for(r"lazy left #lobby \(too slow\)")
        rss_after = proc_status_kib(server.pid)
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
        assert server.count("WebSocket too slow") == 1
        a.send_text("after the lazy one")
        b.expect("alice: after the lazy one")
    finally:
        for c in (lazy, a, b):
            if c is not None:
                c.close()
    still_chats(port)


def test_idle_timeout_and_pings(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat", "--idle-timeout", "0.6", "--ws-ping", "0.3")
    # A client that answers pings but says nothing is still idle.
    with RawWs(port) as ws:
        ws.expect("error: idle for 0.6 s, disconnecting", timeout=5 * UNIT)
        assert ws.expect_close()[0] == 1008
    assert server.count("no pong") == 0
    # A client that never answers a ping is closed at the next one.
    server2, port2 = start_ws(servers, "chat", "--ws-ping", "0.3")
    with RawWs(port2) as ws:
        time.sleep(1.2 * UNIT)  # read nothing: no pong goes back
        assert ws.expect_close()[0] == 1008
    server2.wait_for("WebSocket closed: no pong within 0.3 s")
    still_chats(port2)


def test_connection_limit_is_shared_with_tcp(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat", "--max-conns", "2")
    tcp = connect(server.port)
    recv_line(tcp)
    first = RawWs(port)
    first.expect("type /help")
    third = RawWs(port)
    assert third.expect("error: server full (max 2 connections)")
    third.expect_close()
    server.wait_for("rejected: server full")
    tcp.close()
    third.close()
    first.send_text("still in")
    first.close()


def test_shutdown_tells_ws_clients(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat")
    ws = RawWs(port)
    ws.expect("type /help")
    server.signal()
    ws.expect("server shutting down")
    assert ws.expect_close()[0] == 1001
    ws.close()
    assert server.wait_exit() == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_wss_with_the_servers_certificate(servers: list[CliServer], tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-days", "2", "-keyout", "k.pem", "-out", "c.pem"],
        cwd=tmp_path, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    server, port = start_ws(
        servers, "chat", "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")
    )
    assert server.wait_for("WebSocket gateway on (wss?)://").group(1) == "wss"
    ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    with RawWs(port, tls=ctx) as ws:
        ws.expect("type /help")
        ws.send_text("/who")
        ws.expect("*** in #lobby")
    # A plain client on the TLS port: one rate-limited line, nothing else.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(100)
    server.wait_for("TLS handshake failed")


def test_ws_from_the_environment_and_toml(servers: list[CliServer], tmp_path: Path) -> None:
    from helpers import serve_args

    from .wskit import WS_READY

    server = CliServer(serve_args("upper", port=0), env={"TWOWAY_WS": "127.0.0.1:0"})
    servers.append(server)
    server.wait_ready()
    with RawWs(int(server.wait_for(WS_READY).group(3))) as ws:
        ws.send_text("env")
        ws.expect('You said "ENV"')
    conf = tmp_path / "twoway.toml"
    conf.write_text('ws = ":0"\nws-origin = ["https://a.example"]\n')
    server = CliServer(serve_args("chat", "--config", str(conf), port=0))
    servers.append(server)
    server.wait_ready()
    port = int(server.wait_for(WS_READY).group(3))
    with RawWs(port, origin="https://a.example") as ws:
        ws.expect("type /help")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ws", "nonsense"], "--ws 'nonsense': expected HOST:PORT"),
        (["--ws-origin", "https://a.example"], "--ws-origin needs --ws HOST:PORT"),
        (["--ws", ":0", "--ws-origin", "a.example/x"], "is not an origin"),
        (["--ws", ":0", "--workers", "2", "--bus", "redis://127.0.0.1:1/0"], "needs a fixed port"),
    ],
)
def test_ws_mistakes_are_one_line(args: list[str], message: str) -> None:
    from helpers import run_cli

    out = run_cli("serve", "chat", "--port", "0", *args)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr

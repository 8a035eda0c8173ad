"""The WebSocket gateway behind a proxy that sends the PROXY protocol (``--proxy-protocol``):
the real client's address is what the chat and the logs see, as on the TCP port; a header
from a proxy not trusted, or none, is refused in one line. The real sender is HAProxy
(Debian package ``haproxy``) in mode tcp with ``send-proxy-v2``."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from helpers import HAPROXY, UNIT, CliServer, run_haproxy

from .wskit import RawWs, free_port, start_ws

pytestmark = pytest.mark.timeout(60)

PROXY = ("--proxy-protocol", "--proxy-from", "127.0.0.1")


def test_a_proxy_header_names_the_client(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat", *PROXY)
    tab = RawWs(port, handshake=False)
    tab.send_raw(b"PROXY TCP4 203.0.113.9 127.0.0.1 50000 8080\r\n")
    tab.handshake()
    tab.expect("type /help for commands")
    tab.send_text("/nick proxied")
    tab.expect("is now known as proxied")
    server.wait_for(r"joined #lobby from 203\.0\.113\.9:50000", 5 * UNIT)
    tab.close()


def test_no_header_is_refused_in_one_line(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat", *PROXY)
    with socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a browser straight at it
        try:
            answer = sock.recv(100)
        except ConnectionResetError:  # closed with unread bytes: a reset
            answer = b""
        assert answer == b""  # closed, nothing answered
    server.wait_for(r"PROXY", 5 * UNIT)
    # The server still serves what comes through the proxy.
    tab = RawWs(port, handshake=False)
    tab.send_raw(b"PROXY TCP4 203.0.113.10 127.0.0.1 50001 8080\r\n")
    tab.handshake()
    tab.expect("type /help for commands")
    tab.close()


@pytest.mark.skipif(
    HAPROXY is None, reason="needs haproxy (Debian package haproxy; test.sh installs it)"
)
def test_behind_haproxy_the_browsers_address_is_seen(
    servers: list[CliServer], tmp_path: Path
) -> None:
    server, port = start_ws(servers, "chat", *PROXY)
    front = free_port()
    config = (
        f"frontend web\n    bind 127.0.0.1:{front}\n    default_backend twoway\n"
        f"backend twoway\n    server ws1 127.0.0.1:{port} send-proxy-v2\n"
    )
    with run_haproxy(tmp_path, config):
        deadline = time.monotonic() + 10 * UNIT
        while True:  # until HAProxy listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", front)):
                break
            assert time.monotonic() < deadline, "HAProxy did not listen"
            time.sleep(0.05)
        tab = RawWs(front)
        client_port = tab.sock.getsockname()[1]
        tab.expect("type /help for commands")
        tab.send_text("/nick through")
        tab.expect("is now known as through")
        # The chat saw the browser's own port, not HAProxy's connection to the gateway.
        server.wait_for(rf"joined #lobby from 127\.0\.0\.1:{client_port}\b", 5 * UNIT)
        tab.close()

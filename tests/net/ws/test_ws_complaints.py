"""A WebSocket client's mistakes are logged like a TCP client's (``twoway.net.complaints``):
the chat's ``error: ...`` replies with the nick and room, and the gateway's refusals (a close
frame with the reason) with the peer; a flood of them stays within the process's bound."""

from __future__ import annotations

import re

import pytest

from helpers import CliServer
from twoway.net.complaints import COMPLAINT_BURST

from .wskit import RawWs, start_ws

pytestmark = pytest.mark.timeout(60)

_SUMMARY = re.compile(r"suppressed (\d+) similar client errors in the last [\d.]+ s$")


def _peer(ws: RawWs) -> str:
    host, port = ws.sock.getsockname()[:2]
    return f"{host}:{port}"


def test_a_bad_command_over_websocket_is_answered_and_logged(
    servers: list[CliServer], loop: str
) -> None:
    server, port = start_ws(servers, "chat", "--flood-rate", "0", loop=loop)
    with RawWs(port) as ws:
        ws.expect("type /help for commands")
        ws.send_text("/nick webby")
        ws.expect("is now known as webby")
        peer = _peer(ws)
        ws.send_text("/frob")
        text = 'error: unknown command "/frob" (type /help)'
        assert ws.expect("error:") == text
        line = re.escape(f"INFO    {peer} (webby in #lobby): {text}") + "$"
        server.wait_for(line)
        # A burst of them in one message: bounded in the log, exact in the summary.
        ws.send_text("\n".join(f"/frob{i}" for i in range(300)))
        ws.expect('error: unknown command "/frob299"')  # the last, after the 299 others
        mine = re.escape(f"{peer} (webby in #lobby): error: unknown command")

        def accounted(lines: list[str]) -> bool:
            logged = sum(1 for x in lines if re.search(mine, x))
            held = sum(int(m.group(1)) for x in lines if (m := _SUMMARY.search(x)))
            return logged + held == 301

        assert server.wait_lines(accounted), server.tail()
        assert server.count(mine) <= COMPLAINT_BURST + 20  # the burst, a second's worth more
        ws.send_text("/nick webby2")  # still a member
        ws.expect("is now known as webby2")


def test_a_gateway_refusal_is_logged_once_with_the_peer(servers: list[CliServer]) -> None:
    server, port = start_ws(servers, "chat")
    with RawWs(port) as ws:
        ws.expect("type /help")
        peer = _peer(ws)
        ws.send_binary(b"\x00\x01binary")
        code, reason = ws.expect_close()
    assert code == 1003 and reason == "binary message on a text service"
    line = re.escape(f"INFO    {peer}: WebSocket closed: binary message on a text service") + "$"
    server.wait_for(line)
    assert server.count("WebSocket closed: binary") == 1

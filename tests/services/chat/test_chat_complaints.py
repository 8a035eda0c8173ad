"""A client's mistakes in the chat: the ``error: ...`` line to the client and one line in the
server's log naming the peer, its nick and room (``twoway.net.complaints``); a flood of them
is logged within the process's bound, summarised, and costs no accepted line."""

from __future__ import annotations

import re
import time

from helpers import COMPLAINTS_SUMMARY, complaints_accounted
from twoway.net.complaints import COMPLAINT_BURST, COMPLAINT_RATE

from .chatkit import UNIT, ChatServer, Client, Harness


def _peer(c: Client) -> str:
    host, port = c.sock.getsockname()[:2]
    return f"{host}:{port}"


def _logged(srv: ChatServer, who: str, text: str) -> None:
    """Wait for the one complaint line ``who: text`` at INFO; fail if there are two."""
    line = re.escape(f"INFO    {who}: {text}") + "$"
    srv.wait_log(line)
    assert srv.count(line) == 1, srv.tail()


def test_bad_commands_are_answered_and_logged_with_nick_and_room(chat: Harness) -> None:
    srv = chat.start()
    a = chat.client(srv, name="a")
    who = f"{_peer(a)} ({a.nick} in #lobby)"
    a.send("/frob now")
    text = 'error: unknown command "/frob" (type /help)'
    assert a.expect("error:") == text
    _logged(srv, who, text)
    a.send("/nick bad!nick")
    text = 'error: invalid nick "bad!nick" (1-32 letters, digits, - or _)'
    assert a.expect("error:") == text
    _logged(srv, who, text)
    # Moderation's refusals too (here: a kick by somebody who is no operator).
    b = chat.client(srv, name="b")
    a.expect(f"*** {b.nick} joined")
    a.send(f"/kick {b.nick}")
    assert a.expect("error:") == "error: not permitted"
    _logged(srv, who, "error: not permitted")
    # An over-long line is the connection's: its peer alone.
    a.send(b"L" * 70_000)
    text = "error: line too long (max 65536 bytes)"
    assert a.expect("error:") == text
    _logged(srv, _peer(a), text)
    # Still chatting.
    a.send("hello")
    assert b.expect(f"{a.nick}:") == f"{a.nick}: hello"


def test_a_flood_of_bad_commands_is_logged_within_bounds_and_loses_nothing(
    chat: Harness,
) -> None:
    bad, every = 1000, 100
    srv = chat.start("--flood-rate", "0")  # every line reaches the core: 1000 errors
    a, b = chat.client(srv, name="a"), chat.client(srv, name="b")
    a.expect(f"*** {b.nick} joined")
    mine = re.escape(f"{_peer(a)} ({a.nick} in #lobby): error: unknown command") + " "
    data = bytearray()
    for i in range(bad):
        data += b"/frob%d\n" % i
        if i % every == every - 1:
            data += b"said %d\n" % (i // every)
    started = time.monotonic()
    a.send(bytes(data), end=b"")
    # The other member gets every accepted line, in order.
    for n in range(bad // every):
        assert b.expect(f"{a.nick}:", timeout=10 * UNIT) == f"{a.nick}: said {n}"
    errors = [line for line in a.sync(10 * UNIT) if line.startswith("error:")]
    assert len(errors) == bad
    assert errors[-1] == 'error: unknown command "/frob999" (type /help)'

    # Each bad line is logged or counted in a summary, the last one a second after the flood.
    assert srv.wait_lines(lambda lines: complaints_accounted(lines, mine, bad), 10 * UNIT), (
        srv.tail()
    )
    window = time.monotonic() - started
    lines = [line for line in srv.lines if re.search(mine, line) or COMPLAINTS_SUMMARY.search(line)]
    assert any(COMPLAINTS_SUMMARY.search(line) for line in lines), srv.tail()
    assert len(lines) <= COMPLAINT_BURST + COMPLAINT_RATE * window, (len(lines), window)
    b.send("and after?")
    assert a.expect(f"{b.nick}:") == f"{b.nick}: and after?"


def test_flood_drops_are_logged_and_the_kick_is_not_logged_twice(chat: Harness) -> None:
    srv = chat.start()  # default flood control: slowed, then dropped, then kicked
    a = chat.client(srv, name="a")
    who = f"{_peer(a)} ({a.nick} in #lobby)"
    a.send(b"".join(b"flood %d\n" % i for i in range(3000)), end=b"")
    lines = a.read_to_end()
    assert lines[-1] == "error: flooding, disconnecting"
    srv.wait_log(re.escape(f"INFO    {who}: error: slow down (lines dropped)") + "$")
    srv.wait_log(re.escape(f"{a.nick} left #lobby (flooding)"))
    # The kick says why in its departure (and close) line; no complaint repeats it.
    assert srv.count("error: flooding") == 0, srv.tail()

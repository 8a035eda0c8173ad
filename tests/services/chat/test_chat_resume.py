"""Session resume, ``/history``, ``/since`` and ``/seq`` against a real ``twoway serve chat``
(socket clients; ``twoway connect --reconnect`` is in tests/store/test_reconnect_resume.py)."""

from __future__ import annotations

import re
import socket
import struct
import time

from .chatkit import UNIT, Client, Harness

TOKEN = re.compile(r"^\*\*\* resume token: (\S+)$")
SUMMARY = re.compile(r"^\*\*\* replayed (\d+) lines; (\d+) (missed|no longer kept)$")


def token_of(c: Client) -> str:
    """The resume token of ``c``'s welcome (read by ``welcome()``)."""
    for line in reversed(c.history):
        m = TOKEN.match(line)
        if m:
            return m.group(1)
    raise AssertionError(f"no resume token in {c.history}")


def reset(c: Client) -> None:
    """Drop ``c`` with an RST, as a network failure would."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def replayed(c: Client) -> tuple[list[str], tuple[int, int, str]]:
    """Read a replay: the ``[history]`` lines and the summary's figures."""
    lines = c.lines_until(SUMMARY)
    m = SUMMARY.match(c.history[-1])
    assert m is not None
    shown = [x.removeprefix("[history] ") for x in lines if x.startswith("[history] ")]
    return shown, (int(m.group(1)), int(m.group(2)), m.group(3))


def test_resume_gets_nick_room_and_every_missed_line(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    alice = chat.client(srv, name="alice")
    alice.send("/nick alice")
    alice.send("/join dev")
    alice.expect("*** you are in #dev")
    bob = chat.client(srv, name="bob")
    bob.send("/join dev")
    alice.expect("joined #dev")
    token = token_of(alice)
    bob.send("before")
    alice.expect("before")
    reset(alice)
    bob.expect("*** alice left #dev")
    said = [f"while away {i}" for i in range(37)]
    for text in said:
        bob.send(text)
    bob.sync()
    # The nick is held meanwhile.
    carol = chat.client(srv, name="carol")
    carol.send("/nick alice")
    assert carol.expect("error:") == 'error: nick "alice" is already taken'

    back = chat.client(srv, name="back")
    back.send(f"/resume {token}")
    back.expect("*** resumed as alice in #dev")
    lines, summary = replayed(back)
    assert lines == [f"{bob.nick}: {t}" for t in said]
    assert summary == (37, 0, "missed")
    new = TOKEN.match(back.read_line() or "")
    assert new is not None and new.group(1) != token
    bob.expect("*** alice joined #dev")
    bob.send("live again")
    assert back.expect("live again") == f"{bob.nick}: live again"
    # Single use: the old token is spent.
    again = chat.client(srv, name="again")
    again.send(f"/resume {token}")
    assert again.expect("error:") == "error: resume refused (already used)"


def test_refusals_are_one_line_and_the_client_goes_on_as_a_guest(chat: Harness) -> None:
    srv = chat.start("--resume-window", "0.5")
    a = chat.client(srv, name="a")
    token = token_of(a)
    reset(a)
    srv.wait_log(r"guest1 left #lobby")
    forged = chat.client(srv, name="forged")
    forged.send("/resume " + "A" * 24)
    assert forged.expect("error:") == "error: resume refused (unknown token)"
    forged.send("/who")
    assert forged.expect("*** in") == f"*** in #lobby: {forged.nick}"
    time.sleep(0.8 * UNIT)  # past the window
    late = chat.client(srv, name="late")
    late.send(f"/resume {token}")
    assert late.expect("error:") == "error: resume refused (expired)"
    # Not the first line: refused too.
    b = chat.client(srv, name="b")
    b.send("hello")
    b.send(f"/resume {token_of(b)}")
    assert b.expect("error:") == "error: resume refused (not the first line)"


def test_token_command_replaces_the_token(chat: Harness) -> None:
    srv = chat.start()
    a = chat.client(srv, name="a")
    old = token_of(a)
    a.send("/token")
    m = TOKEN.match(a.expect("*** resume token:"))
    assert m is not None and m.group(1) != old
    reset(a)
    srv.wait_log(r"guest1 left #lobby")
    b = chat.client(srv, name="b")
    b.send(f"/resume {old}")
    assert b.expect("error:") == "error: resume refused (already used)"
    c = chat.client(srv, name="c")
    c.send(f"/resume {m.group(1)}")
    assert c.expect("*** resumed as") == "*** resumed as guest1 in #lobby"


def test_history_seq_and_since(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    b = chat.client(srv, name="b")
    for i in range(1100):
        a.send(f"line {i}")
    a.sync()  # every line handled
    b.send("/seq")
    m = re.match(r"^\*\*\* at #lobby seq (\d+) epoch (\S+)$", b.expect("*** at #lobby"))
    assert m is not None and int(m.group(1)) == 1100
    epoch = m.group(2)
    b.send("/history 3")
    lines, summary = replayed(b)
    assert lines == [f"{a.nick}: line {i}" for i in (1097, 1098, 1099)]
    assert summary == (3, 0, "missed")
    b.send("/since 1095")  # lines 1096..1100 are "line 1095".."line 1099"
    lines, summary = replayed(b)
    assert lines == [f"{a.nick}: line {i}" for i in range(1095, 1100)]
    assert summary == (5, 0, "missed")
    # Far in the past: a room keeps its newest 1000 lines in memory; the rest are counted.
    b.send("/since 0")
    lines, summary = replayed(b)
    assert lines == [f"{a.nick}: line {i}" for i in range(100, 1100)]
    assert summary == (1000, 100, "no longer kept")
    b.send(f"/since 1100 {epoch}")
    assert replayed(b) == ([], (0, 0, "missed"))
    b.send("/since 5 other-epoch")
    assert b.expect("*** history") == "*** history of #lobby was reset"
    b.send("/since soon")
    assert b.expect("error:") == "error: usage: /since SEQ [EPOCH] (SEQ from /seq)"

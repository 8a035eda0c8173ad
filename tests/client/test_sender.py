"""The periodic sender (``--send TEXT --every SECONDS --count N``) and several connections
at once (``--connections N``, ``--names A,B,C``) against twoway's own services."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import Procs

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


async def test_count_sends_fills_placeholders_and_exits_after_the_last_reply(
    procs: Procs,
) -> None:
    """Three sends 0.2 s apart; the client leaves as soon as the last reply is in, well
    before the 5 s linger would have run out."""
    server = await procs.server("upper")
    started = time.monotonic()
    client = await procs.client(
        "127.0.0.1", str(server.port),
        "--send", "ping {seq} {random} {time} {name}", "--every", "0.2", "--count", "3",
        "--linger", "5",
    )  # fmt: skip
    assert await client.wait() == 0
    elapsed = time.monotonic() - started
    replies = client.stdout.lines()
    assert len(replies) == 3, replies
    pattern = re.compile(r'You said "PING (\d) ([0-9A-F]{16}) (\d\d:\d\d:\d\d) 1"')
    matches = [pattern.fullmatch(line) for line in replies]
    assert all(matches), replies
    assert [m.group(1) for m in matches if m] == ["1", "2", "3"]
    assert len({m.group(2) for m in matches if m}) == 3  # a new random string each time
    assert 0.4 <= elapsed < 4, elapsed
    assert client.stderr.text == ""


async def test_crlf_lines(procs: Procs) -> None:
    """--crlf: our lines end with CRLF, and upper answers in kind."""
    server = await procs.server("upper")
    client = await procs.client(
        "127.0.0.1", str(server.port), "--send", "x", "--count", "1", "--crlf"
    )
    assert await client.wait() == 0
    assert client.stdout.data == b'You said "X"\r\n'


async def test_without_a_reply_the_sender_leaves_after_the_linger(procs: Procs) -> None:
    """``chat`` does not answer our own lines: after the last send we wait ``--linger``, then
    half-close; chat closes on our FIN; exit 0."""
    server = await procs.server("chat")
    client = await procs.client(
        "127.0.0.1", str(server.port), "--send", "hello", "--count", "1", "--linger", "0.3",
    )  # fmt: skip
    assert await client.wait() == 0
    assert "*** welcome to" in client.stdout.text
    assert client.stderr.text == ""


async def test_numbered_connections_prefix_their_output(procs: Procs) -> None:
    server = await procs.server("upper")
    client = await procs.client(
        "127.0.0.1", str(server.port), "--connections", "3",
        "--send", "hi from {name}", "--count", "2", "--every", "0.1",
    )  # fmt: skip
    assert await client.wait() == 0
    lines = client.stdout.lines()
    for n in (1, 2, 3):
        mine = [line for line in lines if line.startswith(f"[{n}] ")]
        assert mine == [f'[{n}] You said "HI FROM {n}"'] * 2, lines
    assert len(lines) == 6
    state = client.stderr.lines()
    for n in (1, 2, 3):
        assert f"[{n}] connected to 127.0.0.1:{server.port}" in state


async def test_named_connections_against_chat_see_each_other(procs: Procs) -> None:
    """Dwarves, Elves and Hobbits in one chat room: each one's output lines carry its name,
    and each hears the other two. (Three rounds: the first line of one may reach the server
    before it has accepted another's connection.)"""
    server = await procs.server("chat")
    client = await procs.client(
        "127.0.0.1", str(server.port), "--names", "Dwarves,Elves,Hobbits",
        "--send", "greetings from the {name} ({seq})", "--count", "3", "--every", "0.2",
        "--linger", "0.5",
    )  # fmt: skip
    assert await client.wait() == 0
    text = client.stdout.text
    for line in client.stdout.lines():
        assert re.match(r"\[(Dwarves|Elves|Hobbits)\] ", line), line
    names = {"Dwarves", "Elves", "Hobbits"}
    for name in names:
        for other in names - {name}:
            pattern = rf"^\[{name}\] guest\d+: greetings from the {other} \(\d\)$"
            assert re.search(pattern, text, re.M), (name, other, text)
        # and never its own lines: chat does not echo
        assert not re.search(rf"^\[{name}\] .*from the {name} ", text, re.M)

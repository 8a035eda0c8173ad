"""The ASCII fast path (``ascii_lines`` / ``on_ascii_line``) answers exactly as ``on_line``.

A read that is exactly one ASCII line skips decoding and encoding; everything else takes
the str path. Both must give the same bytes, whichever path a line happens to take.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import Client, port_of
from twoway.net import serve
from twoway.net.framed import AsciiLineConnection, LineConnection, connection_class
from twoway.net.service import LineService
from twoway.services.echo import PeersService, StampService, UpperService


class Recorder:
    """Just enough of a connection for a line service's reply: what it wrote."""

    newline = b"\n"

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def send_line(self, text: str) -> None:
        self.out.append(text.encode() + self.newline)


def _both_paths(service: LineService, line: bytes) -> tuple[bytes, bytes]:
    slow, fast = Recorder(), Recorder()
    service.on_line(slow, line.decode("ascii"))  # type: ignore[arg-type]
    service.on_ascii_line(fast, line + b"\n")  # type: ignore[arg-type]
    return b"".join(slow.out), b"".join(fast.out)


ascii_lines = st.binary(max_size=200).filter(lambda b: b.isascii() and b"\n" not in b)


@given(ascii_lines)
def test_upper_fast_path_agrees(line: bytes) -> None:
    slow, fast = _both_paths(UpperService(), line)
    assert fast == slow


@given(ascii_lines)
def test_stamp_fast_path_agrees(line: bytes) -> None:
    service = StampService()
    now = time.time()
    if int(now + 0.01) != int(now):  # a second boundary between the two calls: not here
        time.sleep(0.02)
    slow, fast = _both_paths(service, line)
    assert fast == slow


def test_stamp_follows_the_clock_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    service = StampService()
    clock = [1_700_000_000.5]
    monkeypatch.setattr(time, "time", lambda: clock[0])

    def reply() -> bytes:
        out = Recorder()
        service.on_ascii_line(out, b"x\n")  # type: ignore[arg-type]
        return out.out[0]

    def expected() -> bytes:
        stamp = time.strftime("%H:%M:%S", time.localtime(int(clock[0])))
        return f"{stamp} - server reply: x\n".encode()

    for step in (0.0, 0.4, 0.2, 5.0, -3.0, -0.7, 3600.0):  # forward, and back (NTP)
        clock[0] += step
        assert reply() == expected(), step


def test_only_services_that_ask_get_the_fast_connection() -> None:
    assert connection_class(UpperService()) is AsciiLineConnection
    assert connection_class(StampService()) is AsciiLineConnection
    assert connection_class(PeersService()) is LineConnection


def test_overriding_on_line_below_the_fast_path_turns_it_off() -> None:
    """A user's subclass that changes on_line must see every line."""

    class Shout(UpperService):
        def on_line(self, conn: object, line: str) -> None:
            conn.send_line(line + "!")  # type: ignore[attr-defined]

    class ShoutFast(Shout):
        def on_ascii_line(self, conn: object, line: bytes) -> None:
            conn.write(line[:-1] + b"!\n")  # type: ignore[attr-defined]

    assert connection_class(Shout()) is LineConnection
    assert connection_class(ShoutFast()) is AsciiLineConnection
    patched = UpperService()
    patched.on_line = lambda conn, line: None  # type: ignore[method-assign]
    assert connection_class(patched) is LineConnection


@pytest.mark.parametrize("service", [UpperService, StampService])
async def test_lines_alone_and_batched_get_the_same_replies(
    service: type[LineService],
) -> None:
    """Alone in a read (ASCII: the fast path) or several per read (the str path), with
    non-ASCII, invalid UTF-8, CRLF and quit-like lines: the same replies."""
    lines = [
        b"hello",
        b"MiXeD case 42",
        b"",
        b"caf\xc3\xa9",  # UTF-8, not ASCII
        b"bad \xff\xfe bytes",  # not UTF-8: replaced
        b"tab\there",
        b"quit please",
        b"quits",
    ]
    async with serve(service(), "127.0.0.1", 0) as server:
        async with await Client.connect(port_of(server)) as alone:
            if service is StampService:
                assert await alone.line() == b"Hello\n"
            replies_alone = [await alone.ask(line + b"\n") for line in lines]
            assert await alone.ask(b"QUIT\n") == b"Bye Bye!\n"
            await alone.expect_eof()
        async with await Client.connect(port_of(server)) as batched:
            if service is StampService:
                assert await batched.line() == b"Hello\n"
            await batched.send(b"".join(line + b"\n" for line in lines))
            replies_batched = [await batched.line() for _ in lines]

    # A stamp reply may straddle a second: compare what follows the clock.
    def body(reply: bytes) -> bytes:
        return reply[8:] if service is StampService else reply

    assert [body(r) for r in replies_alone] == [body(r) for r in replies_batched]
    assert b"\xef\xbf\xbd" in replies_alone[4]  # U+FFFD, as the str path decodes

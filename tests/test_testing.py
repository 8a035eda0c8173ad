"""twoway.testing: services tested without a socket, over the real connection code."""

from __future__ import annotations

import asyncio

from twoway.net import ConnectionOptions, LineService
from twoway.net.connection import Connection
from twoway.services.echo import EchoService, StampService, UpperService
from twoway.testing import open_peer


async def test_a_line_service_answers_in_memory() -> None:
    peer = open_peer(UpperService())
    peer.send(b"hello\n")
    assert await peer.read_line() == b'You said "HELLO"\n'
    peer.send(b"two\r\nlines\n")  # the batch path, each reply with its own ending
    assert await peer.read_line() == b'You said "TWO"\r\n'
    assert await peer.read_line() == b'You said "LINES"\n'


async def test_quit_and_the_over_long_line_are_the_connection_s_own_rules() -> None:
    peer = open_peer(UpperService(), ConnectionOptions(max_line=4))
    peer.send(b"toolong\nok\n")
    assert await peer.read_line() == b"error: line too long (max 4 bytes)\n"
    assert await peer.read_line() == b'You said "OK"\n'
    peer.send(b"QUIT\n")
    assert await peer.read_line() == b"Bye Bye!\n"
    assert peer.got_eof
    peer.send_eof()
    await peer.wait_closed()
    assert peer.conn.close_reason is None or peer.conn.close_reason == "quit"


async def test_a_greeting_is_written_on_connect() -> None:
    peer = open_peer(StampService())
    assert await peer.read_line() == b"Hello\n"


async def test_raw_echo_and_the_peer_s_fin() -> None:
    peer = open_peer(EchoService())
    peer.send(b"\x00\xffraw")
    assert peer.read() == b"\x00\xffraw"
    peer.send_eof()
    await peer.wait_closed()


class Counter(LineService):
    name = "counter"

    def __init__(self) -> None:
        self.seen = 0
        self.closed_with: BaseException | None = None

    def on_line(self, conn: Connection, line: str) -> None:
        self.seen += 1
        conn.send_line(str(self.seen))

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.closed_with = exc


async def test_a_peer_that_does_not_read_holds_back_the_answers() -> None:
    service = Counter()
    peer = open_peer(service, ConnectionOptions(write_high=1024, write_low=256))
    peer.send(b"\n" * 10_000)
    assert 0 < service.seen < 10_000  # stopped at the high-water mark
    answers = b""
    while service.seen < 10_000 or b"10000\n" not in answers:
        answers += peer.read()  # reading lets it go on
        await asyncio.sleep(0)  # and the end-of-iteration flush runs
    assert answers == b"".join(b"%d\n" % i for i in range(1, 10_001))


async def test_a_reset_reaches_on_close_with_its_error() -> None:
    service = Counter()
    peer = open_peer(service)
    peer.reset()
    await peer.wait_closed()
    assert isinstance(service.closed_with, ConnectionResetError)

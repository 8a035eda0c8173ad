"""The echo family as a client sees it: the reply strings the README lists are the contract.

Library level, real sockets on port 0, once per event loop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable

import pytest

from helpers import UNIT, Client, gather_bounded, port_of, wait_until
from twoway.net import Connection, ConnectionOptions, serve
from twoway.services.echo import EchoService, PeersService, StampService, UpperService

# --------------------------------------------------------------------------- upper


async def test_upper_reply() -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.ask(b"hello\n") == b'You said "HELLO"\n'
        assert await c.ask(b"Hello, World 42\n") == b'You said "HELLO, WORLD 42"\n'
        assert await c.ask(b"\n") == b'You said ""\n'


async def test_reply_uses_the_clients_line_ending() -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.ask(b"crlf\r\n") == b'You said "CRLF"\r\n'
        assert await c.ask(b"lf\n") == b'You said "LF"\n'
        assert await c.ask(b"again\r\n") == b'You said "AGAIN"\r\n'


async def test_several_lines_in_one_write_and_one_line_in_many_writes() -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        await c.send(b"a\nb\r\nc\n")
        assert [await c.line() for _ in range(3)] == [
            b'You said "A"\n',
            b'You said "B"\r\n',
            b'You said "C"\n',
        ]
        for piece in (b"sp", b"li", b"t\r", b"\n"):
            await c.send(piece)
        assert await c.line() == b'You said "SPLIT"\r\n'


@pytest.mark.parametrize("word", [b"quit", b"QUIT", b"Quit", b"qUiT"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
async def test_quit_says_bye_and_closes(word: bytes, eol: bytes) -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.ask(b"first" + eol) == b'You said "FIRST"' + eol
        await c.send(word + eol + b"never answered\n")
        assert await c.line() == b"Bye Bye!" + eol
        await c.expect_eof()


@pytest.mark.parametrize("line", [b"quit now", b" quit", b"quitquit", b"quit\x00"])
async def test_only_an_exact_quit_line_quits(line: bytes) -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        reply = await c.ask(line + b"\n")
        assert reply.startswith(b'You said "') and reply != b"Bye Bye!\n"
        assert await c.ask(b"still\n") == b'You said "STILL"\n'


async def test_invalid_utf8_is_replaced_not_fatal() -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        reply = await c.ask(b"h\xffi \xc3\n")
        assert reply == 'You said "H\ufffdI \ufffd"\n'.encode()
        assert await c.ask("ünï\n".encode()) == 'You said "ÜNÏ"\n'.encode()


async def test_line_of_exactly_max_line_is_accepted_one_more_is_not() -> None:
    limit = 32
    options = ConnectionOptions(max_line=limit)
    async with (
        serve(UpperService(), "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as c,
    ):
        exact = b"x" * limit
        too_long = f"error: line too long (max {limit} bytes)\n".encode()
        assert await c.ask(exact + b"\n") == b'You said "' + exact.upper() + b'"\n'
        assert await c.ask(exact + b"y\n") == too_long
        assert await c.ask(b"ok\n") == b'You said "OK"\n'
        # The limit counts the content, not the terminator.
        assert await c.ask(exact + b"\r\n") == b'You said "' + exact.upper() + b'"\r\n'


async def test_over_long_line_in_pieces_is_rejected_once_and_never_delivered() -> None:
    limit = 64
    options = ConnectionOptions(max_line=limit)
    async with (
        serve(UpperService(), "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as c,
    ):
        await c.send(b"a" * 50)
        await c.send(b"b" * 50)  # the limit is crossed here, before any newline
        assert await c.line() == f"error: line too long (max {limit} bytes)\n".encode()
        await c.send(b"c" * 500)  # the rest of the same line: discarded, no new error
        await c.send(b"tail\nnext\n")
        assert await c.line() == b'You said "NEXT"\n'


async def test_unterminated_last_line_is_answered_at_eof() -> None:
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        await c.send(b"one\nlast words")
        c.writer.write_eof()
        assert await c.read_to_eof() == b'You said "ONE"\nYou said "LAST WORDS"\n'


async def test_half_close_gets_every_reply_then_eof() -> None:
    # What `printf 'hi\n' | nc -N` does: send, shut down the write side, read to EOF.
    async with (
        serve(UpperService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        await c.send(b"hi\r\nthere\r\n")
        c.writer.write_eof()
        assert await c.read_to_eof() == b'You said "HI"\r\nYou said "THERE"\r\n'


async def test_chunk_framing_answers_a_write_without_newline() -> None:
    async with (
        serve(UpperService("chunk"), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.ask(b"I am Chuck Norris!") == b'You said "I AM CHUCK NORRIS!"\n'
        assert await c.ask(b"with crlf\r\n") == b'You said "WITH CRLF"\r\n'
        await c.send(b"quit")
        assert await c.line() == b"Bye Bye!\r\n"
        await c.expect_eof()


async def test_chunk_framing_enforces_max_line() -> None:
    options = ConnectionOptions(max_line=8)
    async with (
        serve(UpperService("chunk"), "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.ask(b"12345678") == b'You said "12345678"\n'
        assert await c.ask(b"123456789") == b"error: line too long (max 8 bytes)\n"
        assert await c.ask(b"ok") == b'You said "OK"\n'


# --------------------------------------------------------------------------- stamp

STAMP = re.compile(rb"^(\d\d):(\d\d):(\d\d) - server reply: (.*)\n$")


async def test_stamp_greets_then_stamps_each_line() -> None:
    async with (
        serve(StampService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.line() == b"Hello\n"
        m = STAMP.match(await c.ask(b"hi\n"))
        assert m is not None
        hh, mm, ss = (int(g) for g in m.group(1, 2, 3))
        assert hh < 24 and mm < 60 and ss < 61
        assert m.group(4) == b"hi"
        reply = await c.ask(b"crlf\r\n")
        assert reply.endswith(b" - server reply: crlf\r\n")


# --------------------------------------------------------------------------- peers


async def test_peers_counts_the_other_connections() -> None:
    async with serve(PeersService(), "127.0.0.1", 0) as server:
        port = port_of(server)
        async with await Client.connect(port) as a:
            assert await a.ask(b"x\n") == b"You have 0 peers on this server\n"
            async with await Client.connect(port) as b:
                assert await b.ask(b"x\n") == b"You have 1 peer on this server\n"
                assert await a.ask(b"x\n") == b"You have 1 peer on this server\n"
                async with await Client.connect(port) as c:
                    assert await c.ask(b"x\r\n") == b"You have 2 peers on this server\r\n"
            await wait_until(lambda: server.connection_count == 1, what="b and c to be gone")
            assert await a.ask(b"x\n") == b"You have 0 peers on this server\n"


class _CountingPeers(PeersService):
    """The built-in peers service plus an event when ``target`` connections are open."""

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target
        self.all_connected = asyncio.Event()

    def on_connect(self, conn: Connection) -> None:
        if self.server is not None and self.server.connection_count >= self.target:
            self.all_connected.set()


async def test_1000_concurrent_peers(nofile_limit: Callable[[int], None]) -> None:
    n = 1000
    nofile_limit(2 * n + 200)  # both ends of every connection live in this process
    service = _CountingPeers(n)
    async with serve(service, "127.0.0.1", 0, backlog=n) as server:
        port = port_of(server)
        clients: list[Client] = []
        try:
            for i in range(0, n, 100):
                clients += await gather_bounded(*(Client.connect(port) for _ in range(i, i + 100)))
            await asyncio.wait_for(service.all_connected.wait(), 10 * UNIT)
            assert server.connection_count == n
            # Every client sends its line only once all of them are connected.
            for c in clients:
                c.writer.write(b"how many?\n")
            replies = await gather_bounded(*(c.line() for c in clients), timeout=20 * UNIT)
            assert set(replies) == {b"You have 999 peers on this server\n"}
        finally:
            await asyncio.gather(*(c.close() for c in clients))


# --------------------------------------------------------------------------- echo


async def test_echo_sends_bytes_back_unchanged() -> None:
    async with (
        serve(EchoService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        payload = bytes(range(256)) + b"\r\n\xff\x00no newline"
        await c.send(payload)
        got = b""
        while len(got) < len(payload):
            got += await asyncio.wait_for(c.reader.read(65536), 5 * UNIT)
        assert got == payload
        # echo is raw: `quit` is data, not a command.
        await c.send(b"quit\n")
        assert await c.line() == b"quit\n"
        c.writer.write_eof()
        await c.expect_eof()


async def test_echo_10_mib_then_half_close_comes_back_whole_then_fin() -> None:
    size = 10 * 1024 * 1024
    payload = os.urandom(size)
    async with (
        serve(EchoService(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):

        async def send_all() -> None:
            # echo applies backpressure: this only finishes because we read concurrently.
            view = memoryview(payload)
            for i in range(0, size, 256 * 1024):
                c.writer.write(view[i : i + 256 * 1024])
                await c.writer.drain()
            c.writer.write_eof()

        async def receive_all() -> bytes:
            digest = hashlib.sha256()
            total = 0
            while chunk := await c.reader.read(1 << 20):
                digest.update(chunk)
                total += len(chunk)
            assert total == size
            return digest.digest()

        _, received = await gather_bounded(send_all(), receive_all(), timeout=60 * UNIT)
        # receive_all only returned at the server's FIN, after every byte.
        assert received == hashlib.sha256(payload).digest()

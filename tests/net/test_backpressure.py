"""Answering obeys the write queue (issue 11, defect 1), library level.

A read can hold hundreds of thousands of lines. A server connection answers them only while
its write queue is under the high-water mark; the rest of the read waits as bytes, reading
stays paused, and once the peer reads, every line is answered, in order, none lost.
"""

from __future__ import annotations

import asyncio
import socket

from helpers import UNIT, port_of, wait_until
from twoway.net import Connection, ConnectionOptions, LineService, serve

LINES = 300_000  # more than one read holds, and more replies than the kernel absorbs


class Counter(LineService):
    """Answers line number k with ``k:<line>``; remembers its one connection."""

    name = "counter"

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.seen = 0

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def on_line(self, conn: Connection, line: str) -> None:
        self.seen += 1
        conn.send_line(f"{self.seen}:{line}")


async def test_a_peer_that_does_not_read_holds_one_read_and_then_gets_every_answer() -> None:
    service = Counter()
    options = ConnectionOptions(write_high=16 * 1024, write_low=4 * 1024)
    async with serve(service, "127.0.0.1", 0, options=options) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port_of(server)))
        reader, writer = await asyncio.open_connection(sock=sock)
        # Lines with a CRLF, a bare LF and an over-long-free tail: replies keep each ending.
        payload = b"".join(b"%d\r\n" % i if i % 3 == 0 else b"%d\n" % i for i in range(LINES))
        writer.write(payload)
        await wait_until(lambda: service.conn is not None, what="the connection")
        conn = service.conn
        assert conn is not None
        # The server stops answering: the count stops moving while the peer does not read.
        last = -1
        while service.seen != last:
            last = service.seen
            await asyncio.sleep(0.2 * UNIT)
        assert 0 < service.seen < LINES
        # What it holds in user space: the queue up to about the high-water mark (plus one
        # batch), never the replies to the whole read.
        assert conn.write_buffer_size <= 3 * options.write_high, conn.write_buffer_size
        # Now read everything: each line answered once, in order, with its own ending.
        expected = b"".join(
            b"%d:%d%s" % (i + 1, i, b"\r\n" if i % 3 == 0 else b"\n") for i in range(LINES)
        )
        got = await asyncio.wait_for(reader.readexactly(len(expected)), 30 * UNIT)
        assert got == expected
        assert service.seen == LINES
        writer.close()


async def test_quit_inside_a_held_back_read_still_ends_the_connection() -> None:
    service = Counter()
    options = ConnectionOptions(write_high=4 * 1024, write_low=1024)
    async with serve(service, "127.0.0.1", 0, options=options) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port_of(server)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"x\n" * 200_000 + b"quit\n" + b"after\n" * 10)
        data = await asyncio.wait_for(reader.read(), 30 * UNIT)  # up to the server's FIN
        lines = data.split(b"\n")
        assert lines[-2:] == [b"Bye Bye!", b""], lines[-3:]
        assert len(lines) == 200_000 + 2  # every x answered, nothing after quit
        writer.close()

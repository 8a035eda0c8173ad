"""Buffered lines go out before new ones, also in the moment between a reconnection and the
start of its session (a periodic sender's tick can land there)."""

from __future__ import annotations

import asyncio
from typing import cast

from twoway.client.link import Link
from twoway.client.options import ClientOptions
from twoway.client.output import Sink
from twoway.client.status import Status


class _Conn:
    """Just what Link.send and the flush use of a connection: it records the writes."""

    is_closing = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_a_send_between_connect_and_flush_queues_behind_the_buffer() -> None:
    link = Link(
        "",
        ClientOptions("127.0.0.1", 9, reconnect=True),
        Sink(),
        Status(announce=False, verbose=False),
    )
    for n in (1, 2, 3):
        await link.send(b"tick %d\n" % n)  # disconnected: buffered
    conn = _Conn()
    link.conn = conn  # type: ignore[assignment]  # connected; its session has not flushed yet
    await link.send(b"tick 4\n")
    assert conn.written == []  # not ahead of the buffered ticks
    await link.flush_outbox(conn)  # type: ignore[arg-type]
    await link.send(b"tick 5\n")
    assert conn.written == [b"tick %d\n" % n for n in (1, 2, 3, 4, 5)]
    assert link.sent == 5


class _Recording(Status, Sink):
    """A Status and a Sink in one: the order in which a link reports and delivers."""

    def __init__(self) -> None:
        Status.__init__(self, announce=True, verbose=False)
        self.events: list[str] = []
        self.got_data = asyncio.Event()

    def state(self, name: str, text: str) -> None:
        self.events.append(text)

    def data(self, data: bytes) -> None:
        self.events.append(f"data {data!r}")
        self.got_data.set()


class _Banner(asyncio.Protocol):
    """Greets in connection_made, as chat does: the banner can arrive before the client's
    code after its connect has run."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(b"BANNER\n")  # uvloop's is no subclass


async def test_connected_to_is_reported_before_the_first_bytes() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(20):  # the old order lost this race on uvloop every time
            rec = _Recording()
            link = Link("", ClientOptions("127.0.0.1", port), rec, rec)
            task = asyncio.ensure_future(link.run())
            try:
                await asyncio.wait_for(rec.got_data.wait(), 5)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert rec.events[:2] == [f"connected to 127.0.0.1:{port}", "data b'BANNER\\n'"]
    finally:
        server.close()

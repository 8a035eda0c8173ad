"""Buffered lines go out before new ones, also in the moment between a reconnection and the
start of its session (a periodic sender's tick can land there)."""

from __future__ import annotations

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

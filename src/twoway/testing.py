"""Test a service without a socket: a real connection over an in-memory transport.

In the spirit of trio's memory streams: :func:`open_peer` builds the same
:class:`~twoway.net.connection.Connection` a server would (framing, the ``quit`` rule,
write coalescing, flow control, the slow-consumer policy) on a :class:`MemoryTransport`,
and returns the :class:`Peer` at the other end, which sends bytes, reads what the service
wrote, half-closes or resets::

    async def test_upper() -> None:
        peer = open_peer(UpperService())
        peer.send(b"hello\\n")
        assert await peer.read_line() == b'You said "HELLO"\\n'

It needs a running event loop (the connection schedules its flushes on it), so tests using
it are ``async``. Nothing here opens a socket or a port.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twoway.net.connection import Connection
from twoway.net.framed import connection_class
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry
from twoway.net.service import Service

__all__ = ["MemoryTransport", "Peer", "open_peer"]


class MemoryTransport(asyncio.Transport):
    """An ``asyncio.Transport`` whose other end is a :class:`Peer` in the same process.

    What the connection writes waits in :attr:`outgoing` until the peer reads it; above the
    high-water mark the connection is told to pause writing, as a kernel buffer that filled
    would make a socket transport do. Reading can be paused; what the peer sends meanwhile
    waits and is delivered on resume.
    """

    def __init__(
        self, protocol: Connection, peername: Any, sockname: Any = ("127.0.0.1", 4001)
    ) -> None:
        super().__init__()
        self._protocol = protocol
        self._extra = {"peername": peername, "sockname": sockname, "socket": None}
        self.outgoing = bytearray()
        self.eof_sent = False
        self.reading = True
        self._held: list[bytes] = []
        self._closing = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._paused = False

    # -- what the connection calls -----------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return len(self.outgoing)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.eof_sent:
            return
        self.outgoing += data
        if not self._paused and len(self.outgoing) > self._high:
            self._paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_sent = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        held, self._held = self._held, []
        for data in held:
            if self._closing:
                break
            self._protocol.data_received(data)

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self._lose(None)

    def abort(self) -> None:
        self.outgoing.clear()
        self._lose(None)

    # -- the peer's side ---------------------------------------------------------------

    def _lose(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, exc)

    def _deliver(self, data: bytes) -> None:
        if self._closing:
            return
        if self.reading and not self._held:
            self._protocol.data_received(data)
        else:
            self._held.append(data)

    def _take(self) -> bytes:
        data = bytes(self.outgoing)
        self.outgoing.clear()
        if self._paused and len(self.outgoing) <= self._low:
            self._paused = False
            self._protocol.resume_writing()
        return data


class Peer:
    """The far end of a service's connection: what a client would do, in memory."""

    def __init__(self, conn: Connection, transport: MemoryTransport) -> None:
        #: The service's connection (as its callbacks receive it).
        self.conn = conn
        self.transport = transport
        self._received = bytearray()
        self._fin_sent = False

    def send(self, data: bytes) -> None:
        """Send ``data`` to the service (delivered now, or when its reading resumes)."""
        if self._fin_sent:
            raise RuntimeError("the peer has already sent its FIN")
        self.transport._deliver(data)

    def send_eof(self) -> None:
        """Half-close, like ``shutdown(SHUT_WR)``: the service's ``on_eof`` runs."""
        self._fin_sent = True
        if not self.transport.is_closing() and not self.conn.eof_received():
            self.transport.close()

    def reset(self) -> None:
        """Vanish with an RST: the connection is lost with ``ConnectionResetError``."""
        self.transport._lose(ConnectionResetError("connection reset by peer"))

    def read(self) -> bytes:
        """Everything the service has written that the peer has not read yet (maybe
        ``b""``). Reading lets a paused writer resume, like a socket being drained."""
        data = bytes(self._received) + self.transport._take()
        self._received.clear()
        return data

    async def read_line(self, timeout: float = 5.0) -> bytes:  # noqa: ASYNC109
        """The next line the service wrote (with its ending), waiting for the connection's
        end-of-iteration flush if need be; ``b""`` if the connection closed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._received += self.transport._take()
            end = self._received.find(b"\n")
            if end >= 0:
                line = bytes(self._received[: end + 1])
                del self._received[: end + 1]
                return line
            if self.conn.is_closed:
                return b""
            if loop.time() > deadline:
                raise TimeoutError(f"no line from the service within {timeout:g} s")
            await asyncio.sleep(0)  # one loop iteration: the coalesced writes are flushed

    @property
    def got_eof(self) -> bool:
        """Whether the service has half-closed or closed its side."""
        return self.transport.eof_sent or self.transport.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone (its ``on_close`` has run)."""
        await self.conn.wait_closed()


def open_peer(
    service: Service,
    options: ConnectionOptions | None = None,
    *,
    peername: Any = ("203.0.113.7", 50123),
    registry: Registry | None = None,
) -> Peer:
    """Connect a new in-memory peer to ``service`` as a server would (its ``on_connect``
    runs now) and return that peer. ``registry`` defaults to a fresh one, so the
    connection behaves as a server's (reading pauses while its peer does not read)."""
    options = options if options is not None else ConnectionOptions()
    conn = connection_class(service)(service, options, registry or Registry())
    transport = MemoryTransport(conn, peername)
    conn.connection_made(transport)
    return Peer(conn, transport)

"""One connection: idle timeout, socket options, bounded writes, slow peers, FIN vs RST.

Library level, real sockets on port 0, once per event loop (see conftest.py). A peer that
"never reads" is a real socket nobody calls recv() on, with a small receive buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from helpers import UNIT, Client, Recorder, port_of, wait_until
from twoway.net import Connection, ConnectionOptions, Keepalive, Service, serve
from twoway.services.echo import EchoService

MiB = 1024 * 1024


@contextlib.asynccontextmanager
async def never_reading_peer(port: int, rcvbuf: int = 4096) -> AsyncIterator[socket.socket]:
    """A connected socket that nobody reads from (the test may still send on it)."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        yield sock
    finally:
        sock.close()


# --------------------------------------------------------------------------- idle timeout


async def test_idle_timeout_closes_an_idle_connection_but_not_an_active_one() -> None:
    idle = 0.3 * UNIT
    service = Recorder()
    options = ConnectionOptions(idle_timeout=idle)
    async with serve(service, "127.0.0.1", 0, options=options) as server:
        port = port_of(server)
        async with await Client.connect(port) as quiet, await Client.connect(port) as busy:
            await service.next_connection()
            await service.next_connection()

            async def keep_busy() -> None:
                # One line every idle/4 for 4 idle periods: never idle for a whole period.
                for i in range(16):
                    assert await busy.ask(b"ping %d\n" % i) == b"got: ping %d\n" % i
                    await asyncio.sleep(idle / 4)

            activity = asyncio.create_task(keep_busy())
            assert await quiet.line() == f"error: idle for {idle:g} s, disconnecting\n".encode()
            await quiet.expect_eof()
            await quiet.close()  # the server waits (close_timeout) for our FIN
            conn, _, _, _ = await service.next_close()
            assert conn.close_reason == "idle"
            await asyncio.wait_for(activity, 10 * UNIT)
            assert await busy.ask(b"still here\n") == b"got: still here\n"
            assert server.stats.idle_timeouts == 1


# --------------------------------------------------------------------------- socket options


def _server_socket(conn: Connection) -> socket.socket:
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    assert sock is not None
    return sock  # type: ignore[no-any-return]


async def test_nodelay_and_keepalive_are_set_on_the_accepted_socket() -> None:
    service = Recorder()
    options = ConnectionOptions(nodelay=True, keepalive=Keepalive(idle=42, interval=7, count=3))
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)),
    ):
        sock = _server_socket(await service.next_connection())
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 42
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        # Data in flight to a vanished peer times out as fast as an idle one does.
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == (42 + 7 * 3) * 1000


async def test_nodelay_off_and_no_keepalive() -> None:
    service = Recorder()
    options = ConnectionOptions(nodelay=False, keepalive=None)
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)),
    ):
        sock = _server_socket(await service.next_connection())
        # Both loops turn TCP_NODELAY on by themselves: the option must turn it off again.
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


# --------------------------------------------------------------------------- bounded writes


class _WatchedEcho(EchoService):
    """echo that records the largest outbound queue it ever saw after a write."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.peak = 0

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def on_data(self, conn: Connection, data: bytes) -> None:
        conn.write(data)
        self.peak = max(self.peak, conn.write_buffer_size)


async def test_write_is_bounded_reading_pauses_when_the_peer_does_not_read() -> None:
    high = 64 * 1024
    slack = 256 * 1024  # one received chunk may land on top of the high-water mark
    service = _WatchedEcho()
    options = ConnectionOptions(write_high=high, write_low=high // 4)
    total = 32 * MiB  # far more than the kernel buffers of both directions hold
    payload = bytes(range(256)) * (total // 256)
    loop = asyncio.get_running_loop()
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        never_reading_peer(port_of(server)) as sock,
    ):
        # Send everything and read nothing (yet): sock_sendall blocks once the kernel
        # buffers are full, because the server stops reading.
        sending = asyncio.create_task(loop.sock_sendall(sock, payload))
        await wait_until(lambda: service.conn is not None, what="the connection")
        conn = service.conn
        assert conn is not None and conn.transport is not None
        transport = conn.transport
        await wait_until(lambda: not transport.is_reading(), what="reading to pause")
        assert not sending.done()
        assert conn.bytes_read < total // 2  # the rest waits in the client and the kernel
        assert service.peak <= high + slack
        assert conn.write_buffer_size <= high + slack
        # Now read everything: reading resumes and every byte comes back, in order.
        received = bytearray()
        while len(received) < total:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10 * UNIT)
            assert chunk, "EOF before everything came back"
            received += chunk
        await asyncio.wait_for(sending, 5 * UNIT)
        assert received == payload
        assert service.peak <= high + slack


class _Firehose(Service):
    """Writes 64 KiB per loop iteration to every client, never waiting (a broadcast)."""

    chunk = b"x" * 65536

    def __init__(self) -> None:
        self.conns: set[Connection] = set()
        self.peak: dict[Connection, int] = {}
        self.slow: list[Connection] = []
        self.closed: asyncio.Queue[Connection] = asyncio.Queue()
        self._handle: asyncio.Handle | None = None

    def on_connect(self, conn: Connection) -> None:
        self.conns.add(conn)
        self.peak[conn] = 0
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        for conn in list(self.conns):
            if not conn.is_closing:
                conn.write(self.chunk)
                self.peak[conn] = max(self.peak[conn], conn.write_buffer_size)
        self._handle = asyncio.get_running_loop().call_soon(self._tick) if self.conns else None

    def on_slow(self, conn: Connection) -> None:
        self.slow.append(conn)
        super().on_slow(conn)

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.conns.discard(conn)
        self.closed.put_nowait(conn)


async def test_max_queued_drops_a_peer_that_never_reads_and_spares_the_others() -> None:
    max_queued = 4 * MiB
    service = _Firehose()
    options = ConnectionOptions(max_queued=max_queued)
    async with serve(service, "127.0.0.1", 0, options=options) as server:
        port = port_of(server)
        async with never_reading_peer(port) as _stuck, await Client.connect(port) as healthy:
            await wait_until(lambda: len(service.conns) == 2, what="both connections")
            healthy_port = healthy.sockname[1]
            stuck_conn = next(c for c in service.conns if c.remote_address[1] != healthy_port)
            received = 0

            async def read_on() -> None:
                nonlocal received
                while chunk := await healthy.reader.read(1 << 20):
                    received += len(chunk)

            reading = asyncio.create_task(read_on())
            try:
                assert await asyncio.wait_for(service.closed.get(), 10 * UNIT) is stuck_conn
                assert service.slow == [stuck_conn]
                assert stuck_conn.close_reason == "too slow"
                # The kernel buffers (a few MiB on loopback) filled before the queue grew
                # past its limit, and it never went much past it.
                assert stuck_conn.bytes_written > max_queued + 1 * MiB
                assert service.peak[stuck_conn] <= max_queued + 2 * len(_Firehose.chunk)
                assert server.stats.slow_disconnects == 1
                # The healthy reader was never disturbed and keeps receiving.
                before = received
                await wait_until(lambda: received > before + 4 * MiB, what="more data")
                assert [c.remote_address[1] for c in service.conns] == [healthy_port]
                assert not reading.done()
            finally:
                service.conns.clear()  # stop the firehose before the reader leaves
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading


async def test_slow_grace_drops_a_peer_that_stays_above_the_high_water_mark() -> None:
    grace = 0.3 * UNIT
    service = _Firehose()
    options = ConnectionOptions(slow_grace=grace, max_queued=None)
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        never_reading_peer(port_of(server)),
    ):
        await wait_until(lambda: bool(service.conns), what="the connection")
        conn = next(iter(service.conns))
        assert await asyncio.wait_for(service.closed.get(), 10 * UNIT) is conn
        assert service.slow == [conn]
        assert conn.close_reason == "too slow"


# --------------------------------------------------------------------------- FIN vs RST


async def test_close_sends_fin_not_rst_even_with_unread_input() -> None:
    service = Recorder()
    async with (
        serve(service, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        conn = await service.next_connection()
        # `close` makes the server close while 2 MiB more are on their way to it.
        c.writer.write(b"close\n" + b"unread input\n" * (2 * MiB // 13))
        assert await c.line() == b"closing\n"
        # A FIN, not an RST: the last line arrived and the stream ends cleanly.
        await c.expect_eof()
        await c.send(b"more\n")  # still allowed: the server keeps reading, discarding
        assert conn.is_closing
        assert service.lines == ["close"]  # nothing after `close` reached the service


async def test_abort_sends_rst() -> None:
    service = Recorder()
    async with (
        serve(service, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        await service.next_connection()
        assert await c.ask(b"hello\n") == b"got: hello\n"
        await c.send(b"abort\n")
        with pytest.raises(ConnectionResetError):
            await c.read_to_eof()
        conn, _, _, _ = await service.next_close()
        assert conn.is_closed


async def test_end_half_closes_and_keeps_reading() -> None:
    service = Recorder()
    async with (
        serve(service, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        conn = await service.next_connection()
        await c.send(b"end\n")
        assert await c.line() == b"ending\n"
        await c.expect_eof()  # the server's FIN
        await c.send(b"after end\n")  # our side is still open, and it is read
        await wait_until(lambda: "after end" in service.lines, what="the line after end()")
        assert not conn.is_closing
        c.writer.write_eof()
        await service.next_close()


async def test_close_and_abort_are_idempotent_and_send_after_close_raises() -> None:
    from twoway.errors import ConnectionClosed

    service = Recorder()
    async with (
        serve(service, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        conn = await service.next_connection()
        conn.write(b"bye\n")
        conn.close()
        conn.close()
        conn.abort()  # after close(): an RST, at once
        conn.abort()
        with pytest.raises(ConnectionClosed):
            await conn.send(b"late")
        await conn.write(b"dropped")  # dropped silently, never raises
        await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
        with contextlib.suppress(ConnectionResetError):
            await c.read_to_eof()


async def test_pause_and_resume_reading() -> None:
    service = Recorder()
    async with (
        serve(service, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        conn = await service.next_connection()
        assert conn.transport is not None
        conn.pause_reading()
        assert not conn.transport.is_reading()
        await c.send(b"held\n")
        conn.resume_reading()
        assert conn.transport.is_reading()
        assert await c.line() == b"got: held\n"

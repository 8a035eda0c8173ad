"""The library half: ``await twoway.connect(...)`` and ``async for conn in twoway.connect(...,
reconnect=True)``, in-process against in-process servers, on both event loops."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator

import pytest

import twoway
from twoway.net.client import happy_eyeballs
from twoway.net.server import Server
from twoway.services.echo import EchoService, UpperService

from .clientkit import UNIT, blackhole, fd_count, free_port


@pytest.fixture
async def upper() -> AsyncIterator[Server]:
    server = Server(UpperService(), "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


class Closer(twoway.Service):
    """Accepts and closes at once; counts the connections it has seen closed."""

    def __init__(self) -> None:
        self.count = 0
        self.closed = 0
        self._changed = asyncio.Event()

    def on_connect(self, conn: twoway.Connection) -> None:
        self.count += 1
        conn.close()

    def on_close(self, conn: twoway.Connection, exc: BaseException | None) -> None:
        self.closed += 1
        self._changed.set()

    async def all_closed(self) -> None:
        """Wait until every connection accepted so far is closed on the server side."""
        async with asyncio.timeout(5 * UNIT):
            while self.closed < self.count:
                self._changed.clear()
                await self._changed.wait()


def port_of(server: Server) -> int:
    return int(server.addresses[0][1])


async def test_connect_returns_a_connection_with_the_server_side_api(upper: Server) -> None:
    conn = await twoway.connect("127.0.0.1", port_of(upper))
    try:
        assert isinstance(conn, twoway.Connection)
        await conn.send_line("hello")
        assert await asyncio.wait_for(conn.readline(), 5 * UNIT) == 'You said "HELLO"'
        await conn.send("two\nthree\n")
        assert [await conn.readline(), await conn.readline()] == [
            'You said "TWO"',
            'You said "THREE"',
        ]
        assert conn.bytes_written == len(b"hello\ntwo\nthree\n")
        assert conn.bytes_read == len(b'You said "HELLO"\nYou said "TWO"\nYou said "THREE"\n')
        assert conn.peer == f"127.0.0.1:{port_of(upper)}"
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # Half-close: the server answers what it has, then closes; we read to the end.
        await conn.send_line("last")
        conn.end()
        assert [line async for line in conn] == ['You said "LAST"']
        await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
    finally:
        conn.abort()


class Counter(twoway.Service):
    """A raw client service that counts what it receives."""

    def __init__(self, expect: int) -> None:
        self.received = 0
        self.expect = expect
        self.all_in = asyncio.Event()

    def on_data(self, conn: twoway.Connection, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.expect:
            self.all_in.set()


async def test_a_client_keeps_reading_while_its_writes_wait() -> None:
    """Streaming 8 MiB to an echo server with small socket buffers: the server stops
    reading us while its replies to us are queued, so if the client stopped reading while
    its own writes waited (as a server connection does), both would wait forever."""
    server = Server(EchoService(), "127.0.0.1", 0)
    await server.start()
    total = 8 << 20
    counter = Counter(total)
    try:
        conn = await twoway.connect("127.0.0.1", port_of(server), counter)
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        chunk = b"x" * 65536
        async with asyncio.timeout(10 * UNIT):
            for _ in range(total // len(chunk)):
                await conn.write(chunk)
            await counter.all_in.wait()
        assert counter.received == total
        conn.close()
        await conn.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_keepalive_option_reaches_the_socket(upper: Server) -> None:
    options = twoway.ConnectionOptions(keepalive=twoway.Keepalive(idle=7, interval=2, count=3))
    conn = await twoway.connect("127.0.0.1", port_of(upper), options=options)
    try:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    finally:
        conn.abort()
        await conn.wait_closed()


async def test_a_host_name_resolves(upper: Server) -> None:
    # The server listens on 127.0.0.1 only; "localhost" may also resolve to ::1, which is
    # refused, so the race must end on the IPv4 address and the connection carry data.
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", port_of(upper))
    assert any(info[4][0] == "127.0.0.1" for info in infos), infos
    conn = await twoway.connect("localhost", port_of(upper))
    try:
        assert conn.peer == f"127.0.0.1:{port_of(upper)}"
        await conn.send_line("resolved")
        assert await asyncio.wait_for(conn.readline(), 5 * UNIT) == 'You said "RESOLVED"'
        conn.end()
        assert [line async for line in conn] == []
        await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
    finally:
        conn.abort()


async def test_refused_is_retryable_with_a_one_line_message() -> None:
    port = free_port()
    with pytest.raises(twoway.RetryableConnectError) as info:
        await twoway.connect("127.0.0.1", port)
    assert str(info.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ECONNREFUSED


async def test_unknown_host_is_fatal() -> None:
    with pytest.raises(twoway.FatalConnectError, match=r"^cannot connect to x\.invalid:1: unknown"):
        await twoway.connect("x.invalid", 1)


async def test_connect_timeout_is_retryable_and_leaves_no_descriptor() -> None:
    with blackhole() as (host, port):
        before = fd_count()
        with pytest.raises(twoway.RetryableConnectError, match=r"timed out$"):
            await twoway.connect(host, port, connect_timeout=0.2)
        assert fd_count() == before


async def test_reconnect_waits_the_backoff_sequence_then_gives_up() -> None:
    """Against a port nobody listens on: the waits follow the backoff exactly (no jitter
    here), numbered from attempt 2, and after max_attempts the last error is raised."""
    waits: list[tuple[float, int, str]] = []
    target = twoway.connect(
        "127.0.0.1",
        free_port(),
        reconnect=True,
        initial_delay=0.01,
        factor=2,
        max_delay=0.03,
        rng=None,
        max_attempts=5,
        on_wait=lambda delay, attempt, exc: waits.append((delay, attempt, str(exc))),
    )
    with pytest.raises(twoway.RetryableConnectError, match="connection refused"):
        async for _conn in target:
            raise AssertionError("nothing listens there")
    assert [(d, a) for d, a, _ in waits] == [(0.01, 2), (0.02, 3), (0.03, 4), (0.03, 5)]
    assert all(e.endswith("connection refused") for _, _, e in waits)


async def test_reconnect_jitter_comes_from_the_rng() -> None:
    draws = iter([0.0, 1.0 - 2**-53, 0.5])
    waits: list[float] = []
    target = twoway.connect(
        "127.0.0.1",
        free_port(),
        reconnect=True,
        initial_delay=0.01,
        jitter=0.5,
        rng=lambda: next(draws),
        max_attempts=4,
        on_wait=lambda delay, attempt, exc: waits.append(delay),
    )
    with pytest.raises(twoway.RetryableConnectError):
        async for _conn in target:
            pass
    assert waits == pytest.approx([0.005, 0.03, 0.04])


async def test_fatal_errors_are_not_retried() -> None:
    waits: list[float] = []
    target = twoway.connect("x.invalid", 1, reconnect=True, on_wait=lambda d, a, e: waits.append(d))
    with pytest.raises(twoway.FatalConnectError):
        async for _conn in target:
            pass
    assert waits == []


@pytest.mark.parametrize(
    ("stable_after", "expected"), [(0.0, [0.01] * 3), (60.0, [0.01, 0.02, 0.04])]
)
async def test_backoff_starts_over_after_a_connection_that_stayed_up(
    stable_after: float, expected: list[float]
) -> None:
    """A server that accepts and closes at once: with ``stable_after=0`` every connection
    counts as one that stayed up, so the delay stays at its first value; otherwise the
    backoff keeps growing (a flapping server is not hammered)."""
    service = Closer()
    server = Server(service, "127.0.0.1", 0)
    await server.start()
    waits: list[tuple[float, int, BaseException | None]] = []
    try:
        target = twoway.connect(
            "127.0.0.1",
            port_of(server),
            reconnect=True,
            initial_delay=0.01,
            rng=None,
            stable_after=stable_after,
            on_wait=lambda d, a, e: waits.append((d, a, e)),
        )
        seen = 0
        async for conn in target:
            assert await conn.readline() is None  # the server closed it
            seen += 1
            if seen == 4:
                break
    finally:
        server.close()
        await server.wait_closed()
    assert [d for d, _, _ in waits] == expected
    assert all(e is None for _, _, e in waits)  # lost connections, not failed attempts


async def test_the_body_finishing_closes_the_connection(upper: Server) -> None:
    """Leaving the loop body hands the connection back: it is closed, gracefully."""
    async for conn in twoway.connect("127.0.0.1", port_of(upper)):
        await conn.send_line("x")
        assert await conn.readline() == 'You said "X"'
    assert conn.is_closing
    await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)


async def test_100_reconnect_cycles_leak_no_descriptor() -> None:
    """100 connections accepted and closed, then 100 refused attempts: the process holds
    exactly as many descriptors as before."""
    service = Closer()
    server = Server(service, "127.0.0.1", 0)
    await server.start()
    try:
        # warm up (the loop's self-pipe, resolver threads...) before counting
        async for conn in twoway.connect("127.0.0.1", port_of(server)):
            await conn.readline()
        await service.all_closed()
        before = fd_count()
        cycles = 0
        async for conn in twoway.connect(
            "127.0.0.1", port_of(server), reconnect=True, initial_delay=0, max_delay=0
        ):
            await conn.readline()
            cycles += 1
            if cycles == 100:
                break
        await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
        await service.all_closed()
        assert service.count == 101
        assert fd_count() == before
    finally:
        server.close()
        await server.wait_closed()

    before = fd_count()

    refused: list[int] = []
    with pytest.raises(twoway.RetryableConnectError):
        async for _conn in twoway.connect(
            "127.0.0.1",
            free_port(),
            reconnect=True,
            initial_delay=0,
            max_delay=0,
            max_attempts=100,
            on_wait=lambda d, a, e: refused.append(a),
        ):
            pass
    assert len(refused) == 99
    assert fd_count() == before


async def test_happy_eyeballs_moves_on_from_an_address_that_hangs() -> None:
    """The first address never answers; 50 ms later the second is tried and wins. Tried in
    turn instead, the first would hang until the timeout. The loser's socket is closed."""
    with blackhole() as bad, socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; no accept needed
        good = listener.getsockname()
        infos = [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", bad),
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", good),
        ]
        before = fd_count()
        sock = await asyncio.wait_for(happy_eyeballs(infos, 0.05), 2 * UNIT)
        try:
            assert sock.getpeername() == good
            assert fd_count() == before + 1
        finally:
            sock.close()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(happy_eyeballs(infos, None), 0.3)
        assert fd_count() == before


async def test_happy_eyeballs_reports_every_address_when_all_fail() -> None:
    infos = [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", free_port())),
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.3", free_port())),
    ]
    with pytest.raises(OSError) as info:
        await happy_eyeballs(infos, 0.05)
    errors = getattr(info.value, "errors", [])
    assert [e.errno for e in errors] == [errno.ECONNREFUSED, errno.ECONNREFUSED]

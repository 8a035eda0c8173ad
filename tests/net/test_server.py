"""The Server: asyncio.Server-like lifecycle, connection limits, graceful shutdown, hooks.

Library level, real sockets on port 0, once per event loop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from helpers import READ_TIMEOUT, UNIT, Client, Recorder, port_of, wait_until
from twoway.net import Connection, ConnectionOptions, Server, serve
from twoway.services.echo import EchoService, UpperService

# --------------------------------------------------------------------------- lifecycle


async def test_async_with_serve_sockets_and_connection_count() -> None:
    service = Recorder()
    async with serve(service, "127.0.0.1", 0) as server:
        assert isinstance(server, Server)
        assert server.is_serving()
        assert service.listening.is_set() and service.server is server
        port = port_of(server)
        assert port != 0
        assert [s.getsockname() for s in server.sockets] == [("127.0.0.1", port)]
        assert server.connection_count == 0
        async with await Client.connect(port) as a, await Client.connect(port) as b:
            conns = {await service.next_connection(), await service.next_connection()}
            assert server.connection_count == 2
            assert server.connections == frozenset(conns)
            assert {c.remote_address[1] for c in conns} == {a.sockname[1], b.sockname[1]}
            assert await a.ask(b"x\n") == b"got: x\n"
        await service.next_close()
        await service.next_close()
        assert server.connection_count == 0
    assert not server.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await Client.connect(port)


async def test_await_serve_then_serve_forever_until_close() -> None:
    server = await serve(UpperService(), "127.0.0.1", 0)
    forever = asyncio.create_task(server.serve_forever())
    async with await Client.connect(port_of(server)) as c:
        assert await c.ask(b"hi\n") == b'You said "HI"\n'
        assert not forever.done()
        server.close()  # idempotent, graceful: the line is flushed, then FIN
        server.close()
        await asyncio.wait_for(forever, 5 * UNIT)
        await c.expect_eof()
    await asyncio.wait_for(server.wait_closed(), 5 * UNIT)
    assert server.connection_count == 0
    assert not server.is_serving()


async def test_wait_closed_waits_for_the_connections() -> None:
    server = await serve(UpperService(), "127.0.0.1", 0)
    c = await Client.connect(port_of(server))
    assert await c.ask(b"a\n") == b'You said "A"\n'
    server.stop_accepting()
    waiter = asyncio.create_task(server.wait_closed())
    # Open connections are left alone by stop_accepting: wait_closed waits for them.
    assert await c.ask(b"b\n") == b'You said "B"\n'
    assert not waiter.done()
    await c.close()
    await asyncio.wait_for(waiter, 5 * UNIT)


async def test_listen_error_is_one_line() -> None:
    from twoway.errors import ListenError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as info:
            await serve(UpperService(), "127.0.0.1", port)
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


# --------------------------------------------------------------------------- limits


async def test_max_connections_rejects_the_next_one_and_others_never_notice() -> None:
    n = 2
    service = Recorder()
    async with serve(service, "127.0.0.1", 0, max_connections=n) as server:
        port = port_of(server)
        async with await Client.connect(port) as a, await Client.connect(port) as b:
            await service.next_connection()
            await service.next_connection()
            async with await Client.connect(port) as extra:
                assert await extra.line() == f"error: server full (max {n} connections)\n".encode()
                await extra.expect_eof()
            assert await a.ask(b"a\n") == b"got: a\n"
            assert await b.ask(b"b\n") == b"got: b\n"
            assert server.stats.rejected_full == 1
            assert server.connection_count == n
            # The rejected connection never reached the service: no on_connect, no on_close.
            assert service.connected.empty() and service.closed.empty()
        # A freed slot is usable again.
        await service.next_close()
        async with await Client.connect(port) as c:
            assert await c.ask(b"c\n") == b"got: c\n"


async def test_max_connections_per_ip() -> None:
    service = Recorder()
    async with serve(service, "127.0.0.1", 0, max_connections_per_ip=1) as server:
        port = port_of(server)
        async with await Client.connect(port, source="127.0.0.2") as first:
            await service.next_connection()
            async with await Client.connect(port, source="127.0.0.2") as second:
                assert (
                    await second.line() == b"error: too many connections from 127.0.0.2 (max 1)\n"
                )
                await second.expect_eof()
            async with await Client.connect(port, source="127.0.0.3") as other_ip:
                assert await other_ip.ask(b"hi\n") == b"got: hi\n"
            assert await first.ask(b"still\n") == b"got: still\n"
            assert server.stats.rejected_per_ip == 1


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_tells_line_clients_then_eof() -> None:
    server = await serve(UpperService(), "127.0.0.1", 0)
    port = port_of(server)
    clients = [await Client.connect(port) for _ in range(3)]
    try:
        for c in clients:
            assert await c.ask(b"hi\r\n") == b'You said "HI"\r\n'
        started = time.monotonic()
        stopping = asyncio.create_task(server.shutdown(grace=10 * UNIT))
        for c in clients:
            assert await c.line() == b"server shutting down\r\n"
            await c.expect_eof()
            await c.close()
        await asyncio.wait_for(stopping, 5 * UNIT)
        # Everyone closed: shutdown did not wait for the grace period.
        assert time.monotonic() - started < 5 * UNIT
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await Client.connect(port)
    finally:
        for c in clients:
            await c.close()


@pytest.mark.parametrize("kind", ["line", "raw"])
async def test_shutdown_aborts_what_is_left_after_grace(kind: str) -> None:
    grace = 0.3 * UNIT
    service: Recorder | _RawRecorder = Recorder() if kind == "line" else _RawRecorder()
    server = await serve(service, "127.0.0.1", 0)
    c = await Client.connect(port_of(server))
    try:
        await service.next_connection()
        started = time.monotonic()
        await asyncio.wait_for(server.shutdown(grace=grace), 5 * UNIT)
        elapsed = time.monotonic() - started
        assert grace * 0.9 <= elapsed < grace + 2 * UNIT
        conn, _exc, _, _ = await service.next_close()
        assert conn.close_reason == "shutdown"
        assert server.connection_count == 0
        # The client was told (line services only), then got the FIN; it never closed.
        expected = b"server shutting down\n" if kind == "line" else b""
        assert await asyncio.wait_for(c.reader.read(100), 5 * UNIT) == expected
    finally:
        await c.close()


class _RawRecorder(EchoService):
    """echo, plus the connect and close events of :class:`Recorder`."""

    def __init__(self) -> None:
        self.connected: asyncio.Queue[Connection] = asyncio.Queue()
        self.closed: asyncio.Queue[tuple[Connection, BaseException | None, int, int]] = (
            asyncio.Queue()
        )

    def on_connect(self, conn: Connection) -> None:
        self.connected.put_nowait(conn)

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.closed.put_nowait((conn, exc, conn.bytes_read, conn.bytes_written))

    async def next_connection(self) -> Connection:
        return await asyncio.wait_for(self.connected.get(), READ_TIMEOUT)

    async def next_close(self) -> tuple[Connection, BaseException | None, int, int]:
        return await asyncio.wait_for(self.closed.get(), READ_TIMEOUT)


# --------------------------------------------------------------------------- hooks


async def test_hooks_connect_and_close_with_byte_counts() -> None:
    service = Recorder()
    async with serve(service, "127.0.0.1", 0) as server:
        async with await Client.connect(port_of(server)) as c:
            conn = await service.next_connection()
            assert conn.peer == f"127.0.0.1:{c.sockname[1]}"
            assert conn.local_address == ("127.0.0.1", port_of(server))
            assert conn.opened_at <= time.time()
            assert await c.ask(b"hello\n") == b"got: hello\n"
            await c.send(b"quit\n")
            assert await c.line() == b"Bye Bye!\n"
            await c.expect_eof()
        # The client closed after the server's FIN: the connection is gone.
        closed, exc, bytes_in, bytes_out = await service.next_close()
        assert closed is conn
        assert exc is None
        assert (bytes_in, bytes_out) == (len(b"hello\nquit\n"), len(b"got: hello\nBye Bye!\n"))
        assert conn.duration >= 0
        assert server.stats.bytes_in == bytes_in and server.stats.bytes_out == bytes_out


async def test_a_callback_that_raises_is_reported_and_only_its_connection_dropped() -> None:
    service = Recorder()
    async with serve(service, "127.0.0.1", 0) as server:
        port = port_of(server)
        async with await Client.connect(port) as good, await Client.connect(port) as bad:
            await service.next_connection()
            await service.next_connection()
            await bad.send(b"boom\n")
            with pytest.raises(ConnectionResetError):
                await bad.read_to_eof()
            conn, _, _, _ = await service.next_close()
            assert len(service.errors) == 1
            err_conn, err = service.errors[0]
            assert err_conn is conn and isinstance(err, RuntimeError)
            assert await good.ask(b"fine\n") == b"got: fine\n"
            async with await Client.connect(port) as later:
                assert await later.ask(b"new\n") == b"got: new\n"


async def test_default_on_error_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    class Buggy(UpperService):
        def on_line(self, conn: object, line: str) -> None:
            raise ValueError("a bug in the service")

    async with (
        serve(Buggy(), "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        with caplog.at_level(logging.ERROR, logger="twoway"):
            await c.send(b"x\n")
            with pytest.raises(ConnectionResetError):
                await c.read_to_eof()
    records = [r for r in caplog.records if "error in service" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None and "a bug in the service" in str(records[0].exc_info[1])


async def test_a_raising_hook_does_not_break_close_or_the_server() -> None:
    class BadClose(Recorder):
        def on_close(self, conn: object, exc: BaseException | None) -> None:
            super().on_close(conn, exc)  # type: ignore[arg-type]
            raise RuntimeError("on_close bug")

    service = BadClose()
    async with serve(service, "127.0.0.1", 0) as server:
        port = port_of(server)
        async with await Client.connect(port) as c:
            assert await c.ask(b"a\n") == b"got: a\n"
        await service.next_close()
        await wait_until(lambda: server.connection_count == 0, what="the registry to forget it")
        assert [type(e) for _, e in service.errors] == [RuntimeError]
        async with await Client.connect(port) as c:
            assert await c.ask(b"b\n") == b"got: b\n"


async def test_options_reach_every_connection() -> None:
    service = Recorder()
    options = ConnectionOptions(max_line=10)
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as c,
    ):
        conn = await service.next_connection()
        assert conn.options is options
        assert await c.ask(b"x" * 11 + b"\n") == b"error: line too long (max 10 bytes)\n"

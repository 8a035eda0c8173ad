"""The async/await handler style: ``async for line in conn`` and ``await conn.send(...)``.

Same protocol underneath: the inbox is bounded (reading pauses) and ``send`` waits for the
drain. Library level, real sockets, once per event loop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from helpers import UNIT, Client, port_of, wait_until
from twoway.net import Connection, ConnectionOptions, serve

MiB = 1024 * 1024


async def test_async_for_lines_and_send() -> None:
    seen: list[str] = []

    async def handler(conn: Connection) -> None:
        await conn.send(f"hello {conn.peer}\n")
        async for line in conn:
            seen.append(line)
            await conn.send(f"echo: {line}\n")

    async with (
        serve(handler, "127.0.0.1", 0) as server,
        await Client.connect(port_of(server)) as c,
    ):
        assert await c.line() == f"hello 127.0.0.1:{c.sockname[1]}\n".encode()
        assert await c.ask(b"one\n") == b"echo: one\n"
        assert await c.ask(b"two\r\n") == b"echo: two\n"
        # The handler sees every line, `quit` included: it decides what quit means.
        assert await c.ask(b"quit\n") == b"echo: quit\n"
        await c.send(b"last, unterminated")
        c.writer.write_eof()
        # The handler's loop ends at EOF; returning closes the connection (FIN).
        assert await c.read_to_eof() == b"echo: last, unterminated\n"
    assert seen == ["one", "two", "quit", "last, unterminated"]


async def test_raw_framing_reads_chunks() -> None:
    async def handler(conn: Connection) -> None:
        while data := await conn.read():
            await conn.send(data.upper())

    async with (
        serve(handler, "127.0.0.1", 0, framing="raw") as server,
        await Client.connect(port_of(server)) as c,
    ):
        await c.send(b"no newline")
        assert await asyncio.wait_for(c.reader.readexactly(10), 5 * UNIT) == b"NO NEWLINE"
        c.writer.write_eof()
        await c.expect_eof()


async def test_inbox_is_bounded_reading_pauses_until_the_handler_catches_up() -> None:
    inbox_limit = 64 * 1024
    go = asyncio.Event()
    conns: list[Connection] = []
    count = 0

    async def handler(conn: Connection) -> None:
        nonlocal count
        conns.append(conn)
        await go.wait()  # a handler busy elsewhere: lines pile up in the inbox
        async for _line in conn:
            count += 1
        await conn.send(f"{count} lines\n")

    line = b"x" * 99 + b"\n"
    n = 4 * MiB // len(line)
    options = ConnectionOptions(inbox_limit=inbox_limit)
    async with (
        serve(handler, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as c,
    ):
        c.writer.write(line * n)  # 4 MiB; the client transport buffers what is not sent
        c.writer.write_eof()
        await wait_until(lambda: bool(conns), what="the handler")
        conn = conns[0]
        transport = conn.transport
        assert transport is not None
        await wait_until(lambda: not transport.is_reading(), what="reading to pause")
        # At most one read (256 KiB) beyond the limit was taken in.
        assert conn.bytes_read <= inbox_limit + 256 * 1024
        go.set()
        assert await c.line() == f"{n} lines\n".encode()
        await c.expect_eof()


async def test_send_waits_for_a_peer_that_does_not_read() -> None:
    high = 64 * 1024
    sent = 0
    peak = 0
    blocked = asyncio.Event()

    async def handler(conn: Connection) -> None:
        nonlocal sent, peak
        chunk = b"y" * 16384
        while True:
            send = asyncio.ensure_future(conn.send(chunk))
            if not send.done():
                await asyncio.sleep(0)
                if not send.done():
                    blocked.set()
            await send
            sent += len(chunk)
            peak = max(peak, conn.write_buffer_size)

    options = ConnectionOptions(write_high=high, write_low=high // 4)
    loop = asyncio.get_running_loop()
    async with serve(handler, "127.0.0.1", 0, options=options) as server:
        sock = socket.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port_of(server)))
            await asyncio.wait_for(blocked.wait(), 10 * UNIT)
            stalled_at = sent
            # While nobody reads, the handler stays parked in send(): the queue is bounded.
            assert peak <= high + 16384
            received = 0
            while received < stalled_at + 1 * MiB:
                data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5 * UNIT)
                assert data
                received += len(data)
            assert sent > stalled_at  # reading let the handler go on
            assert peak <= high + 16384
        finally:
            sock.close()


async def test_a_handler_that_raises_is_logged_and_its_connection_aborted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(conn: Connection) -> None:
        async for line in conn:
            if line == "boom":
                raise RuntimeError("handler bug")
            await conn.send(f"ok {line}\n")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = port_of(server)
        async with await Client.connect(port) as good, await Client.connect(port) as bad:
            assert await good.ask(b"a\n") == b"ok a\n"
            with caplog.at_level(logging.ERROR, logger="twoway"):
                await bad.send(b"boom\n")
                with pytest.raises(ConnectionResetError):
                    await bad.read_to_eof()
            assert await good.ask(b"b\n") == b"ok b\n"
    assert any("handler bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_shutdown_tells_async_line_clients_and_cancels_stuck_handlers() -> None:
    cancelled = asyncio.Event()

    async def handler(conn: Connection) -> None:
        try:
            async for line in conn:
                await conn.send(f"ok {line}\n")
            await asyncio.sleep(3600)  # stuck after EOF: shutdown must not wait for it
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await serve(handler, "127.0.0.1", 0)
    async with await Client.connect(port_of(server)) as c:
        assert await c.ask(b"a\n") == b"ok a\n"
        stopping = asyncio.create_task(server.shutdown(grace=0.5 * UNIT))
        assert await c.line() == b"server shutting down\n"
        await c.expect_eof()
        with contextlib.suppress(ConnectionResetError):
            await c.close()
        await asyncio.wait_for(stopping, 5 * UNIT)
    await asyncio.wait_for(cancelled.wait(), 5 * UNIT)
    assert server.connection_count == 0

"""The line deadline (issue 11): a line unfinished after ``line_timeout`` ends the connection.

An idle timeout resets on every byte, so a peer trickling one byte a second is never idle;
only a deadline per line (nginx's ``client_header_timeout``) ends it. Lines that each finish
in time never trip it, however slowly they come.
"""

from __future__ import annotations

import asyncio

from helpers import UNIT, Client, Recorder, port_of
from twoway.net import ConnectionOptions, serve

DEADLINE = 0.5 * UNIT


async def _trickle_until_answered(client: Client, byte: bytes) -> bytes:
    """Send ``byte`` every tenth of the deadline (never idle, never a whole line) until the
    server answers; that answer."""

    async def trickle() -> None:
        while True:
            await client.send(byte)
            await asyncio.sleep(DEADLINE / 10)

    task = asyncio.create_task(trickle())
    try:
        return await client.line()
    finally:
        task.cancel()


async def test_a_trickled_line_is_cut_at_the_deadline() -> None:
    service = Recorder()
    options = ConnectionOptions(line_timeout=DEADLINE)
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as client,
    ):
        conn = await service.next_connection()
        loop = asyncio.get_running_loop()
        started = loop.time()

        line = await _trickle_until_answered(client, b"x")
        assert line == f"error: line not finished within {DEADLINE:g} s, disconnecting\n".encode()
        assert DEADLINE <= loop.time() - started < 4 * DEADLINE
        await client.expect_eof()
        await client.close()
        await service.next_close()
        assert conn.close_reason == "line timeout"
        assert server.stats.line_timeouts == 1
        assert service.lines == []


async def test_slow_lines_that_each_finish_in_time_are_served() -> None:
    service = Recorder()
    options = ConnectionOptions(line_timeout=DEADLINE)
    async with serve(service, "127.0.0.1", 0, options=options) as server:
        async with await Client.connect(port_of(server)) as client:
            # Six lines over 3 deadlines, each finished within half of one.
            for i in range(6):
                await client.send(b"li")
                await asyncio.sleep(DEADLINE / 4)
                assert await client.ask(b"ne %d\n" % i) == b"got: line %d\n" % i
                await asyncio.sleep(DEADLINE / 4)
            # Silence between lines is not an unfinished line either.
            await asyncio.sleep(2 * DEADLINE)
            assert await client.ask(b"still here\n") == b"got: still here\n"
        assert server.stats.line_timeouts == 0


async def test_an_endless_over_long_line_is_cut_too() -> None:
    service = Recorder()
    options = ConnectionOptions(line_timeout=DEADLINE, max_line=16)
    async with (
        serve(service, "127.0.0.1", 0, options=options) as server,
        await Client.connect(port_of(server)) as client,
    ):
        await client.send(b"y" * 100)
        assert await client.line() == b"error: line too long (max 16 bytes)\n"

        line = await _trickle_until_answered(client, b"y")
        assert line.startswith(b"error: line not finished within")

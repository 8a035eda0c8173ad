"""How a connection ended: closed by this side, or lost (trio's Closed vs Broken)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from helpers import UNIT, port_of
from twoway.errors import ConnectionClosed, ConnectionClosedLocally, ConnectionLost
from twoway.net import Connection, serve


async def _handled(handler_body: str) -> BaseException | None:
    """Run a server whose handler does ``handler_body`` and return what it raised."""
    raised: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        try:
            if handler_body == "close-then-send":
                conn.close()
                await conn.send(b"late\n")
            elif handler_body == "end-then-send":
                conn.end()
                await conn.send(b"late\n")
            else:  # the peer resets, then we send
                await conn.readline()  # the peer's first line
                await conn.wait_closed()
                await conn.send(b"too late\n")
        except BaseException as exc:
            raised.set_result(exc)
            raise
        raised.set_result(None)

    async with serve(handler, "127.0.0.1", 0) as server:
        sock = socket.create_connection(("127.0.0.1", port_of(server)))
        try:
            if handler_body == "reset":
                sock.sendall(b"hello\n")
                await asyncio.sleep(0.05 * UNIT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # an RST
            return await asyncio.wait_for(raised, 5 * UNIT)
        finally:
            sock.close()


@pytest.mark.parametrize("body", ["close-then-send", "end-then-send"])
async def test_sending_after_closing_here_is_closed_locally(body: str) -> None:
    exc = await _handled(body)
    assert isinstance(exc, ConnectionClosedLocally), exc
    assert isinstance(exc, ConnectionClosed)


async def test_sending_after_the_peer_reset_is_lost() -> None:
    exc = await _handled("reset")
    assert isinstance(exc, ConnectionLost), exc
    assert isinstance(exc, ConnectionClosed)
    assert "was lost" in str(exc)

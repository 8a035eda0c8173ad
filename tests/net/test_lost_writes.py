"""A lost connection receives no more writes (issue 11, defect 2), library level.

When many peers reset at once, a service that tells everyone about each departure (as chat
does) writes to transports whose peers are already gone but whose ``connection_lost`` has
not run yet. asyncio then logs ``socket.send() raised exception.`` for each such write:
1,500 resets made 1.1 million log lines. Writes to a transport that is closing are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from helpers import UNIT, gather_bounded, port_of, wait_until
from twoway.net import Connection, LineService, serve

PEERS = 300


class Announcer(LineService):
    """Tells every remaining connection about each departure, like a chat room."""

    name = "announcer"

    def __init__(self) -> None:
        self.conns: set[Connection] = set()
        self.gone = 0

    def on_connect(self, conn: Connection) -> None:
        self.conns.add(conn)

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.conns.discard(conn)
        self.gone += 1
        for other in self.conns:
            other.send_line(f"{conn.peer} left")


async def test_mass_reset_writes_nothing_to_lost_peers(caplog: pytest.LogCaptureFixture) -> None:
    service = Announcer()
    async with serve(service, "127.0.0.1", 0) as server:
        port = port_of(server)
        loop = asyncio.get_running_loop()

        async def one() -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            return sock

        socks = await gather_bounded(*(one() for _ in range(PEERS)))
        await wait_until(lambda: len(service.conns) == PEERS, 10 * UNIT, "every peer")
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            for sock in socks:  # an RST from each, all at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            await wait_until(lambda: service.gone == PEERS, 10 * UNIT, "every departure")
        noisy = [r for r in caplog.records if r.name == "asyncio"]
        assert not noisy, f"{len(noisy)} asyncio records, first: {noisy[0].getMessage()!r}"

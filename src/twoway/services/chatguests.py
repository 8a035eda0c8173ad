"""Guest numbers across the servers of a chat: blocks reserved on the bus.

With a bus, each server takes its guest numbers (``guest42``) from blocks reserved across
servers, so two servers never hand out the same one. :class:`GuestBlocks` asks for the next
block when fewer than half are left, so a burst of connections rarely waits for one; a
connection that finds none at hand waits, unread and not yet welcomed, for the block being
reserved (its first lines must be true). If the bus cannot reserve (it is down), the waiting
connections are welcomed with numbers of this server's own count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from twoway.sansio.chat import ChatCore

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["GUEST_BLOCK", "GuestBlocks"]

#: Guest numbers reserved across servers at a time.
GUEST_BLOCK = 128


class GuestBlocks:
    """Reserves blocks of guest numbers for ``core`` through ``reserve`` (the bus's
    ``reserve``), and welcomes the connections that waited for one with ``welcome`` (the
    chat's ``on_connect``)."""

    def __init__(
        self,
        core: ChatCore,
        reserve: Callable[[str, int], Awaitable[int | None]],
        welcome: Callable[[Conn], None],
    ) -> None:
        self.core = core
        self.reserve_block = reserve
        self.welcome = welcome
        # The reservation in flight, and the connections waiting for it.
        self._reserving: asyncio.Task[None] | None = None
        self._awaiting: list[Conn] = []
        self._unreserved = False  # welcoming them although no block could be reserved

    def at_hand(self, conn: Conn) -> bool:
        """Whether a guest number reserved for this server is at hand for ``conn`` (asking
        early for the next block). If not, ``conn`` waits, unread and not yet welcomed, for
        the block being reserved."""
        if self._unreserved:
            return True
        left = self.core.guests_at_hand
        if left < GUEST_BLOCK // 2 and self._reserving is None:
            loop = asyncio.get_running_loop()
            self._reserving = loop.create_task(self._reserve_then_welcome())
        if left > 0:
            return True
        conn.pause_reading()
        self._awaiting.append(conn)
        return False

    async def reserve(self) -> bool:
        """Reserve a block of guest numbers across servers; False if the bus could not."""
        first = await self.reserve_block("guests", GUEST_BLOCK)
        if first is None:
            return False
        self.core.lease_guests(first, GUEST_BLOCK)
        return True

    def cancel(self) -> None:
        """Stop the reservation in flight, if any (the server is stopping)."""
        if self._reserving is not None:
            self._reserving.cancel()

    async def _reserve_then_welcome(self) -> None:
        """Reserve a block, then welcome the connections that waited for it. If the bus could
        not reserve (it is down), they are welcomed with numbers of this server's count."""
        try:
            reserved = await self.reserve()
        finally:
            self._reserving = None
        waiting, self._awaiting = self._awaiting, []
        for conn in waiting:
            transport = conn.transport
            if conn.is_closing or transport is None or transport.is_closing():
                continue  # gone while it waited (perhaps not yet told: a reset)
            conn.resume_reading()
            self._unreserved = not reserved
            try:
                self.welcome(conn)  # may wait again, for the next block
            finally:
                self._unreserved = False

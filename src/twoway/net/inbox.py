"""The async inbox of a connection: ``readline()``, ``read()`` and ``async for``.

An :class:`~twoway.net.asyncapi.AsyncService` handler reads its connection with
``await conn.readline()``; the connection queues what it receives in an inbox
(:meth:`AsyncInbox.feed_inbox`) and pauses reading while more than ``inbox_limit`` bytes
wait. :class:`AsyncInbox` is that part of :class:`~twoway.net.connection.Connection`: a base
class of it (between it and :class:`~twoway.net.flow.FlowControl`), not an object of its
own, so a connection costs no extra allocation and callback services pay nothing for it.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from twoway.net.flow import FlowControl, Pause
from twoway.net.state import Phase

__all__ = ["AsyncInbox"]

_CLOSING = Phase.CLOSING.value


class AsyncInbox(FlowControl):
    """What a connection received for an async handler, and the handler's waiting for it."""

    __slots__ = ("_inbox", "_inbox_bytes", "_inbox_waiter")

    def __init__(self) -> None:
        super().__init__()
        self._inbox: collections.deque[Any] | None = None
        self._inbox_bytes = 0
        self._inbox_waiter: asyncio.Future[None] | None = None

    if TYPE_CHECKING:  # what the connection provides

        @property
        def at_eof(self) -> bool: ...

    async def _receive(self) -> Any:
        """The next inbox item (``str`` line or ``bytes`` chunk), ``None`` at the end."""
        while True:
            inbox = self._inbox
            if inbox:
                item = inbox.popleft()
                self._inbox_bytes -= len(item)
                if self._inbox_bytes <= self.options.inbox_limit // 2:
                    self.release_reading(Pause.INBOX)
                return item
            if self.at_eof or self.phase >= _CLOSING:
                return None
            waiter = self._inbox_waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def readline(self) -> str | None:
        """The next line (without terminator), or ``None`` once the peer has finished."""
        item = await self._receive()
        if item is None or isinstance(item, str):
            return item
        return bytes(item).decode("utf-8", "replace")

    async def read(self) -> bytes:
        """The next received chunk (raw framing), or ``b""`` once the peer has finished."""
        item = await self._receive()
        if item is None:
            return b""
        return item.encode() if isinstance(item, str) else bytes(item)

    def __aiter__(self) -> AsyncInbox:
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if line is None:
            raise StopAsyncIteration
        return line

    def feed_inbox(self, item: str | bytes) -> None:
        """Queue a received line (``str``) or chunk (``bytes``) for :meth:`readline`,
        :meth:`read` and ``async for``; reading pauses while more than ``inbox_limit`` bytes
        wait. What :class:`~twoway.net.asyncapi.AsyncService` does with every line."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = collections.deque()
        inbox.append(item)
        self._inbox_bytes += len(item)
        if self._inbox_bytes > self.options.inbox_limit:
            self.hold_reading(Pause.INBOX)
        self.wake_inbox()

    def wake_inbox(self) -> None:
        """Wake the reader waiting for the inbox (an item came, or the end)."""
        waiter = self._inbox_waiter
        if waiter is not None:
            self._inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)

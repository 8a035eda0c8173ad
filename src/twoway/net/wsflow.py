"""Flow control of a WebSocket connection: why its reading is paused, who waits for the tab
to read, and the slow-consumer policy, exactly as for TCP.

Reading is paused for several reasons at once (the tab does not read its messages, the
service asked, another reader owns the socket) and resumes only when none is left. Above
the write high-water mark reading pauses and ``drain()`` waits; a tab that lets more than
``max_queued`` bytes pile up, or stays above the mark for ``slow_grace`` seconds, is handed
to the service's ``on_slow``.

:class:`WsFlow` is the part of :class:`~twoway.net.wsconn.WsConnection` that does this; it
is the root of its chain of base classes, not an object of its own, so a connection costs no
extra allocation (the same shape as :class:`~twoway.net.flow.FlowControl` and the TCP
connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twoway.net.options import ConnectionOptions
    from twoway.net.service import LineService
    from twoway.net.wsconfig import WsConfig

__all__ = ["WsFlow"]

log = logging.getLogger("twoway.ws")

# The reasons reading is paused (bits of one int).
_WRITE = 1  # the tab does not read its messages
_USER = 2  # the service called pause_reading
_HANDOFF = 4  # hand_off_reading


class WsFlow:
    """Pause reasons, drain waiters and the slow-consumer policy of a WebSocket connection."""

    __slots__ = ("_drainers", "_paused", "_slow", "_slow_timer", "write_paused")

    # Provided by the connection.
    transport: asyncio.Transport | None
    options: ConnectionOptions
    service: LineService
    config: WsConfig
    close_reason: str | None
    is_closing: bool
    is_closed: bool

    def __init__(self) -> None:
        #: True while the transport's write buffer is above its high-water mark.
        self.write_paused = False
        self._paused = 0
        self._slow = False
        self._slow_timer: asyncio.TimerHandle | None = None
        self._drainers: list[asyncio.Future[None]] | None = None

    if TYPE_CHECKING:  # what the connection provides

        @property
        def peer(self) -> str: ...

        @property
        def write_buffer_size(self) -> int: ...

        def run_callback(self, callback: Callable[..., None], *args: Any) -> None: ...

        def closed_error(self) -> Exception: ...

        def give_reason(self, reason: str) -> None: ...

    # ------------------------------------------------------------------ protocol callbacks

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause(_WRITE)  # stop reading a tab that does not read its messages
        grace = self.options.slow_grace
        if grace is not None and self._slow_timer is None:
            self._slow_timer = asyncio.get_running_loop().call_later(grace, self._too_slow)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._resume(_WRITE)
        self._wake_drainers()

    # ------------------------------------------------------------------ the service's API

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark."""
        if self.is_closed:
            raise self.closed_error()
        if self.write_paused:
            await self.drain_waiter()
        if self.is_closed:
            raise self.closed_error()

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading`."""
        self._pause(_USER)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading` (flow control may keep reading paused)."""
        self._resume(_USER)

    def hand_off_reading(self) -> None:
        """Not for WebSockets (no zero-copy reader): reading just pauses."""
        self._pause(_HANDOFF)

    def take_back_reading(self) -> None:
        """Undo :meth:`hand_off_reading`."""
        self._resume(_HANDOFF)

    # ------------------------------------------------------------------ for the connection

    def drain_waiter(self) -> asyncio.Future[None]:
        """A future done when the tab has read enough (or the connection is gone)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._drainers is None:
            self._drainers = [fut]
        else:
            self._drainers.append(fut)
        return fut

    def check_queue(self, transport: asyncio.Transport) -> None:
        """Apply ``max_queued`` after a write that found the write buffer above its mark."""
        limit = self.options.max_queued
        if limit is not None and not self._slow and transport.get_write_buffer_size() > limit:
            self._too_slow()

    def forget_pauses(self) -> None:
        """Drop every reason at once (closing: the peer's close frame must still be read);
        the caller resumes the transport's reading itself."""
        self._paused = 0

    def stop_flow(self) -> None:
        """The connection is gone: cancel the slow timer and wake every waiter."""
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._wake_drainers()

    # ------------------------------------------------------------------ internals

    def _pause(self, why: int) -> None:
        if not self._paused and self.transport is not None and not self.is_closing:
            self.transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self.is_closed:
            self.transport.resume_reading()

    def _too_slow(self) -> None:
        self._slow_timer = None
        if self._slow or self.is_closed:
            return
        self._slow = True
        self.give_reason("too slow")
        log.info(
            "%s: WebSocket too slow (%d bytes queued), disconnecting",
            self.peer,
            self.write_buffer_size,
        )
        self.config.registry.note("too slow")
        self.run_callback(self.service.on_slow)

    def _wake_drainers(self) -> None:
        waiters = self._drainers
        if waiters:
            self._drainers = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

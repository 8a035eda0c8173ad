"""Flow control of a connection: why its reading is paused, who waits for the peer to read,
and the slow-consumer policy.

Reading is paused for several independent reasons at once (the service asked, the peer does
not read our replies, the async inbox is full, another reader owns the socket); it resumes
only when none is left. Outbound, above the write high-water mark a server connection stops
reading from its peer (the ``pipe`` behaviour of Node.js) and ``drain()`` waits; a client
connection keeps reading (see :meth:`FlowControl.pause_writing`). A peer that lets more than
``max_queued`` bytes pile up, or stays above the high-water mark for ``slow_grace`` seconds,
is handed to the service's ``on_slow``.

:class:`FlowControl` is the part of :class:`~twoway.net.connection.Connection` that does
this; it is a base class of it, not an object of its own, so a connection costs no extra
allocation.
"""

from __future__ import annotations

import asyncio
import logging
from enum import IntFlag
from typing import TYPE_CHECKING, cast

from twoway.net.state import CloseReason, Phase

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.net.options import ConnectionOptions
    from twoway.net.registry import Registry
    from twoway.net.service import Service

__all__ = ["FlowControl", "Pause"]

log = logging.getLogger("twoway.connection")


class Pause(IntFlag):
    """The reasons a connection's reading is paused; reading resumes when none is left."""

    USER = 1  #: the service called ``pause_reading``
    WRITE = 2  #: the peer does not read our replies (server side)
    INBOX = 4  #: the async inbox is over its limit
    HANDOFF = 8  #: another reader owns the socket's input (``hand_off_reading``)


_USER = Pause.USER
_WRITE = Pause.WRITE
_HANDOFF = Pause.HANDOFF


class FlowControl:
    """Pause reasons, drain waiters and the slow-consumer policy of a connection."""

    __slots__ = ("_drain_waiters", "_pause", "_slow", "_slow_timer", "write_paused")

    # Provided by the connection.
    transport: asyncio.Transport | None
    phase: int  # a Phase value
    options: ConnectionOptions
    registry: Registry | None
    service: Service

    def __init__(self) -> None:
        #: True while the transport's write buffer is above its high-water mark.
        self.write_paused = False
        self._pause = 0
        self._slow = False
        self._slow_timer: asyncio.TimerHandle | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None

    if TYPE_CHECKING:  # what the connection provides

        @property
        def peer(self) -> str: ...

        @property
        def write_buffer_size(self) -> int: ...

        def report_error(self, exc: Exception) -> None: ...

        def abort(self, reason: str | None = None) -> None: ...

        def closed_error(self) -> Exception: ...

        def give_reason(self, reason: str) -> None: ...

    # ------------------------------------------------------------------ protocol callbacks

    def pause_writing(self) -> None:
        self.write_paused = True
        # A server stops reading a peer that does not read its replies. A client must not:
        # streaming to an echoing server, each side would wait for the other to read first
        # and both would stop for good. The client's writers wait in drain() instead.
        if self.registry is not None:
            self.hold_reading(_WRITE)
            self.registry.paused(self.write_buffer_size)
        grace = self.options.slow_grace
        if grace is not None and self._slow_timer is None:
            self._slow_timer = asyncio.get_running_loop().call_later(grace, self._too_slow)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._stop_slow_timer()
        if self.answer_backlog():
            self.release_reading(_WRITE)
            self._wake_drainers()

    def answer_backlog(self) -> bool:
        """The peer read enough: answer what was received meanwhile and left unanswered;
        False if that filled the write queue again (reading stays paused). A framed class
        that keeps such a backlog overrides it."""
        return True

    # ------------------------------------------------------------------ the service's API

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark. Raises if lost."""
        if self._gone():
            raise self.closed_error()
        if self.write_paused:
            await self.drain_waiter()
        if self._gone():
            raise self.closed_error()

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading` (the kernel buffers)."""
        self.hold_reading(_USER)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`; reading may stay paused for flow control."""
        self.release_reading(_USER)

    def hand_off_reading(self) -> None:
        """Another reader (a thread splicing the socket into a file) takes over the input:
        reading stays paused, whatever else resumes it, until :meth:`take_back_reading`.
        Meanwhile :meth:`close` does not read to drain the peer (that would race the other
        reader): it closes at once, and the service's ``on_close`` must stop that reader."""
        self.hold_reading(_HANDOFF)

    def take_back_reading(self) -> None:
        """Undo :meth:`hand_off_reading`: this connection reads its socket again."""
        self.release_reading(_HANDOFF)

    # ------------------------------------------------------------------ for the connection

    def hold_reading(self, why: Pause) -> None:
        """Pause reading for ``why`` (on top of any other reason)."""
        if not self._pause and self.transport is not None and self.phase < Phase.CLOSING:
            self.transport.pause_reading()
        self._pause |= why

    def release_reading(self, why: Pause) -> None:
        """Drop the reason ``why``; reading resumes if no other is left."""
        if not self._pause & why:
            return
        self._pause &= ~why
        if not self._pause and self.transport is not None and self.phase != Phase.CLOSED:
            self.transport.resume_reading()

    def reading_held(self, why: Pause) -> bool:
        """Whether reading is paused for ``why``."""
        return bool(self._pause & why)

    def forget_pauses(self) -> None:
        """Drop every reason at once (closing: what the peer still sends is read and
        discarded); the caller resumes the transport's reading itself."""
        self._pause = 0

    def drain_waiter(self) -> asyncio.Future[None]:
        """A future done when the peer has read enough (or the connection is gone)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._drain_waiters is None:
            self._drain_waiters = [fut]
        else:
            self._drain_waiters.append(fut)
        return fut

    def check_queue(self) -> None:
        """Apply ``max_queued`` after a write that found the write buffer above its mark."""
        limit = self.options.max_queued
        if limit is not None and not self._slow and self.write_buffer_size > limit:
            self._too_slow()

    def stop_flow(self) -> None:
        """The connection is gone: cancel the slow timer and wake every waiter."""
        self._stop_slow_timer()
        self._wake_drainers()

    # ------------------------------------------------------------------ internals

    def _gone(self) -> bool:
        return self.phase == Phase.CLOSED

    def _stop_slow_timer(self) -> None:
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None

    def _wake_drainers(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _too_slow(self) -> None:
        self._slow_timer = None
        if self._slow or self.phase == Phase.CLOSED:
            return
        self._slow = True
        self.give_reason(CloseReason.TOO_SLOW)
        log.info("%s: too slow (%d bytes queued), disconnecting", self.peer, self.write_buffer_size)
        if self.registry is not None:
            self.registry.note(CloseReason.TOO_SLOW)
        try:
            self.service.on_slow(cast("Conn", self))  # a FlowControl is always a Connection
        except Exception as exc:
            self.report_error(exc)
            self.abort()

"""The connection contract: what a service may rely on, whatever carries the bytes.

:class:`Conn` is what every service callback receives. The TCP connection
(:class:`~twoway.net.connection.Connection`) implements it, and so does the fake connection
of :mod:`twoway.testing`, so a service can be tested without a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from twoway.net.groups import Group
from twoway.net.options import ConnectionOptions

__all__ = ["Conn", "Listening"]


class Conn(Protocol):
    """One bi-directional byte stream as a service sees it.

    Writing never blocks: :meth:`write` queues and returns an awaitable that completes once
    the queue is below its low-water mark. Ending is explicit: :meth:`end` half-closes,
    :meth:`close` flushes then closes (bounded by ``close_timeout``), :meth:`abort` resets
    at once; all three are idempotent.
    """

    #: Free for the service's per-connection data.
    state: Any
    #: The limits and timeouts this connection runs with.
    options: ConnectionOptions
    #: Why this side closed it (``"quit"``, ``"idle"``, ``"too slow"``...), else ``None``.
    close_reason: str | None
    bytes_read: int
    bytes_written: int
    remote_address: Any
    #: The transport carrying the bytes (``None`` once gone). For zero-copy paths (sendfile,
    #: splice) that need the socket behind it; everything else uses the methods below.
    transport: asyncio.Transport | None
    #: The write group the connection is in (a chat room) and its key there, set by
    #: :meth:`Group.add <twoway.net.groups.Group.add>`: a write takes the group's lines
    #: queued for it first, so they keep their order (see :mod:`twoway.net.groups`).
    group: Group | None
    group_key: int

    @property
    def peer(self) -> str:
        """The remote address as ``host:port`` (``[host]:port`` for IPv6)."""
        ...

    @property
    def local_address(self) -> Any:
        """The local socket address."""
        ...

    @property
    def opened_at(self) -> float:
        """When the connection was made, in seconds since the epoch."""
        ...

    @property
    def duration(self) -> float:
        """Seconds since the connection was opened."""
        ...

    @property
    def newline(self) -> bytes:
        """The line ending replies use: the one of the peer's last line (default LF)."""
        ...

    @property
    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the peer is gone."""
        ...

    @property
    def is_closed(self) -> bool:
        """True once the connection is gone (``on_close`` has run)."""
        ...

    @property
    def at_eof(self) -> bool:
        """True once the peer has half-closed."""
        ...

    @property
    def is_ended(self) -> bool:
        """True once this side has half-closed with :meth:`end` (or closed)."""
        ...

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet accepted by the kernel."""
        ...

    def write(self, data: bytes) -> Awaitable[None]:
        """Queue ``data``; never blocks; dropped once closing (see the class)."""
        ...

    def send_line(self, text: str) -> Awaitable[None]:
        """Write ``text`` (UTF-8) and the peer's line ending."""
        ...

    async def send(self, data: bytes | str) -> None:
        """Write and wait for the drain; raises ``ConnectionClosed`` once closed."""
        ...

    async def drain(self) -> None:
        """Wait until the write queue is below its low-water mark."""
        ...

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading`."""
        ...

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading` (flow control may keep reading paused)."""
        ...

    def hand_off_reading(self) -> None:
        """Another reader (a thread splicing the socket into a file) owns the input until
        :meth:`take_back_reading`."""
        ...

    def take_back_reading(self) -> None:
        """Undo :meth:`hand_off_reading`."""
        ...

    def end(self) -> None:
        """Half-close: flush, send FIN, keep reading."""
        ...

    def close(self, timeout: float | None = None, reason: str | None = None) -> None:
        """Flush, send FIN, close; abort after ``timeout`` if the peer does not finish."""
        ...

    def abort(self, reason: str | None = None) -> None:
        """Reset at once; queued data is discarded."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        ...


class Listening(Protocol):
    """What a service's ``on_start``/``on_listening`` get of the server running it."""

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket, with the real port."""
        ...

    @property
    def connection_count(self) -> int:
        """How many connections are open right now."""
        ...

"""Per-connection limits and socket options, declared once and shared by all connections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twoway.sansio.framing import DEFAULT_MAX_LINE

__all__ = ["ConnectionOptions", "Keepalive"]


@dataclass(frozen=True, slots=True)
class Keepalive:
    """TCP keep-alive: first probe after ``idle`` s of silence, then every ``interval`` s;
    the connection is dropped after ``count`` unanswered probes."""

    idle: int = 60
    interval: int = 10
    count: int = 5


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Limits and timeouts of one connection; every size is in bytes, every time in seconds.

    ``None`` disables a limit or a timeout.
    """

    #: Longest line a line service accepts (content, without the terminator).
    max_line: int | None = DEFAULT_MAX_LINE
    #: Close a connection that neither sent nor received anything for this long.
    idle_timeout: float | None = None
    #: Line framing: close a connection whose current line is still unfinished after this
    #: long (nginx's ``client_header_timeout``). A peer trickling one byte a second is never
    #: idle, so only a deadline per line ends it.
    line_timeout: float | None = None
    #: TCP keep-alive probes, or ``None`` for the kernel's default (off).
    keepalive: Keepalive | None = None
    #: Send small writes at once (``TCP_NODELAY``): interactive line services want it.
    nodelay: bool = True
    #: Write buffer high-water mark: above it the connection stops reading from its peer and
    #: ``drain()`` waits. 64 KiB keeps a few replies in flight without holding much memory.
    write_high: int = 64 * 1024
    #: Write buffer low-water mark: below it reading and writers resume.
    write_low: int = 16 * 1024
    #: Hard cap on queued outbound bytes (the transport's buffer included): a peer that lets
    #: more pile up is disconnected as too slow. ``None``: only the high-water mark applies.
    max_queued: int | None = None
    #: A peer whose writes stay above the high-water mark this long is disconnected as too slow.
    slow_grace: float | None = None
    #: ``close()`` waits this long for the peer to read what is queued and send its FIN,
    #: then aborts. Bounds every graceful close.
    close_timeout: float = 5.0
    #: Async handlers: stop reading once this many received bytes wait to be consumed.
    inbox_limit: int = 256 * 1024
    #: ``tap(conn, way, data)`` sees every chunk read (``"in"``) and written (``"out"``) and
    #: the end (``"close"``, ``b""``) of each connection (a :class:`~twoway.net.conn.Conn`):
    #: ``serve -x``. None: no tap and no cost (see ``net.framed.tapped``). Zero-copy paths
    #: (sendfile, splice) bypass it: whoever sets it turns them off.
    tap: Callable[[Any, str, bytes], None] | None = None

    def __post_init__(self) -> None:
        if self.write_low > self.write_high:
            raise ValueError("write_low must not exceed write_high")

"""Idle timeouts and keep-alive: the socket-level timers of a connection.

One :class:`Sweeper` per event loop replaces a timer per connection: the hot path only counts
bytes (which it does anyway), and the sweep compares the counts with the last sweep's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twoway.net.connection import Connection

__all__ = ["Sweeper", "set_keepalive", "sweeper_for"]


def set_keepalive(sock: Any, ka: Any) -> None:
    """Turn on TCP keep-alive with ``ka``'s idle, interval and count (where the OS has them)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(ka.idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(ka.interval)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, max(1, int(ka.count)))


class Sweeper:
    """One timer per event loop that checks every connection with an idle timeout.

    Cheaper than a timer per connection re-armed on every packet: the hot path only counts
    bytes (which it does anyway); the sweep compares the counts with the last sweep's.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conns: set[Connection] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.period = 1.0

    def add(self, conn: Connection) -> None:
        """Watch ``conn`` (its ``idle_timeout`` is set); sweep often enough for it."""
        timeout = conn.options.idle_timeout
        assert timeout is not None
        conn._idle_since = self.loop.time()
        self.conns.add(conn)
        period = max(0.02, min(1.0, timeout / 8))
        if period < self.period or self.handle is None:
            self.period = min(self.period, period)
            if self.handle is not None:
                self.handle.cancel()
            self.handle = self.loop.call_later(self.period, self.tick)

    def discard(self, conn: Connection) -> None:
        """Stop watching ``conn``; with nobody left, the timer stops."""
        self.conns.discard(conn)
        if not self.conns and self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.period = 1.0

    def tick(self) -> None:
        """One sweep: each connection compares its byte counts with the last sweep's."""
        now = self.loop.time()
        for conn in list(self.conns):
            timeout = conn.options.idle_timeout
            if timeout is not None:
                conn._idle_tick(now, timeout)
        self.handle = self.loop.call_later(self.period, self.tick) if self.conns else None


_sweepers: dict[asyncio.AbstractEventLoop, Sweeper] = {}


def sweeper_for(loop: asyncio.AbstractEventLoop) -> Sweeper:
    """The loop's one sweeper (made on first use; those of closed loops are dropped)."""
    sweeper = _sweepers.get(loop)
    if sweeper is None or sweeper.loop.is_closed():
        for old in [lp for lp in _sweepers if lp.is_closed()]:
            del _sweepers[old]
        sweeper = _sweepers[loop] = Sweeper(loop)
    return sweeper

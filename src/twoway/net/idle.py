"""Connection timers and keep-alive: idle timeouts, line deadlines, TCP keep-alive.

One :class:`Sweeper` per event loop replaces a timer per connection: the hot path only counts
bytes (which it does anyway), and each sweep hands every watched connection the time, through
the callback it registered, to compare its counts with the last sweep's.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Sweeper", "set_keepalive", "sweeper_for"]


def set_keepalive(sock: Any, ka: Any) -> None:
    """Turn on TCP keep-alive with ``ka``'s idle, interval and count (where the OS has them).

    Where the OS has ``TCP_USER_TIMEOUT``, unacknowledged data times out after the same
    ``idle + interval * count`` seconds: keep-alive only probes a connection that has nothing
    in flight, so without it a peer that vanished while we were sending to it would be held
    for the kernel's ~15 minutes of retransmissions. On a listening socket the options are
    inherited by every accepted connection (Linux), at no cost per connection.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        idle, interval, count = (
            max(1, int(ka.idle)),
            max(1, int(ka.interval)),
            max(1, int(ka.count)),
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            ms = (idle + interval * count) * 1000
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, ms)


#: What a watched connection registers: called with the loop's time at every sweep.
Check = Callable[[float], None]


class Sweeper:
    """One timer per event loop that hands the time to every watched connection.

    Cheaper than a timer per connection re-armed on every packet. The period adapts to the
    shortest timeout watched (an eighth of it, between 20 ms and 1 s), so a timeout fires
    at most an eighth late.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.checks: dict[Hashable, Check] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.period = 1.0

    def watch(self, key: Hashable, check: Check, timeout: float) -> None:
        """Call ``check(now)`` at every sweep until :meth:`unwatch` (``key``); sweep often
        enough for ``timeout``."""
        self.checks[key] = check
        period = max(0.02, min(1.0, timeout / 8))
        if period < self.period or self.handle is None:
            self.period = min(self.period, period)
            if self.handle is not None:
                self.handle.cancel()
            self.handle = self.loop.call_later(self.period, self.tick)

    def unwatch(self, key: Hashable) -> None:
        """Stop calling ``key``'s check; with nobody left, the timer stops."""
        self.checks.pop(key, None)
        if not self.checks and self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.period = 1.0

    def tick(self) -> None:
        """One sweep."""
        now = self.loop.time()
        for check in list(self.checks.values()):
            check(now)
        self.handle = self.loop.call_later(self.period, self.tick) if self.checks else None


_sweepers: dict[asyncio.AbstractEventLoop, Sweeper] = {}


def sweeper_for(loop: asyncio.AbstractEventLoop) -> Sweeper:
    """The loop's one sweeper (made on first use; those of closed loops are dropped)."""
    sweeper = _sweepers.get(loop)
    if sweeper is None or sweeper.loop.is_closed():
        for old in [lp for lp in _sweepers if lp.is_closed()]:
            del _sweepers[old]
        sweeper = _sweepers[loop] = Sweeper(loop)
    return sweeper

"""Where the metrics endpoint gets its figures: :class:`LocalSource` (the server of this
process) or, with ``--workers``, :class:`~twoway.metrics.workers.WorkersSource`. Both answer
the same three questions: the figures now, is the process healthy, is it ready.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from twoway.metrics.figures import Figures, read_figures
from twoway.net.server import Server

__all__ = ["LAG_LIMIT", "Check", "LagMonitor", "LocalSource", "Source"]

#: ``(ok, reason)``: a health or readiness verdict; the reason is one line for a person.
Check = tuple[bool, str]

#: Event-loop lag (seconds) above which ``/healthz`` answers 503: one second without
#: running a callback is a loop blocked by a bug, not a busy one.
LAG_LIMIT = 1.0


class Source(Protocol):
    """What the HTTP endpoint asks (see the module docstring)."""

    async def figures(self) -> Figures:
        """A reading of every counter now."""
        ...

    async def health(self) -> Check:
        """Is the process alive and its event loop responsive?"""
        ...

    async def ready(self) -> Check:
        """Should a load balancer send it clients: listening, not shutting down, its bus
        connected when it has one?"""
        ...


class LagMonitor:
    """Measures how late the event loop runs a timer set every ``interval`` seconds.

    A loop blocked by a callback that never yields runs nothing, so the check that reads
    this runs late too: :meth:`check` also counts the time since the last tick.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        #: The lag measured at the last tick, in seconds.
        self.lag = 0.0
        #: The worst lag of the last few ticks (what ``/healthz`` and the gauge report).
        self.recent = 0.0
        self._last = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start ticking on the running loop. Idempotent."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle = self._loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Stop ticking. Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.lag = max(0.0, now - self._last - self.interval)
        # Decays by half a tick's worth of seconds per tick: one stall shows for a while.
        self.recent = max(self.lag, self.recent * 0.9)
        self._last = now
        self._handle = self._loop.call_later(self.interval, self._tick)

    def current(self) -> float:
        """The lag to report now: the recent worst, or how overdue the next tick is."""
        if self._loop is None:
            return 0.0
        overdue = self._loop.time() - self._last - self.interval
        return max(self.recent, overdue, 0.0)

    def check(self) -> Check:
        """``(False, "event loop lagging 1.3 s")`` above :data:`LAG_LIMIT`."""
        lag = self.current()
        if lag > LAG_LIMIT:
            return False, f"event loop lagging {lag:.1f} s (limit {LAG_LIMIT:g} s)"
        return True, f"ok (event loop lag {lag * 1000:.0f} ms)"


class LocalSource:
    """The figures of ``server`` (its registry and service) in this process."""

    def __init__(self, server: Server, monitor: LagMonitor | None = None) -> None:
        self.server = server
        self.monitor = monitor if monitor is not None else LagMonitor()
        self.started = time.time()
        #: Set once the process starts shutting down (``/readyz`` then answers 503).
        self.stopping = False

    def read(self, *, with_process: bool = True) -> Figures:
        """A reading, synchronously (for the exit summary and ``/stats``)."""
        server = self.server
        return read_figures(
            server.registry,
            server.service,
            started=self.started,
            loop_lag=self.monitor.current(),
            with_process=with_process,
        )

    async def figures(self) -> Figures:
        """A reading now (see :class:`Source`)."""
        return self.read()

    async def health(self) -> Check:
        """The loop's lag (see :class:`LagMonitor`)."""
        return self.monitor.check()

    async def ready(self) -> Check:
        """Listening, not shutting down, the bus (if any) connected."""
        return self.ready_now()

    def ready_now(self) -> Check:
        """:meth:`ready`, synchronously (a worker answers its supervisor with it)."""
        if self.stopping or not self.server.registry.accepting:
            return False, "shutting down"
        if not self.server.is_serving():
            return False, "not listening yet"
        figures = self.server.service.figures()
        if figures.get("bus_up", 1) == 0:
            return False, "the bus (Redis) is not connected"
        return True, "ready"

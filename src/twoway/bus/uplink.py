"""Keeping a Redis bus connected: serve while up, reconnect with backoff while down.

:class:`Uplink` runs the sessions of a :class:`~twoway.bus.redis.RedisBus` one after the
other until it is halted: a session's read and write loops run until one of them fails, then
the connection is closed and retried, following :func:`~twoway.sansio.backoff.
backoff_delays`, until a new handshake succeeds. It is handed what it may do (connect, start
the loops, abort and close the sockets, wake the writer), never the bus.

An outage is two log lines, whatever happens in between: one when Redis becomes unreachable
(``bus: redis unreachable (connection refused), retrying in 0.5 s``) and one when it is back
(``bus: redis back, 14 messages sent``), once what was queued meanwhile is out. Redis
refusing the credentials or a permission is one error line per distinct cause instead: the
operator must change something, and the retries go on until it is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from twoway.bus.clients import describe, expected_errors, refusal, safe_url
from twoway.bus.options import RedisBusOptions
from twoway.sansio.backoff import backoff_delays

__all__ = ["Uplink"]

log = logging.getLogger("twoway.bus")


class Uplink:
    """The connection of the bus at ``url``, kept up until :meth:`halt` (see the module
    docstring). ``connect`` is the handshake (raises on any failure), ``loops`` starts a
    session's read and write loops, ``abort`` closes the sockets under what is in flight,
    ``close`` closes the clients, ``wake`` ends a write loop that waits for items.

    Not thread-safe: use it from the event loop that runs the bus.
    """

    def __init__(
        self,
        url: str,
        options: RedisBusOptions,
        *,
        connect: Callable[[], Awaitable[None]],
        loops: Callable[[], list[Coroutine[Any, Any, None]]],
        abort: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
    ) -> None:
        self.url = url
        self.options = options
        self._connect = connect
        self._loops = loops
        self._abort = abort
        self._close = close
        self._wake = wake
        #: Whether Redis is connected now.
        self.up = False
        self._halt = asyncio.Event()  # halt() was called
        self._session_over = False  # the current connection is being given up
        self._down_since: float | None = None
        self._backlog: int | None = None  # messages queued when redis came back
        self._backlog_done = 0
        self._refusal: str | None = None  # the refusal last logged (one line per cause)

    @property
    def halted(self) -> bool:
        """Whether :meth:`halt` was called."""
        return self._halt.is_set()

    def halt(self) -> None:
        """Stop for good: the current session ends and nothing is retried. The caller
        closes the sockets under what is in flight (every wait is bounded anyway).
        Idempotent."""
        self._halt.set()

    def over(self) -> bool:
        """Whether the session's loops should end (the connection is being given up, or
        the uplink halted)."""
        return self._session_over or self._halt.is_set()

    def came_up(self, node: int, pending: int) -> bool:
        """A handshake succeeded (node number ``node``, ``pending`` messages queued): log it
        the first time; after an outage, log that Redis is back once the ``pending``
        messages are out (see :meth:`sent`). True for a reconnection."""
        self.up = True
        if self._down_since is None:
            log.info("bus: redis at %s, node %d", safe_url(self.url), node)
            return False
        self._backlog = pending
        self._backlog_done = 0
        if not self._backlog:
            self._back()
        return True

    def sent(self, count: int, left: int) -> None:
        """``count`` messages went out and ``left`` wait: Redis is back once everything
        queued during the outage is out."""
        if self._backlog is None:
            return
        self._backlog_done += count
        if self._backlog_done >= self._backlog or not left:
            self._back()

    def _back(self) -> None:
        assert self._down_since is not None
        down = asyncio.get_running_loop().time() - self._down_since
        log.info("bus: redis back, %d messages sent (down %.1f s)", self._backlog or 0, down)
        self._backlog = None
        self._down_since = None

    async def run(self, down: BaseException | None) -> None:
        """Keep the bus connected until :meth:`halt`: serve while up, reconnect with backoff
        when down (``down``: why the connection is down, None while it is up)."""
        up = down is None
        while not self._halt.is_set():
            if not up and not await self._reconnect(down):
                return
            down = await self._serve()
            up = False  # whatever ended the session, the connection is gone

    def _refused(self, exc: BaseException | None) -> bool:
        """Log a refusal of the credentials or of a permission (one error line per distinct
        cause): the operator must change something, retrying alone will not do."""
        problem = None if exc is None else refusal(exc, self.url, self.options.prefix)
        if problem is None:
            return False
        if problem != self._refusal:
            self._refusal = problem
            log.error("bus: %s; retrying until it is fixed", problem)
        return True

    async def _reconnect(self, down: BaseException | None) -> bool:
        """Retry until connected (True) or halted (False)."""
        o = self.options
        self.up = False
        delays = backoff_delays(o.retry_initial, 2.0, o.retry_max, 0.1, random.random)
        delay = next(delays)
        if self._down_since is None:  # not yet reported (a failed reconnection is not news)
            self._down_since = asyncio.get_running_loop().time()
            if not self._refused(down):
                log.warning(
                    "bus: redis unreachable (%s), retrying in %.1f s", describe(down), delay
                )
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), delay)
            if self._halt.is_set():
                return False
            try:
                await self._connect()
            except Exception as exc:
                await self._close()
                if not self._refused(exc):
                    log.debug("bus: redis still unreachable (%s)", describe(exc))
                delay = next(delays)
            else:
                self._refusal = None
                return True

    async def _serve(self) -> BaseException | None:
        """Read and write until one of them fails (or :meth:`halt`); return why (None: the
        connection was closed, by :meth:`halt` or by Redis)."""
        o = self.options
        loop = asyncio.get_running_loop()
        self._session_over = False
        tasks = [loop.create_task(coro) for coro in self._loops()]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # What ended first says why; what the other one raises once we close its socket
        # under it does not.
        exc = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
        # End the other one without cancelling it (see RedisBus.stop()).
        self.up = False
        self._session_over = True
        self._wake()
        await self._abort()
        _, pending = await asyncio.wait(tasks, timeout=o.block + o.timeout)
        for task in pending:  # a last resort: every command has a timeout
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=o.timeout)
        for task in tasks:  # retrieved, so that asyncio does not log them
            if task.done() and not task.cancelled():
                task.exception()
        if self._halt.is_set():
            exc = None  # halted: the caller closed the connections
        elif exc is not None and not isinstance(exc, expected_errors()):
            log.error("bus: unexpected error (handled as a lost connection)", exc_info=exc)
        await self._close()
        return exc

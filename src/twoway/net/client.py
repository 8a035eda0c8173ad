"""The client side: :func:`connect` gives the same :class:`Connection` API as the server.

``conn = await connect(host, port)`` opens one connection (``async for line in conn``,
``await conn.send(...)``); ``async for conn in connect(host, port, reconnect=True)`` yields a
new connection each time the previous one is lost, waiting an exponential backoff with jitter
between attempts (1 s first, as in the classic Node client) and starting over after a
connection that stayed up ``stable_after`` seconds.

Failures are sorted: :class:`RetryableConnectError` (refused, reset, timed out, unreachable)
is retried by the reconnecting form; :class:`FatalConnectError` (unknown host, an address
that cannot work) is raised at once. Both carry a one-line message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from twoway.errors import FatalConnectError, RetryableConnectError, describe_oserror
from twoway.net.asyncapi import AsyncService
from twoway.net.connection import Connection, connection_class
from twoway.net.handlers import Framing, Service
from twoway.net.options import ConnectionOptions
from twoway.sansio.backoff import backoff_delays

__all__ = ["ClientService", "connect"]

log = logging.getLogger("twoway.client")

_FATAL_ERRNOS = {errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT, errno.EACCES}
_FATAL_GAI = {socket.EAI_NONAME, socket.EAI_SERVICE, getattr(socket, "EAI_NODATA", -5)}


class ClientService(AsyncService):
    """What a connection made by :func:`connect` without a handler runs: received lines (or
    chunks) wait in the connection's bounded inbox for ``readline``/``read``/``async for``."""

    name = "client"

    def __init__(self, framing: Framing = "line") -> None:
        self.framing = framing  # type: ignore[misc]
        self.name = "client"  # type: ignore[misc]

    def on_connect(self, conn: Connection) -> None:
        """Nothing to start: the caller drives the connection."""

    def on_line_too_long(self, conn: Connection, limit: int) -> None:
        log.warning("%s: received a line over %d bytes: skipped", conn.peer, limit)

    def on_shutdown(self, conn: Connection, reason: str) -> None:
        conn.close()


def _classify(exc: BaseException, where: str) -> RetryableConnectError | FatalConnectError:
    if isinstance(exc, socket.gaierror):
        if exc.errno in _FATAL_GAI:
            return FatalConnectError(f"cannot connect to {where}: unknown host")
        return RetryableConnectError(f"cannot connect to {where}: name lookup failed")
    if isinstance(exc, TimeoutError):
        return RetryableConnectError(f"cannot connect to {where}: timed out")
    if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS:
        return FatalConnectError(f"cannot connect to {where}: {describe_oserror(exc)}")
    return RetryableConnectError(f"cannot connect to {where}: {describe_oserror(exc)}")


class connect:
    """Connect to ``host:port``: ``await`` it for one connection, or ``async for`` it with
    ``reconnect=True`` for a connection after every loss.

    ``handler`` is a :class:`Service` (callbacks) or ``None`` (read with ``async for``).
    ``connect_timeout`` bounds each attempt (``None``: the kernel's). Host names are tried
    with Happy Eyeballs (``happy_eyeballs_delay``). Backoff: ``initial_delay``, ``factor``,
    ``max_delay``, ``jitter``; ``rng`` is the random source (tests pass a fixed one).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Service | None = None,
        *,
        framing: Framing = "line",
        options: ConnectionOptions | None = None,
        connect_timeout: float | None = 10.0,
        happy_eyeballs_delay: float | None = 0.25,
        local_addr: tuple[str, int] | None = None,
        ssl: Any = None,
        reconnect: bool = False,
        initial_delay: float = 1.0,
        factor: float = 2.0,
        max_delay: float = 30.0,
        jitter: float = 0.1,
        stable_after: float = 5.0,
        max_attempts: int | None = None,
        rng: Callable[[], float] | None = random.random,
        on_wait: Callable[[float, int, BaseException | None], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.service = handler if handler is not None else ClientService(framing)
        self.options = options if options is not None else ConnectionOptions()
        self.connect_timeout = connect_timeout
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.local_addr = local_addr
        self.ssl = ssl
        self.reconnect = reconnect
        self.backoff = (initial_delay, factor, max_delay, jitter)
        self.stable_after = stable_after
        self.max_attempts = max_attempts
        self.rng = rng
        self.on_wait = on_wait
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def open(self) -> Connection:
        """One attempt. Raises :class:`RetryableConnectError` or :class:`FatalConnectError`."""
        loop = asyncio.get_running_loop()
        cls = connection_class(self.service)
        kwargs: dict[str, Any] = {"ssl": self.ssl, "local_addr": self.local_addr}
        if self.happy_eyeballs_delay is not None:
            kwargs["happy_eyeballs_delay"] = self.happy_eyeballs_delay
        log.debug("looking up %s", self.host)
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, conn = await loop.create_connection(
                    lambda: cls(self.service, self.options, None), self.host, self.port, **kwargs
                )
        except (OSError, TimeoutError) as exc:
            raise _classify(exc, self.where) from exc
        log.debug(
            "connected %s -> %s",
            _addr(conn.local_address),
            _addr(conn.remote_address),
        )
        return conn

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.open().__await__()

    def __aiter__(self) -> AsyncIterator[Connection]:
        return self._reconnecting()

    async def _reconnecting(self) -> AsyncIterator[Connection]:
        loop = asyncio.get_running_loop()
        delays = backoff_delays(*self.backoff, rng=self.rng)
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = await self.open()
            except RetryableConnectError as exc:
                if not self.reconnect or (
                    self.max_attempts is not None and attempt >= self.max_attempts
                ):
                    raise
                await self._wait(next(delays), attempt + 1, exc)
                continue
            started = loop.time()
            try:
                yield conn
                await conn.wait_closed()
            finally:
                if not conn.is_closed:
                    conn.close()
            if not self.reconnect:
                return
            if loop.time() - started >= self.stable_after:
                delays = backoff_delays(*self.backoff, rng=self.rng)
                attempt = 0
            await self._wait(next(delays), attempt + 1, None)

    async def _wait(self, delay: float, attempt: int, exc: BaseException | None) -> None:
        if self.on_wait is not None:
            self.on_wait(delay, attempt, exc)
        else:
            log.info("reconnecting in %.1f s (attempt %d)", delay, attempt)
        await asyncio.sleep(delay)


def _addr(addr: Any) -> str:
    from twoway.net.connection import format_address

    return format_address(addr)

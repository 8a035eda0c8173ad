"""The client side: :func:`connect` gives the same :class:`Connection` API as the server.

``conn = await connect(host, port)`` opens one connection (``async for line in conn``,
``await conn.send(...)``); ``async for conn in connect(host, port, reconnect=True)`` yields a
new connection each time the previous one is lost, waiting an exponential backoff with jitter
between attempts (1 s first, as in the classic Node client) and starting over after a
connection that stayed up ``stable_after`` seconds.

Host names are resolved once per attempt and their addresses raced with Happy Eyeballs
(RFC 8305): the next address is tried ``happy_eyeballs_delay`` seconds after the previous one
started, or at once when it fails; the first to connect wins and the others are closed. This
is done here rather than with asyncio's ``happy_eyeballs_delay`` argument because uvloop's
``create_connection`` has no such argument, and because asyncio 3.11 folds the errors of
several addresses into one ``OSError`` whose only content is a message.

Failures are sorted: :class:`RetryableConnectError` (refused, reset, timed out, unreachable,
a temporary name-lookup failure) is retried by the reconnecting form;
:class:`FatalConnectError` (unknown host, an address that cannot work) is raised at once.
Both carry a one-line message and chain the original error.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
import ssl as _ssl
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any

from twoway.errors import FatalConnectError, RetryableConnectError, describe_oserror
from twoway.net.address import format_address
from twoway.net.asyncapi import AsyncService
from twoway.net.conn import Conn
from twoway.net.connection import Connection
from twoway.net.framed import connection_class
from twoway.net.options import ConnectionOptions
from twoway.net.service import Framing, Service
from twoway.sansio.backoff import backoff_delays

__all__ = ["ClientService", "connect", "happy_eyeballs", "is_ip_address", "tls_failure"]

log = logging.getLogger("twoway.client")

# An address this machine can never use: trying again changes nothing.
_FATAL_ERRNOS = {errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT, errno.EACCES}
# "No such host" answers; EAI_AGAIN (a resolver that did not answer) stays retryable.
_FATAL_GAI = {socket.EAI_NONAME, socket.EAI_SERVICE, getattr(socket, "EAI_NODATA", -5)}

AddrInfo = tuple[int, int, int, str, Any]


class ClientService(AsyncService):
    """What a connection made by :func:`connect` without a handler runs: received lines (or
    chunks) wait in the connection's bounded inbox for ``readline``/``read``/``async for``."""

    name = "client"

    def __init__(self, framing: Framing = "line") -> None:
        self.framing = framing  # type: ignore[misc]
        self.name = "client"  # type: ignore[misc]

    def on_connect(self, conn: Conn) -> None:
        """Nothing to start: the caller drives the connection."""

    def on_eof(self, conn: Conn) -> None:
        """The server has finished sending. If we have too (``end()``), nothing more can
        happen: close, so that ``wait_closed()`` returns. Otherwise the caller still may
        send, and closes when done."""
        if conn.is_ended:
            conn.close()

    def on_line_too_long(self, conn: Conn, limit: int) -> None:
        log.warning("%s: received a line over %d bytes: skipped", conn.peer, limit)

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        conn.close()


def tls_failure(exc: BaseException, servername: str | None) -> str | None:
    """``TLS: certificate verify failed: self-signed certificate (host 127.0.0.1)``: the
    phrase for a failed client handshake, or ``None`` if ``exc`` is not a TLS error."""
    if isinstance(exc, _ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "unknown reason"
        return f"TLS: certificate verify failed: {reason} (host {servername})"
    if isinstance(exc, _ssl.SSLError):
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        # What a plain-text server's answer (or its echo of our hello) looks like to TLS.
        plain = ("wrong version number", "packet length too long", "unexpected message")
        if reason in plain or reason == "record layer failure":
            reason += " (is it a TLS server?)"
        elif reason.startswith(("tlsv1 alert", "sslv3 alert", "tlsv13 alert")):
            reason = "the server refused the handshake: " + reason.split(" ", 2)[-1]
        return f"TLS: {reason}"
    return None


def _classify(
    exc: BaseException, where: str, servername: str | None = None
) -> RetryableConnectError | FatalConnectError:
    """The typed, one-line error for a failed attempt to reach ``where``. A certificate
    that does not verify is fatal: trying again shows the same certificate."""
    tls = tls_failure(exc, servername)
    if tls is not None:
        if isinstance(exc, _ssl.SSLCertVerificationError):
            return FatalConnectError(f"cannot connect to {where}: {tls}")
        return RetryableConnectError(f"cannot connect to {where}: {tls}")
    if isinstance(exc, socket.gaierror):
        if exc.errno in _FATAL_GAI:
            return FatalConnectError(f"cannot connect to {where}: unknown host")
        return RetryableConnectError(f"cannot connect to {where}: name lookup failed")
    if isinstance(exc, TimeoutError):
        return RetryableConnectError(f"cannot connect to {where}: timed out")
    if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS:
        return FatalConnectError(f"cannot connect to {where}: {describe_oserror(exc)}")
    return RetryableConnectError(f"cannot connect to {where}: {describe_oserror(exc)}")


class _AllFailed(OSError):
    """Every address of a host failed; ``errors`` holds one error per address, in order."""

    def __init__(self, errors: Sequence[OSError]) -> None:
        first = errors[0]
        super().__init__(first.errno, first.strerror or str(first))
        self.errors = list(errors)


def _interleave(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """Alternate address families, first family first (RFC 8305 section 4)."""
    by_family: dict[int, list[AddrInfo]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[AddrInfo] = []
    while queues:
        for queue in queues:
            out.append(queue.pop(0))
        queues = [q for q in queues if q]
    return out


async def _attempt(info: AddrInfo, local_addr: tuple[str, int] | None) -> socket.socket:
    """Connect one non-blocking socket to one resolved address; close it on any failure."""
    family, type_, proto, _, address = info
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        if local_addr is not None:
            sock.bind(local_addr)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:  # cancellation included: never leak the descriptor
        sock.close()
        raise
    return sock


async def happy_eyeballs(
    infos: Sequence[AddrInfo],
    delay: float | None,
    local_addr: tuple[str, int] | None = None,
) -> socket.socket:
    """Connect to the first of ``infos`` (``getaddrinfo`` results) that answers.

    Attempts start in order, each ``delay`` seconds after the previous one or as soon as it
    fails (``delay=None``: one after the other). The first connected socket is returned
    (non-blocking); every other socket is closed, whether it lost the race or was still
    trying, and also when the caller is cancelled. If all fail, raises an ``OSError`` whose
    ``errors`` attribute lists each address's error.
    """
    if not infos:
        raise OSError(errno.EADDRNOTAVAIL, "no address to connect to")
    if len(infos) == 1:
        return await _attempt(infos[0], local_addr)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[socket.socket]] = []
    winner: socket.socket | None = None
    pending = list(infos)
    try:
        while winner is None:
            if pending:
                tasks.append(loop.create_task(_attempt(pending.pop(0), local_addr)))
            running = {t for t in tasks if not t.done()}
            if not running:
                if pending:
                    continue
                break
            done, _ = await asyncio.wait(
                running,
                timeout=delay if pending else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                if task.exception() is None:
                    winner = task.result()
                    break
    finally:
        for task in tasks:
            task.cancel()
        # Wait for the losers so that their sockets are closed before we return; a loser
        # that connected in the same instant as the winner is closed here too.
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is None:
                sock = task.result()
                if sock is not winner:
                    sock.close()
    if winner is not None:
        return winner
    errors: list[OSError] = []
    for task in tasks:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, OSError):
            errors.append(exc)
    if not errors:
        raise OSError(errno.ECONNREFUSED, "connection failed")
    raise _AllFailed(errors)


def _summarise(exc: BaseException) -> BaseException:
    """The one error that describes a failed race: the shared one if all addresses failed
    the same way, otherwise the first that is not 'refused' (the least expected)."""
    if not isinstance(exc, _AllFailed):
        return exc
    errs = exc.errors
    if all(e.errno == errs[0].errno for e in errs):
        return errs[0]
    for err in errs:
        if err.errno != errno.ECONNREFUSED:
            return err
    return errs[0]


def is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IP address (IPv6 with an optional ``%zone``), not a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class connect:
    """Connect to ``host:port``: ``await`` it for one connection, or ``async for`` it for a
    connection after every loss (``reconnect=True``).

    ``handler`` is a :class:`Service` (callbacks, the fast path) or ``None``: then lines
    (``framing="line"``) or chunks (``"raw"``) are read with ``readline``/``read``/
    ``async for line in conn``. ``options`` sets limits, idle timeout, keep-alive and
    ``TCP_NODELAY`` (on by default, as for every twoway connection).

    ``ssl``: an ``ssl.SSLContext`` to speak TLS; ``server_hostname`` is the name sent in SNI
    and checked against the certificate (default: ``host``). A certificate that does not
    verify raises :class:`FatalConnectError` naming the reason and the name checked.

    ``unix``: the path of a Unix socket to connect to instead (``host`` and ``port`` then
    only name it in messages).

    ``connect_timeout`` bounds each attempt, name lookup included (``None``: the kernel's,
    about two minutes). A host name's addresses are raced with Happy Eyeballs: the next one
    starts ``happy_eyeballs_delay`` seconds after the previous (``None``: in turn).

    ``await connect(...)`` makes one attempt and raises :class:`RetryableConnectError` or
    :class:`FatalConnectError`. ``async for conn in connect(..., reconnect=True)`` yields a
    connection, and when the loop body is done with it (it returned, or the connection was
    lost and the body's reads ended) closes it gracefully, waits ``next(backoff)`` seconds and
    connects again. The backoff is ``initial_delay`` (1 s) times ``factor`` per attempt, capped
    at ``max_delay`` (30 s), spread by ``±jitter`` using ``rng`` (tests pass a fixed one); it
    starts over after a connection that stayed up ``stable_after`` seconds, so a server that
    accepts and drops at once is not hammered. Failed attempts are retried, fatal ones raised;
    after ``max_attempts`` consecutive failures the last error is raised. Without
    ``reconnect`` the loop runs once. ``on_wait(delay, attempt, error)`` is called before
    each wait (``error`` is ``None`` after a lost connection); by default it logs.

    Leaving the loop (``break``, an exception, cancellation) closes the current connection
    when the iterator is finalised; wrap it in ``contextlib.aclosing(aiter(...))`` to have
    that happen at once.
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
        server_hostname: str | None = None,
        unix: str | None = None,
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
        # Fail on bad backoff settings here, not at the first disconnection hours later.
        next(backoff_delays(initial_delay, factor, max_delay, jitter, rng=None))
        self.host = host
        self.port = port
        self.service = handler if handler is not None else ClientService(framing)
        self.options = options if options is not None else ConnectionOptions()
        self.connect_timeout = connect_timeout
        self.happy_eyeballs_delay = happy_eyeballs_delay
        self.local_addr = local_addr
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.unix = unix
        self.reconnect = reconnect
        self.backoff = (initial_delay, factor, max_delay, jitter)
        self.stable_after = stable_after
        self.max_attempts = max_attempts
        self.rng = rng
        self.on_wait = on_wait
        #: ``host:port`` as it appears in messages (``[::1]:4001`` for IPv6; the path of a
        #: Unix socket).
        self.where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if unix is not None:
            self.where = unix

    async def open(self) -> Connection:
        """Make one attempt and return the connection.

        Raises :class:`RetryableConnectError` or :class:`FatalConnectError` (the ``OSError``
        chained as ``__cause__``). Cancellation leaves no socket open.
        """
        loop = asyncio.get_running_loop()
        cls = connection_class(self.service)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.unix is not None:
                    _transport, conn = await loop.create_unix_connection(
                        lambda: cls(self.service, self.options, None),
                        self.unix,
                        ssl=self.ssl,
                        server_hostname=self._servername() if self.ssl else None,
                    )
                    log.debug("connected to %s", self.unix)
                    return conn
                if not is_ip_address(self.host):
                    log.debug("looking up %s", self.host)
                infos = await loop.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
                sock = await happy_eyeballs(
                    _interleave(infos), self.happy_eyeballs_delay, self.local_addr
                )
                try:
                    _transport, conn = await loop.create_connection(
                        lambda: cls(self.service, self.options, None),
                        sock=sock,
                        ssl=self.ssl,
                        server_hostname=self._servername() if self.ssl else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise _classify(_summarise(exc), self.where, self._servername()) from exc
        log.debug("connected %s -> %s", format_address(conn.local_address), conn.peer)
        return conn

    def _servername(self) -> str:
        # A zone (fe80::1%eth0) is not part of a name a certificate can hold.
        return self.server_hostname or self.host.split("%", 1)[0]

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.open().__await__()

    def __aiter__(self) -> AsyncGenerator[Connection, None]:
        return self._reconnecting()

    async def _reconnecting(self) -> AsyncGenerator[Connection, None]:
        loop = asyncio.get_running_loop()
        delays = backoff_delays(*self.backoff, rng=self.rng)
        # Attempts since the last connection that stayed up (or since the start).
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
                # The body is done with it: close gracefully (bounded by close_timeout).
                conn.close()
                await conn.wait_closed()
            finally:
                if not conn.is_closed:
                    conn.abort()
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

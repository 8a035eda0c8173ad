"""The server: listening sockets, the connection registry, limits and graceful shutdown.

:class:`Server` mirrors ``asyncio.Server`` (``close``, ``wait_closed``, ``serve_forever``,
``sockets``, ``async with``) and adds what asyncio 3.11 lacks: a live registry of
connections, a connection count, connection limits (total and per IP address) and
:meth:`Server.shutdown`, which stops accepting, tells every connection why, waits a bounded
time and then aborts what is left.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from twoway.errors import ListenError, describe_oserror
from twoway.net.asyncapi import AsyncService
from twoway.net.connection import Connection, connection_class
from twoway.net.handlers import Framing, Service
from twoway.net.idle import set_keepalive
from twoway.net.options import ConnectionOptions

__all__ = ["Server", "ServerStats", "limit_key", "normalize_ip", "serve"]

log = logging.getLogger("twoway.server")


@dataclass(slots=True)
class ServerStats:
    """Counters kept for logs and metrics (all since start)."""

    accepted: int = 0
    rejected_full: int = 0
    rejected_per_ip: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    slow_disconnects: int = 0
    idle_timeouts: int = 0
    line_timeouts: int = 0
    errors: int = 0


# accept() failures that mean "out of resources", as asyncio's own accept loop classifies them.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _ListenSocket(socket.socket):
    """A listening socket that makes asyncio back off properly when accept() runs out of
    resources (out of file descriptors).

    CPython 3.11's selector loop (gh-151615) does not stop its accept loop after such an
    error: it calls accept() up to ``backlog`` more times, and every failure schedules one
    more retry, so the failing calls grow by about ``backlog`` per second for as long as the
    descriptors stay exhausted (thousands of syscalls and timer handles per second, growing).
    After one resource error this socket answers accept() with ``BlockingIOError`` (which
    ends that loop) until the event loop's next iteration; asyncio's single scheduled retry
    then tries again a second later. uvloop never calls this method.
    """

    __slots__ = ("_backing_off",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backing_off = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._backing_off:
            raise BlockingIOError(errno.EAGAIN, "backing off after a resource error")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRNOS:
                self._back_off()
            raise

    def _back_off(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not called from an event loop: nothing to protect
            return
        self._backing_off = True
        loop.call_soon(self._stop_backing_off)

    def _stop_backing_off(self) -> None:
        self._backing_off = False


def normalize_ip(host: str) -> str:
    """The IP address as a user writes it: ``::ffff:127.0.0.1`` becomes ``127.0.0.1``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def limit_key(host: str, ipv6_prefix: int = 64) -> str:
    """What per-address limits count a client as: its IPv4 address (an IPv4-mapped IPv6
    address counts as the IPv4 one), or its IPv6 network of ``ipv6_prefix`` bits, written
    ``2001:db8::/64``, since one host usually holds a whole /64. A host name is itself."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ipv6_prefix < 128:
            net = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
            return str(net)
    return str(ip)


class Server:
    """A TCP server running one :class:`Service`. Create it with :func:`serve`.

    Limits: ``max_connections`` and ``max_connections_per_ip`` (``None`` disables; IPv6
    clients count per network of ``ipv6_prefix`` bits, see :func:`limit_key`). A connection
    over a limit reads one ``error: ...`` line and is closed; the others never notice.
    """

    def __init__(
        self,
        service: Service,
        host: str | None = "127.0.0.1",
        port: int = 4001,
        *,
        options: ConnectionOptions | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        ipv6_prefix: int = 64,
        reuse_port: bool = False,
        backlog: int = 1024,
        ssl: Any = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.options = options if options is not None else ConnectionOptions()
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 1 to 128 (got {ipv6_prefix})")
        self.ipv6_prefix = ipv6_prefix
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.ssl = ssl
        self.sock = sock
        self.stats = ServerStats()
        self.started_at = 0.0
        self._conns: set[Connection] = set()
        self._per_ip: dict[str, int] = {}
        self._listeners: list[asyncio.Server] = []
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._conn_class = connection_class(service)
        self._log_info = log.isEnabledFor(logging.INFO)

    # ------------------------------------------------------------------ starting

    async def start(self) -> Server:
        """Bind and listen. Raises :class:`ListenError` with a one-line reason."""
        if self._listeners:
            return self
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._log_info = log.isEnabledFor(logging.INFO)
        factory = self._make_protocol
        where = f"{self.host}:{self.port}"
        await self.service.on_start(self)
        try:
            if self.sock is not None:
                self._tune_listener(self.sock)
                srv = await loop.create_server(
                    factory, sock=self.sock, backlog=self.backlog, ssl=self.ssl
                )
                self._listeners.append(srv)
            else:
                await self._bind_all(loop, factory)
        except OSError as exc:
            for srv in self._listeners:
                srv.close()
            self._listeners.clear()
            await self.service.on_stopped()
            if isinstance(exc, socket.gaierror):
                raise ListenError(f"cannot listen on {where}: unknown host {self.host!r}") from exc
            raise ListenError(f"cannot listen on {where}: {describe_oserror(exc)}") from exc
        self.started_at = time.time()
        self.service.on_listening(self)
        return self

    async def _bind_all(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], Connection]
    ) -> None:
        infos = await loop.getaddrinfo(
            self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: list[Any] = []
        port = self.port
        for family, _type, proto, _name, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.append((family, addr[0]))
            sock = _ListenSocket(family, socket.SOCK_STREAM, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                self._tune_listener(sock)
                # With port 0 every address family must end up on the same free port.
                sock.bind((addr[0], port, *addr[2:]))
                port = sock.getsockname()[1]
                sock.setblocking(False)
                srv = await loop.create_server(
                    factory, sock=sock, backlog=self.backlog, ssl=self.ssl
                )
            except BaseException:
                sock.close()
                raise
            self._listeners.append(srv)
        self.port = port

    def _tune_listener(self, sock: socket.socket) -> None:
        """Socket options every accepted connection inherits from the listening socket (on
        Linux), so no connection pays a system call for them: TCP keep-alive."""
        keepalive = self.options.keepalive
        if keepalive is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            set_keepalive(sock, keepalive)

    def _make_protocol(self) -> Connection:
        return self._conn_class(self.service, self.options, self)

    def __await__(self) -> Generator[Any, None, Server]:
        return self.start().__await__()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown(grace=0 if et is not None else self.options.close_timeout)

    # ------------------------------------------------------------------ introspection

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets."""
        return [s for srv in self._listeners for s in srv.sockets]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket, with the real port."""
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self.sockets]

    @property
    def connections(self) -> frozenset[Connection]:
        """A snapshot of the open connections."""
        return frozenset(self._conns)

    @property
    def connection_count(self) -> int:
        """How many connections are open right now."""
        return len(self._conns)

    def is_serving(self) -> bool:
        """True while the server accepts connections."""
        return bool(self._listeners) and not self._closing

    # ------------------------------------------------------------------ registry

    def _admit(self, conn: Connection) -> bool:
        """Called by a new connection: enforce limits, register, log."""
        self.stats.accepted += 1
        if self._closing:
            conn.abort()
            return False
        limit = self.max_connections
        if limit is not None and len(self._conns) >= limit:
            self.stats.rejected_full += 1
            self._reject(conn, f"error: server full (max {limit} connections)")
            return False
        per_ip = self.max_connections_per_ip
        if per_ip is not None:
            # Only counted when limited: the normalised address costs memory per connection.
            addr = conn.remote_address
            ip = limit_key(str(addr[0]), self.ipv6_prefix) if addr else "?"
            count = self._per_ip.get(ip, 0)
            if count >= per_ip:
                self.stats.rejected_per_ip += 1
                self._reject(conn, f"error: too many connections from {ip} (max {per_ip})")
                return False
            self._per_ip[ip] = count + 1
            conn._ip = ip
        self._conns.add(conn)
        if self._empty is not None:
            self._empty.clear()
        if self._log_info:
            log.info("connection from %s", conn.peer)
        return True

    def _reject(self, conn: Connection, message: str) -> None:
        log.warning("%s: rejected: %s", conn.peer, message.removeprefix("error: "))
        assert conn.transport is not None
        conn.transport.write(message.encode() + b"\n")
        conn.close(timeout=1.0)

    def _forget(self, conn: Connection, exc: BaseException | None) -> None:
        """Called when a connection is gone."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        ip = conn._ip
        if ip is not None:
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)
        stats = self.stats
        stats.closed += 1
        stats.bytes_in += conn.bytes_read
        stats.bytes_out += conn.bytes_written
        if exc is not None:
            stats.errors += 1
        if self._log_info:
            why = f", {conn.close_reason}" if conn.close_reason else ""
            err = f", error: {describe_oserror(exc)}" if exc is not None else ""
            log.info(
                "closed %s (in %s, out %s, %.1f s%s%s)",
                conn.peer,
                _size(conn.bytes_read),
                _size(conn.bytes_written),
                conn.duration,
                why,
                err,
            )
        if not self._conns and self._empty is not None:
            self._empty.set()

    # ------------------------------------------------------------------ stopping

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections are left alone. Idempotent."""
        self._closing = True
        for srv in self._listeners:
            srv.close()

    def close(self) -> None:
        """Stop accepting and close every connection gracefully. Idempotent; see
        :meth:`wait_closed`."""
        self.stop_accepting()
        for conn in list(self._conns):
            conn.close()
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the listeners are closed and every connection is gone."""
        for srv in self._listeners:
            await srv.wait_closed()
        if self._empty is not None:
            await self._empty.wait()

    async def shutdown(self, grace: float = 10.0, reason: str = "server shutting down") -> None:
        """Stop accepting, tell each connection ``reason`` (via ``Service.on_shutdown``), wait
        up to ``grace`` seconds for the connections and their async handlers to end, then
        abort the connections and cancel the handlers that are left. Idempotent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        self.stop_accepting()
        if self._closed is not None:
            self._closed.set()
        conns = list(self._conns)
        for conn in conns:
            conn._call(self.service.on_shutdown, reason)
        if self._conns and self._empty is not None:
            try:
                await asyncio.wait_for(self._empty.wait(), timeout=max(grace, 0.0))
            except TimeoutError:
                left = list(self._conns)
                if left:  # with grace 0 the last ones may have just gone
                    log.warning("grace period over: aborting %d connection(s)", len(left))
                for conn in left:
                    conn.abort(reason="shutdown")
        # A handler may outlive its connection (busy after the peer left): it gets what is
        # left of the grace period too, then it is cancelled.
        tasks = [c._task for c in conns if c._task is not None and not c._task.done()]
        if tasks:
            left_s = deadline - loop.time()
            if left_s > 0:
                await asyncio.wait(tasks, timeout=left_s)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2.0)
        if self._empty is not None:
            try:
                await asyncio.wait_for(self._empty.wait(), timeout=2.0)
            except TimeoutError:
                log.warning("%d connection(s) did not close", len(self._conns))
        for srv in self._listeners:
            await srv.wait_closed()
        await self.service.on_stopped()

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` or :meth:`shutdown` is called."""
        if not self._listeners:
            await self.start()
        assert self._closed is not None
        await self._closed.wait()


def serve(
    handler: Service | Callable[[Connection], Awaitable[None]],
    host: str | None = "127.0.0.1",
    port: int = 4001,
    *,
    framing: Framing = "line",
    options: ConnectionOptions | None = None,
    **kwargs: Any,
) -> Server:
    """A server for ``handler``: ``server = await serve(...)`` or ``async with serve(...)``.

    ``handler`` is a :class:`Service` (callbacks, the fast path) or an ``async def
    handler(conn)`` run once per connection with lines (``framing="line"``, the default for
    handlers) or raw chunks (``framing="raw"``). Other keyword arguments go to :class:`Server`.
    """
    service = handler if isinstance(handler, Service) else AsyncService(handler, framing)
    return Server(service, host, port, options=options, **kwargs)


def _size(n: int) -> str:
    if n < 10 * 1024:
        return f"{n} B"
    if n < 10 * 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1048576:.1f} MiB"

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
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any

from twoway.errors import ListenError, describe_oserror
from twoway.net.accept import Acceptor
from twoway.net.asyncapi import AsyncService
from twoway.net.connection import Connection
from twoway.net.framed import connection_class, tapped
from twoway.net.idle import set_keepalive
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry, ServerStats
from twoway.net.service import Framing, Service
from twoway.net.unixsock import bind_unix, remove_unix
from twoway.sansio.access import AccessPolicy, AddressSet

__all__ = ["Server", "serve"]

log = logging.getLogger("twoway.server")


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


class Server:
    """A TCP server running one :class:`Service`. Create it with :func:`serve`.

    Limits: ``max_connections`` and ``max_connections_per_ip`` (``None`` disables; IPv6
    clients count per network of ``ipv6_prefix`` bits, see :func:`limit_key`). A connection
    over a limit reads one ``error: ...`` line and is closed; the others never notice.

    ``access``: allow/deny rules checked before any limit (swap them live with
    :attr:`access`). ``ssl``: an ``ssl.SSLContext`` to serve TLS; its listeners then accept
    through :class:`~twoway.net.accept.Acceptor`, where every handshake is bounded by
    ``ssl_handshake_timeout`` seconds, counts against ``max_connections`` while it runs and
    is logged (one rate-limited line) when it fails; at most ``max_handshakes_per_ip`` (and
    ``max_connections_per_ip``) run at once from one address. ``proxy_from``: accept a PROXY
    protocol header (v1 or v2) from these proxies only, within ``proxy_timeout`` seconds; its client
    is the connection's address. Plain TCP without PROXY uses the loop's own
    ``create_server``.

    Where it listens: ``host`` is one address or name, several (a sequence; ``()`` for no
    TCP at all), or ``None`` for every interface. ``"::"`` listens on IPv6 *and* IPv4 (one
    dual-stack socket, like Node and ncat) unless ``ipv6_only``. ``unix``: a Unix socket
    path as well (``unix_mode`` its permission bits), replaced if stale and removed when the
    server stops (see :mod:`twoway.net.unixsock`). ``sock``: listening sockets made
    elsewhere (systemd's, or bound before the workers forked), served as they are.
    """

    def __init__(
        self,
        service: Service,
        host: str | Sequence[str] | None = "127.0.0.1",
        port: int = 4001,
        *,
        options: ConnectionOptions | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        ipv6_prefix: int = 64,
        reuse_port: bool = False,
        backlog: int = 1024,
        ssl: Any = None,
        ssl_handshake_timeout: float = 10.0,
        access: AccessPolicy | None = None,
        proxy_from: AddressSet | None = None,
        proxy_timeout: float = 5.0,
        sock: socket.socket | Sequence[socket.socket] | None = None,
        ipv6_only: bool = False,
        unix: str | None = None,
        unix_mode: int | None = None,
        max_handshakes_per_ip: int | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.options = options if options is not None else ConnectionOptions()
        #: The open connections, the limits and the counters (see :class:`Registry`).
        self.registry = Registry(
            max_connections=max_connections,
            max_connections_per_ip=max_connections_per_ip,
            ipv6_prefix=ipv6_prefix,
            access=access,
        )
        self.reuse_port = reuse_port
        self.backlog = backlog
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.proxy_from = proxy_from
        self.proxy_timeout = proxy_timeout
        self.socks: list[socket.socket] = (
            [] if sock is None else [sock] if isinstance(sock, socket.socket) else list(sock)
        )
        self.ipv6_only = ipv6_only
        self.unix = unix
        self.unix_mode = unix_mode
        self.max_handshakes_per_ip = max_handshakes_per_ip
        self._unix_inode: int | None = None
        self.started_at = 0.0
        self._listeners: list[asyncio.Server | Acceptor] = []
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._conn_class = connection_class(service)
        if self.options.tap is not None:
            self._conn_class = tapped(self._conn_class)

    # ------------------------------------------------------------------ starting

    async def start(self) -> Server:
        """Bind and listen. Raises :class:`ListenError` with a one-line reason."""
        if self._listeners:
            return self
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self.registry.open()
        factory = self._make_protocol
        await self.service.on_start(self)
        where = ""
        try:
            for sock in self.socks:
                self._tune_listener(sock)
                self._listeners.append(await self._listen(loop, factory, sock))
            for host in self._hosts():
                where = f"[{host}]:{self.port}" if ":" in str(host) else f"{host}:{self.port}"
                await self._bind_all(loop, factory, host)
            if self.unix is not None:
                where = self.unix
                sock, self._unix_inode = bind_unix(self.unix, self.unix_mode, self.backlog)
                self._listeners.append(await self._listen(loop, factory, sock))
        except (OSError, ListenError) as exc:
            self._stop_listeners()
            self._listeners.clear()
            await self.service.on_stopped()
            if isinstance(exc, ListenError):
                raise
            if isinstance(exc, socket.gaierror):
                raise ListenError(f"cannot listen on {where}: unknown host") from exc
            raise ListenError(f"cannot listen on {where}: {describe_oserror(exc)}") from exc
        self.started_at = time.time()
        self.service.on_listening(self)
        return self

    def _hosts(self) -> list[str | None]:
        """The TCP addresses to bind, in order (``None``: every interface)."""
        if self.host is None or isinstance(self.host, str):
            return [self.host or None]
        return list(self.host)

    async def _bind_all(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], Connection],
        host: str | None,
    ) -> None:
        infos = await loop.getaddrinfo(
            host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        # "::" alone is the dual-stack address (IPv4 clients arrive as ::ffff:a.b.c.d);
        # every interface (host None) gets a socket per family instead, so IPv6 stays
        # IPv6-only there.
        dual = host == "::" and not self.ipv6_only
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
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
                self._tune_listener(sock)
                # With port 0 every address family must end up on the same free port.
                sock.bind((addr[0], port, *addr[2:]))
                port = sock.getsockname()[1]
                sock.setblocking(False)
                srv = await self._listen(loop, factory, sock)
            except BaseException:
                sock.close()
                raise
            self._listeners.append(srv)
        self.port = port

    async def _listen(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], Connection],
        sock: socket.socket,
    ) -> asyncio.Server | Acceptor:
        if self.ssl is None and self.proxy_from is None:
            return await loop.create_server(factory, sock=sock, backlog=self.backlog)
        sock.listen(self.backlog)
        sock.setblocking(False)
        listener = Acceptor(
            sock,
            factory,
            self.registry,
            context=self.ssl,
            handshake_timeout=self.ssl_handshake_timeout,
            proxy_from=self.proxy_from,
            proxy_timeout=self.proxy_timeout,
            max_handshakes_per_ip=self.max_handshakes_per_ip,
        )
        listener.start()
        return listener

    def _tune_listener(self, sock: socket.socket) -> None:
        """Socket options every accepted connection inherits from the listening socket (on
        Linux), so no connection pays a system call for them: TCP keep-alive."""
        keepalive = self.options.keepalive
        if keepalive is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            set_keepalive(sock, keepalive)

    def _make_protocol(self) -> Connection:
        return self._conn_class(self.service, self.options, self.registry)

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
        """``(host, port)`` of every listening TCP socket, with the real port."""
        names = [s.getsockname() for s in self.sockets]
        return [(str(n[0]), int(n[1])) for n in names if isinstance(n, tuple)]

    @property
    def unix_paths(self) -> list[str]:
        """The paths of the listening Unix sockets (an abstract one starts with ``@``)."""
        out = []
        for s in self.sockets:
            name = s.getsockname()
            if isinstance(name, bytes):  # abstract namespace
                name = "@" + name[1:].decode(errors="replace")
            if isinstance(name, str):
                out.append(name)
        return out

    @property
    def access(self) -> AccessPolicy | None:
        """The allow/deny rules new connections are checked against; assign a new
        :class:`AccessPolicy` to change them live (connections already open stay)."""
        return self.registry.access

    @access.setter
    def access(self, policy: AccessPolicy | None) -> None:
        self.registry.access = policy

    @property
    def stats(self) -> ServerStats:
        """The counters (since start) of :attr:`registry`."""
        return self.registry.stats

    @property
    def max_connections(self) -> int | None:
        """The most connections at once (``None``: no limit)."""
        return self.registry.max_connections

    @property
    def max_connections_per_ip(self) -> int | None:
        """The most connections from one address (an IPv6 network, see ``ipv6_prefix``)."""
        return self.registry.max_connections_per_ip

    @property
    def connections(self) -> frozenset[Connection]:
        """A snapshot of the open connections."""
        return frozenset(self.registry.conns)  # type: ignore[arg-type]

    @property
    def connection_count(self) -> int:
        """How many connections are open right now."""
        return len(self.registry.conns)

    def is_serving(self) -> bool:
        """True while the server accepts connections."""
        return bool(self._listeners) and not self._closing

    # ------------------------------------------------------------------ stopping

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections are left alone. Idempotent."""
        self._closing = True
        self.registry.accepting = False
        self._stop_listeners()

    def _stop_listeners(self) -> None:
        for srv in self._listeners:
            srv.close()
        if self.unix is not None and self._unix_inode is not None:
            remove_unix(self.unix, self._unix_inode)
            self._unix_inode = None

    def close(self) -> None:
        """Stop accepting and close every connection gracefully. Idempotent; see
        :meth:`wait_closed`."""
        self.stop_accepting()
        for conn in list(self.registry.conns):
            conn.close()
        if self._closed is not None:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the listeners are closed and every connection is gone."""
        for srv in self._listeners:
            await srv.wait_closed()
        await self.registry.wait_empty()

    async def shutdown(self, grace: float = 10.0, reason: str = "server shutting down") -> None:
        """Stop accepting, tell each connection ``reason`` (via ``Service.on_shutdown``), wait
        up to ``grace`` seconds for the connections and their async handlers to end, then
        abort the connections and cancel the handlers that are left. Idempotent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        self.stop_accepting()
        if self._closed is not None:
            self._closed.set()
        registry = self.registry
        for conn in list(self.connections):
            conn.notify_shutdown(reason)
        if registry.conns:
            try:
                await asyncio.wait_for(registry.wait_empty(), timeout=max(grace, 0.0))
            except TimeoutError:
                left = list(self.connections)
                if left:  # with grace 0 the last ones may have just gone
                    log.warning("grace period over: aborting %d connection(s)", len(left))
                for conn in left:
                    conn.abort(reason="shutdown")
        # A handler may outlive its connection (busy after the peer left): it gets what is
        # left of the grace period too, then it is cancelled.
        await self.service.finish_handlers(deadline - loop.time())
        try:
            await asyncio.wait_for(registry.wait_empty(), timeout=2.0)
        except TimeoutError:
            log.warning("%d connection(s) did not close", len(registry.conns))
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
    host: str | Sequence[str] | None = "127.0.0.1",
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

"""The accept loop for listeners that must do something before a connection exists: read a
PROXY protocol header, run a TLS handshake, or both (header first, in clear).

The loops' own ``create_server(ssl=...)`` runs handshakes where the server cannot see them:
a failed one is dropped without a word (asyncio logs it only in debug mode, uvloop never),
and a handshake in progress holds a socket that no limit counts. :class:`Acceptor` accepts
the sockets itself and, for each one:

1. asks the registry for room (:meth:`Registry.has_room
   <twoway.net.registry.Registry.has_room>`: still accepting, and under ``max_connections``
   *counting the sockets still being set up*); if not, the socket is closed at once;
2. with ``proxy_from``: refuses a peer that is not a trusted proxy, then reads exactly the
   header (peeking, so no byte of what follows leaves the kernel before TLS or the
   connection reads it) within ``proxy_timeout``; the header's client becomes the
   connection's address for everything that keys on one (logs, limits, allow/deny, chat);
3. with TLS: checks the access rules on that address (a refused client costs no handshake),
   then runs the handshake with ``loop.connect_accepted_socket(ssl=...,
   ssl_handshake_timeout=...)``, the same call on asyncio and uvloop;
4. the connection is then made as usual (``connection_made`` → ``Registry.admit``, which
   applies the access rules and the per-address limits); every failure on the way closes the
   socket and is one log line, rate-limited per address and reason.

Each socket holds one :attr:`Registry.pending <twoway.net.registry.Registry.pending>` slot
until step 4 or its failure. Handshakes in progress are also counted per client address (an
IPv6 client per network, as the per-address limits count): past ``max_handshakes_per_ip``
(and never past ``max_connections_per_ip``) a new socket from that address is closed at once
with one rate-limited line, so a flood of slow or stalled handshakes from one address holds
a few slots for the handshake timeout at most, never the whole of ``max_connections``.

Plain TCP without PROXY never comes here: its listeners stay on ``create_server``, the
measured hot path.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from twoway.errors import ProxyProtocolError
from twoway.net.address import limit_key
from twoway.net.connection import Connection
from twoway.net.registry import Registry
from twoway.net.tlspeer import describe_handshake_error
from twoway.sansio.access import AddressSet
from twoway.sansio.proxy import ProxyReader

__all__ = ["Acceptor"]

log = logging.getLogger("twoway.server")

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# After accept() fails for lack of descriptors, wait this long before trying again (what
# asyncio's own accept loop does), instead of spinning on a listener that stays readable.
_RESOURCE_BACKOFF = 1.0


class Acceptor:
    """Accepts on ``sock`` (bound, non-blocking) and sets up each new socket as the module
    docstring says; looks like the part of ``asyncio.Server`` a
    :class:`~twoway.net.server.Server` uses (``sockets``, ``close``, ``wait_closed``).

    ``factory`` makes the :class:`~twoway.net.connection.Connection`. ``context``: TLS, or
    ``None``; ``handshake_timeout`` bounds each handshake (seconds). ``proxy_from``: the
    proxies trusted to send a PROXY header, or ``None`` for no PROXY protocol;
    ``proxy_timeout`` bounds the wait for the header. ``max_handshakes_per_ip``: see the
    module docstring. :meth:`close` stops accepting and
    cancels the set-ups in progress (their sockets are closed); connections already made are
    the server's business.
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], Connection],
        registry: Registry,
        *,
        context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        proxy_from: AddressSet | None = None,
        proxy_timeout: float = 5.0,
        max_handshakes_per_ip: int | None = None,
    ) -> None:
        self._sock = sock
        #: Most TLS handshakes in progress from one address (``None``: only the per-address
        #: connection limit, if any, bounds them); may be changed live.
        self.max_handshakes_per_ip = max_handshakes_per_ip
        self._handshaking: dict[str, int] = {}
        self._factory = factory
        self._registry = registry
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._proxy_from = proxy_from
        self._proxy_timeout = proxy_timeout
        self._setups: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start accepting (inside the running loop)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._accept())

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening socket, while open."""
        return [] if self._closed else [self._sock]

    def close(self) -> None:
        """Stop accepting, close the listening socket, cancel unfinished set-ups.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for task in self._setups:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        """Wait until the accept loop and every set-up task have ended."""
        tasks = [t for t in (self._task, *self._setups) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        registry = self._registry
        while True:
            try:
                conn, addr = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    # Reported once per second at most by the runner's exception filter.
                    loop.call_exception_handler({"message": "accept failed", "exception": exc})
                    await asyncio.sleep(_RESOURCE_BACKOFF)
                    continue
                if self._closed:
                    return
                log.warning("accept failed: %s", exc)
                continue
            if not registry.has_room(addr):
                conn.close()
                continue
            registry.pending += 1
            task = loop.create_task(self._set_up(conn, addr))
            self._setups.add(task)
            task.add_done_callback(self._setups.discard)

    async def _set_up(self, sock: socket.socket, addr: Any) -> None:
        registry = self._registry
        try:
            sock.setblocking(False)
            if self._proxy_from is not None:
                real = await self._read_proxy(sock, addr)
                if real is None:
                    sock.close()
                    return
                addr = real
            if self._context is not None:
                if not registry.permits(addr):
                    sock.close()
                    return
                await self._handshake(sock, addr)
                return
            await self._make(sock, addr)
        except asyncio.CancelledError:
            sock.close()
            raise
        finally:
            registry.pending -= 1

    async def _read_proxy(self, sock: socket.socket, addr: Any) -> Any:
        """The address the connection will have (the header's client, or the socket's own
        peer for a LOCAL/UNKNOWN header), or ``None`` after logging why not."""
        proxies = self._proxy_from
        assert proxies is not None
        if not isinstance(addr, tuple) or addr[0] not in proxies:
            self._registry.proxy_failed(
                addr, "untrusted", "PROXY protocol: refused: not a trusted proxy (see --proxy-from)"
            )
            return None
        reader = ProxyReader()
        try:
            async with asyncio.timeout(self._proxy_timeout):
                header = await _read_header(sock, reader)
        except ProxyProtocolError as exc:
            self._registry.proxy_failed(addr, exc.kind, str(exc))
            return None
        except TimeoutError:
            self._registry.proxy_failed(
                addr, "timeout", f"PROXY protocol: no header within {self._proxy_timeout:g} s"
            )
            return None
        except OSError as exc:
            self._registry.proxy_failed(
                addr, "error", f"PROXY protocol: {describe_handshake_error(exc)}"
            )
            return None
        client = header.client
        return addr if client is None else client

    def handshakes_in_progress(self, host: str) -> int:
        """How many TLS handshakes from ``host`` (its limit key) are in progress."""
        return self._handshaking.get(limit_key(host, self._registry.ipv6_prefix), 0)

    def _handshake_cap(self) -> int | None:
        caps = (self.max_handshakes_per_ip, self._registry.max_connections_per_ip)
        present = [c for c in caps if c is not None]
        return min(present) if present else None

    async def _handshake(self, sock: socket.socket, addr: Any) -> None:
        """:meth:`_make` under TLS, counted per client address (see the module docstring)."""
        cap = self._handshake_cap()
        if cap is None or not isinstance(addr, tuple):  # a Unix socket's client: no address
            await self._make(sock, addr)
            return
        key = limit_key(str(addr[0]), self._registry.ipv6_prefix)
        counts = self._handshaking
        busy = counts.get(key, 0)
        if busy >= cap:
            sock.close()
            self._registry.handshake_failed(
                addr, f"too many handshakes in progress from {key} (max {cap}): closed"
            )
            return
        counts[key] = busy + 1
        try:
            await self._make(sock, addr)
        finally:
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]

    async def _make(self, sock: socket.socket, addr: Any) -> None:
        loop = asyncio.get_running_loop()

        def factory() -> Connection:
            conn = self._factory()
            # Preset, so connection_made keeps it: the client a PROXY header named.
            conn.remote_address = addr
            return conn

        try:
            if self._context is None:
                await loop.connect_accepted_socket(factory, sock)
            else:
                await loop.connect_accepted_socket(
                    factory,
                    sock,
                    ssl=self._context,
                    ssl_handshake_timeout=self._handshake_timeout,
                )
        except Exception as exc:  # every failure is the peer's: one log line, never a traceback
            sock.close()
            if self._context is None:
                log.debug("%s: connection not made: %s", addr, exc)
            else:
                self._registry.handshake_failed(addr, describe_handshake_error(exc))


def _wake(ready: asyncio.Future[None]) -> None:
    # Level-triggered: the callback may run again before the waiting task resumes.
    if not ready.done():
        ready.set_result(None)


async def _read_header(sock: socket.socket, reader: ProxyReader) -> Any:
    """Consume exactly one PROXY header from a non-blocking socket: peek, then take only the
    header's bytes, so the payload behind it stays queued for TLS or the connection."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    while True:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        peeked = sock.recv(reader.max_v2_length, socket.MSG_PEEK)
        if not peeked:
            reader.feed_eof()
        n, header = reader.take(peeked)
        sock.recv(n)
        if header is not None:
            return header

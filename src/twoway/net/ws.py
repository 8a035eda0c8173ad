"""The WebSocket gateway: a second listener of a line server, for browsers.

:class:`WsGateway` listens on its own address and makes a
:class:`~twoway.net.wsconn.WsConnection` per socket, for the **same service object** and
the **same registry** as the TCP :class:`~twoway.net.server.Server` (one connection limit,
one set of allow/deny rules, one count per address). With TLS (``wss://``) it accepts
through the TCP server's :class:`~twoway.net.accept.Acceptor`, so handshakes are bounded,
counted and logged the same way, and the ``SSLContext`` is the server's own (its certificate
reload on SIGHUP applies). Behind a proxy that sends the PROXY protocol (``proxy_from``), the
acceptor reads the header first, as for TCP, and the client's real address is the one the
connection, the registry and the logs see. A plain HTTP GET of a path in ``pages`` gets that
file (the web chat page); any other path is 404.

Importing this module imports ``websockets``: the runner imports it only for ``--ws``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from twoway.errors import ListenError, describe_oserror
from twoway.net.accept import Acceptor
from twoway.net.wsconfig import WsConfig
from twoway.net.wsconn import WsConnection
from twoway.sansio.access import AddressSet

__all__ = ["WsGateway"]


class WsGateway:
    """Listens on ``host``:``port`` (``0``: any free port, then see :attr:`addresses`) for
    WebSocket clients of ``config.service``. Mirrors the part of a server the runner uses:
    :meth:`start`, :attr:`addresses`, :meth:`close`, :meth:`wait_closed`. The connections
    themselves belong to the registry, so the TCP server's shutdown ends them too."""

    def __init__(
        self,
        config: WsConfig,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float = 10.0,
        backlog: int = 1024,
        reuse_port: bool = False,
        proxy_from: AddressSet | None = None,
        proxy_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.backlog = backlog
        self.reuse_port = reuse_port
        #: Proxies trusted to send a PROXY header first (``--proxy-protocol``), or None.
        self.proxy_from = proxy_from
        self.proxy_timeout = proxy_timeout
        config.secure = ssl_context is not None
        self._listeners: list[asyncio.Server | Acceptor] = []

    @property
    def scheme(self) -> str:
        """``ws`` or ``wss``."""
        return "wss" if self.ssl_context is not None else "ws"

    async def start(self) -> WsGateway:
        """Bind and listen. Raises :class:`ListenError` with a one-line reason."""
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            infos = await loop.getaddrinfo(
                self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            seen: set[tuple[int, Any]] = set()
            port = self.port
            for family, _type, proto, _name, addr in infos:
                if (family, addr[0]) in seen:
                    continue
                seen.add((family, addr[0]))
                sock = socket.socket(family, socket.SOCK_STREAM, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if self.reuse_port:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind((addr[0], port, *addr[2:]))
                    port = sock.getsockname()[1]
                    sock.setblocking(False)
                    self._listeners.append(await self._listen(loop, sock))
                except BaseException:
                    sock.close()
                    raise
            self.port = port
        except OSError as exc:
            self.close()
            if isinstance(exc, socket.gaierror):
                raise ListenError(
                    f"cannot listen on {where} (--ws): unknown host {self.host!r}"
                ) from exc
            raise ListenError(f"cannot listen on {where} (--ws): {describe_oserror(exc)}") from exc
        return self

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket
    ) -> asyncio.Server | Acceptor:
        config = self.config
        if self.ssl_context is None and self.proxy_from is None:
            return await loop.create_server(
                lambda: WsConnection(config), sock=sock, backlog=self.backlog
            )
        sock.listen(self.backlog)
        # The acceptor checks room and access, reads the PROXY header and runs the TLS
        # handshake before the connection exists: the connection is told it was screened.
        factory = cast(Callable[[], Any], lambda: WsConnection(config, screened=True))
        acceptor = Acceptor(
            sock,
            factory,
            config.registry,
            context=self.ssl_context,
            handshake_timeout=self.ssl_handshake_timeout,
            proxy_from=self.proxy_from,
            proxy_timeout=self.proxy_timeout,
        )
        acceptor.start()
        return acceptor

    @property
    def sockets(self) -> list[Any]:
        """The listening sockets."""
        return [s for srv in self._listeners for s in srv.sockets]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every listening socket, with the real port."""
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self.sockets]

    def close(self) -> None:
        """Stop accepting (open WebSockets are the registry's: the server's shutdown ends
        them). Idempotent."""
        for srv in self._listeners:
            srv.close()

    async def wait_closed(self) -> None:
        """Wait until the listeners are closed."""
        for srv in self._listeners:
            await srv.wait_closed()

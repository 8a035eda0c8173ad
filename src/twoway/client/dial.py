"""How a link reaches its server: :class:`LinkTarget`, the ``connect()`` it iterates for its
connections, and :class:`LinkService`, the callbacks those connections call.

Both are handed what they may do by the :class:`~twoway.client.link.Link` that makes them
(callbacks), never the link itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from twoway.errors import FatalConnectError, RetryableConnectError
from twoway.net.client import connect, is_ip_address
from twoway.net.service import Service

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.net.connection import Connection

__all__ = ["LinkService", "LinkTarget"]


class LinkService(Service):
    """The callbacks of a link's connections, handed down by the link: raw bytes to
    ``on_data``, lifecycle to the others."""

    framing = "raw"
    name = "client"

    def __init__(
        self,
        *,
        on_connect: Callable[[Conn], None],
        on_data: Callable[[bytes], None],
        on_eof: Callable[[Conn], None],
        on_close: Callable[[Conn, BaseException | None], None],
    ) -> None:
        self._on_connect = on_connect
        self._on_data = on_data
        self._on_eof = on_eof
        self._on_close = on_close

    def on_connect(self, conn: Conn) -> None:
        self._on_connect(conn)

    def on_data(self, conn: Conn, data: bytes) -> None:
        self._on_data(data)

    def on_eof(self, conn: Conn) -> None:
        self._on_eof(conn)

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        self._on_close(conn, exc)


class LinkTarget(connect):
    """``connect`` that reports each attempt's name lookup through ``on_lookup(host)``, and
    with ``family`` (``-4``/``-6``) resolves a name to that family only, at every attempt."""

    def __init__(self, on_lookup: Callable[[str], None], family: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.on_lookup = on_lookup
        self.family = family
        self.name = self.host

    async def open(self) -> Connection:
        if self.unix is None and not is_ip_address(self.name):
            self.on_lookup(self.name)
            if self.family:
                self.host = await self._resolve()
        return await super().open()

    async def _resolve(self) -> str:
        # net's connect() takes no family yet: resolve here, and hand it the address.
        loop = asyncio.get_running_loop()
        version = 6 if self.family == socket.AF_INET6 else 4
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(
                    self.name, self.port, family=self.family, type=socket.SOCK_STREAM
                )
        except TimeoutError:
            raise RetryableConnectError(f"cannot connect to {self.where}: timed out") from None
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise RetryableConnectError(
                    f"cannot connect to {self.where}: name lookup failed"
                ) from exc
            raise FatalConnectError(
                f"cannot connect to {self.where}: no IPv{version} address"
            ) from exc
        return str(infos[0][4][0])

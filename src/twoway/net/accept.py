"""The accept loop for TLS listeners: screen each socket, then a handshake under a timeout.

The loops' own ``create_server(ssl=...)`` runs handshakes where the server cannot see them:
a failed one is dropped without a word (asyncio logs it only in debug mode, uvloop never),
and a handshake in progress holds a socket that no limit counts. :class:`TlsListener`
accepts the sockets itself and, for each one:

1. asks the registry whether it may start (:meth:`Registry.screen
   <twoway.net.registry.Registry.screen>`: still accepting, allowed by the access rules,
   room under ``max_connections`` *counting the handshakes in progress*); if not, the socket
   is closed at once, before any TLS work;
2. runs the handshake with ``loop.connect_accepted_socket(ssl=..., ssl_handshake_timeout=...)``
   (the same call on asyncio and uvloop), holding one ``handshaking`` slot until it ends;
3. on success the connection is made as usual (``connection_made`` → ``Registry.admit``);
   on failure the socket is closed and the registry logs one phrase, rate-limited per
   address and reason (:func:`~twoway.net.tlspeer.describe_handshake_error`).

Plain TCP never comes here: its listeners stay on ``create_server``, the measured hot path.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

from twoway.net.registry import Registry
from twoway.net.tlspeer import describe_handshake_error

__all__ = ["TlsListener"]

log = logging.getLogger("twoway.server")

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# After accept() fails for lack of descriptors, wait this long before trying again (what
# asyncio's own accept loop does), instead of spinning on a listener that stays readable.
_RESOURCE_BACKOFF = 1.0


class TlsListener:
    """Accepts on ``sock`` (bound and listening, non-blocking) and starts TLS on each new
    socket; looks like the part of ``asyncio.Server`` a :class:`~twoway.net.server.Server`
    uses (``sockets``, ``close``, ``wait_closed``).

    ``factory`` makes the protocol (the :class:`~twoway.net.connection.Connection`);
    ``handshake_timeout`` bounds each handshake in seconds. :meth:`close` stops accepting
    and cancels the handshakes in progress (their sockets are closed); connections already
    made are the server's business.
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        registry: Registry,
        context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._registry = registry
        self._context = context
        self._timeout = handshake_timeout
        self._handshakes: set[asyncio.Task[None]] = set()
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
        """Stop accepting, close the listening socket, cancel unfinished handshakes.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for task in self._handshakes:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        """Wait until the accept loop and every handshake task have ended."""
        tasks = [t for t in (self._task, *self._handshakes) if t is not None]
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
            if not registry.screen(addr):
                conn.close()
                continue
            registry.handshaking += 1
            task = loop.create_task(self._handshake(conn, addr))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, addr: object) -> None:
        loop = asyncio.get_running_loop()
        registry = self._registry
        try:
            conn.setblocking(False)
            await loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context, ssl_handshake_timeout=self._timeout
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # every failure is the peer's: one log line, never a traceback
            conn.close()
            registry.handshake_failed(addr, describe_handshake_error(exc))
        finally:
            registry.handshaking -= 1

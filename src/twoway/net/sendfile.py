"""Zero-copy file → socket: ``os.sendfile`` on a transport's socket, outside the transport.

uvloop has no ``loop.sendfile``, and asyncio's pauses reading from the socket for the whole
transfer (so a peer that answers as it reads, an echo, fills our receive buffer, stops
reading us, and the transfer never ends). :class:`SocketSender` sends on a duplicate of the
transport's descriptor instead and waits for writability with the loop's ``add_writer`` on
that duplicate, while the transport keeps reading. That is safe only while nothing else
writes to the transport: the caller's promise (:func:`sendfile` checks that nothing is
queued before it starts).

No socket (TLS, a pipe transport, a test double), or no ``os.sendfile``: :meth:`SocketSender.
open` returns ``None`` and the caller writes through the transport as usual.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["NO_SENDFILE_ERRNOS", "SocketSender", "sendfile"]

#: ``os.sendfile`` cannot work for this pair of descriptors (found on the first call): write
#: through the transport instead.
NO_SENDFILE_ERRNOS = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK})

# Bytes per sendfile call in sendfile(): the socket is non-blocking, so each call sends what
# fits anyway; 1 MiB keeps the calls few.
_CHUNK = 1 << 20


class SocketSender:
    """Sends from files to one transport's socket with ``os.sendfile``.

    Owns a duplicate of the socket's descriptor; :meth:`close` releases it and any
    registration with the loop (idempotent, and safe after the transport has closed). One
    waiter at a time: :meth:`wait_writable` (a callback) or :meth:`writable` (awaitable).
    """

    __slots__ = ("_callback", "_fd", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock_fd: int) -> None:
        self._loop = loop
        self._fd = sock_fd
        self._callback: Callable[[], None] | None = None  # registered with add_writer

    @classmethod
    def open(cls, transport: asyncio.BaseTransport | None) -> SocketSender | None:
        """A sender for ``transport``'s socket, or ``None`` where sendfile cannot be used
        (no transport or no socket behind it, TLS, no ``os.sendfile``). Raises ``OSError``
        if the descriptor cannot be duplicated (out of descriptors)."""
        if transport is None or not hasattr(os, "sendfile"):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_extra_info("sslcontext") is not None:
            return None
        return cls(asyncio.get_running_loop(), os.dup(sock.fileno()))

    @property
    def closed(self) -> bool:
        """:meth:`close` was called: the descriptor is released."""
        return self._fd < 0

    @property
    def waiting(self) -> bool:
        """Between :meth:`wait_writable` and :meth:`stop_waiting`."""
        return self._callback is not None

    def send(self, file_fd: int, offset: int, count: int) -> int:
        """One ``os.sendfile`` of up to ``count`` bytes of ``file_fd`` from ``offset``: the
        number of bytes sent (0 when the file ends before ``offset``). Raises
        ``BlockingIOError`` when the socket's buffer is full (then wait for writability)
        and ``OSError`` when the connection is broken."""
        return os.sendfile(self._fd, file_fd, offset, count)

    def wait_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) whenever the socket can take more bytes, until
        :meth:`stop_waiting` or :meth:`close`. Calling it again while waiting changes
        nothing."""
        if self._callback is None and self._fd >= 0:
            self._loop.add_writer(self._fd, callback)
            self._callback = callback

    def stop_waiting(self) -> None:
        """Undo :meth:`wait_writable`. Idempotent."""
        if self._callback is not None:
            self._callback = None
            self._loop.remove_writer(self._fd)

    async def writable(self, give_up: asyncio.Future[None]) -> None:
        """Return once the socket can take more bytes, or ``give_up`` is done (the
        connection is gone). Cancellation leaves no registration behind."""
        ready = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.wait_writable(wake)
        try:
            await asyncio.wait({ready, give_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.stop_waiting()
            ready.cancel()

    def close(self) -> None:
        """Stop waiting and release the descriptor. Idempotent."""
        self.stop_waiting()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


async def sendfile(conn: Conn, fd: int) -> bool:
    """Send the regular file ``fd`` from its offset to its end to ``conn`` with sendfile.

    Returns ``False`` (having sent nothing) when that cannot be done here (see
    :meth:`SocketSender.open`, or bytes already queued on the connection, which would be
    overtaken), so the caller writes through the connection instead; returns ``True`` when
    done or when the connection was lost (the connection's callbacks report that). The file
    offset ends after what was sent, which counts in ``conn.bytes_written``.
    """
    if conn.write_buffer_size:
        return False
    sender = SocketSender.open(conn.transport)
    if sender is None:
        return False
    offset = start = os.lseek(fd, 0, os.SEEK_CUR)
    closed = asyncio.ensure_future(conn.wait_closed())
    try:
        while not conn.is_closing:
            try:
                sent = sender.send(fd, offset, _CHUNK)
            except BlockingIOError:
                await sender.writable(closed)
                continue
            except OSError as exc:
                if offset == start and exc.errno in NO_SENDFILE_ERRNOS:
                    return False
                break  # reset, broken pipe...: the transport reports it
            if sent == 0:
                break
            offset += sent
            conn.bytes_written += sent
    finally:
        closed.cancel()
        sender.close()
        os.lseek(fd, offset, os.SEEK_SET)
    return True

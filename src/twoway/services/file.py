"""``twoway serve file PATH``: stream one file to every client, zero copy.

Each connection opens the file afresh (so a file replaced on disk is served in its new
version, and a file gone at connect time is one error line, not a crash) and sends it with
``os.sendfile`` straight from the page cache to the socket: the bytes never enter Python
(:class:`twoway.net.sendfile.SocketSender`). Where there is no socket (TLS, tests with pipes)
it falls back to reading and writing with backpressure.

A reader that makes no progress for ``write_timeout`` seconds is dropped; one that resets is
forgotten at once and its file descriptor released. ``rate`` caps each connection in bytes
per second. With ``keep_open`` the connection stays open after the file (Node's
``pipe(socket, {end: false})``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from twoway.errors import ConfigError, describe_oserror
from twoway.net.sendfile import SocketSender
from twoway.net.service import Service

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["FileService"]

log = logging.getLogger("twoway.file")

_CHUNK = 4 * 1024 * 1024  # per sendfile call: large enough that syscalls cost nothing
_TICK = 0.05  # rate limiting granularity, seconds


class _Sender:
    """Sends one file to one connection."""

    __slots__ = (
        "conn",
        "file_fd",
        "last_progress",
        "loop",
        "offset",
        "sender",
        "service",
        "size",
        "tick",
        "watchdog",
    )

    def __init__(self, service: FileService, conn: Conn, file_fd: int, size: int) -> None:
        self.service = service
        self.conn = conn
        self.file_fd = file_fd
        self.size = size
        self.offset = 0
        self.loop = asyncio.get_running_loop()
        self.sender: SocketSender | None = None
        # Two timers, never one slot for both: a rate tick replacing a pending write-timeout
        # check (or the reverse) would leave a timer that release() cannot cancel.
        self.tick: asyncio.TimerHandle | None = None  # the next slice under --rate
        self.watchdog: asyncio.TimerHandle | None = None  # the write-timeout check
        self.last_progress = self.loop.time()

    @property
    def active(self) -> bool:
        """True until the file is sent (or the transfer failed) and the descriptors are
        released."""
        return self.file_fd >= 0

    def start(self) -> None:
        # Nothing else is written to the connection while the file is being sent. A tap
        # (serve -x) must see the bytes: no sendfile then.
        tapped = self.conn.options.tap is not None
        self.sender = None if tapped else SocketSender.open(self.conn.transport)
        if self.sender is None:
            self.service.no_sendfile(self.conn)
            self.loop.create_task(self._copy())
            return
        self._pump()

    def _pump(self) -> None:
        service = self.service
        sender = self.sender
        assert sender is not None
        budget = _CHUNK
        if service.rate is not None:
            budget = max(1, int(service.rate * _TICK))
        try:
            while self.offset < self.size:
                count = min(self.size - self.offset, budget)
                try:
                    sent = sender.send(self.file_fd, self.offset, count)
                except BlockingIOError:
                    self._wait_writable()
                    return
                if sent == 0:  # the file shrank under us: the reader must not take it as whole
                    self._shrank()
                    return
                self.offset += sent
                self.conn.bytes_written += sent
                self.last_progress = self.loop.time()
                if service.rate is not None:
                    self._stop_waiting()
                    self.tick = self.loop.call_later(_TICK, self._tick)
                    return
        except OSError as exc:
            self._stop_waiting()
            self.release()
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.warning("file: %s: %s", self.conn.peer, describe_oserror(exc))
            self.conn.abort(reason=describe_oserror(exc))
            return
        self._stop_waiting()
        self.release()
        self._done()

    def _tick(self) -> None:
        self.tick = None
        self._pump()

    def _wait_writable(self) -> None:
        assert self.sender is not None
        self.sender.wait_writable(self._pump)
        timeout = self.service.write_timeout
        if timeout is not None and self.watchdog is None:
            self.watchdog = self.loop.call_later(timeout, self._check_progress)

    def _check_progress(self) -> None:
        self.watchdog = None
        timeout = self.service.write_timeout
        assert timeout is not None
        idle = self.loop.time() - self.last_progress
        if idle >= timeout:
            log.info("file: %s: no progress for %.0f s, dropping the reader", self.conn.peer, idle)
            self.release()
            self.conn.abort(reason="write timeout")
        elif self.sender is not None and self.sender.waiting:
            self.watchdog = self.loop.call_later(timeout - idle, self._check_progress)

    def _stop_waiting(self) -> None:
        if self.sender is not None:
            self.sender.stop_waiting()

    async def _copy(self) -> None:
        """Fallback without a socket descriptor: read, write, await the drain."""
        try:
            while self.offset < self.size and not self.conn.is_closing:
                data = os.pread(
                    self.file_fd, min(_CHUNK // 4, self.size - self.offset), self.offset
                )
                if not data:
                    self._shrank()
                    return
                self.offset += len(data)
                await self.conn.write(data)
        finally:
            self.release()
        self._done()

    def _shrank(self) -> None:
        """The file ended early (truncated while being sent): a FIN would tell the reader it
        has the whole file, so the connection is reset instead."""
        self._stop_waiting()
        self.release()
        log.warning(
            "file: %s: the file shrank to %d bytes while being sent to %s (%d expected)",
            self.service.path,
            self.offset,
            self.conn.peer,
            self.size,
        )
        self.conn.abort(reason="file shrank")

    def _done(self) -> None:
        if self.conn.is_closing:
            return
        log.info("file: sent %d bytes to %s", self.offset, self.conn.peer)
        # With keep_open the reader ends the connection; one that half-closed during the
        # transfer already has, and waits for our FIN.
        if not self.service.keep_open or self.conn.at_eof:
            self.conn.close()

    def release(self) -> None:
        """Give back both descriptors and every registration. Idempotent."""
        self.service.senders.discard(self)
        if self.file_fd >= 0:
            self.service.bytes_sent_done += self.offset
        self._stop_waiting()
        for timer in (self.tick, self.watchdog):
            if timer is not None:
                timer.cancel()
        self.tick = self.watchdog = None
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        if self.file_fd >= 0:
            os.close(self.file_fd)
            self.file_fd = -1


class FileService(Service):
    """Sends the file at ``path`` to each client, then ends the connection (or, with
    ``keep_open``, leaves it open). ``rate`` caps bytes per second per connection;
    ``write_timeout`` drops a reader that makes no progress."""

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_open: bool = False,
        rate: int | None = None,
        write_timeout: float | None = 30.0,
    ) -> None:
        self.path = Path(path)
        self.keep_open = keep_open
        self.rate = rate
        self.write_timeout = write_timeout
        self.said_no_sendfile = False
        #: The transfers in progress (each counts its own bytes until it ends).
        self.senders: set[_Sender] = set()
        #: Bytes of the file sent by the transfers that ended (for the metrics).
        self.bytes_sent_done = 0
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise ConfigError(f"file: {self.path}: {describe_oserror(exc)}") from None
        try:
            if not os.path.isfile(self.path):
                raise ConfigError(f"file: {self.path}: not a regular file")
        finally:
            os.close(fd)

    def no_sendfile(self, conn: Conn) -> None:
        """A transfer cannot use sendfile (TLS must encrypt in user space; a pipe): say so
        once per server, not per connection."""
        if not self.said_no_sendfile:
            self.said_no_sendfile = True
            tls = conn.transport is not None and conn.transport.get_extra_info("sslcontext")
            why = "TLS" if tls else "no plain socket"
            if conn.options.tap is not None:
                why = "--hexdump shows the bytes"
            log.info("file: sendfile(2) cannot be used (%s): copying through the event loop", why)

    def on_connect(self, conn: Conn) -> None:
        fd = -1
        try:
            fd = os.open(self.path, os.O_RDONLY)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced by a directory since start-up
                raise ValueError("not a regular file")
            size = st.st_size
        except (OSError, ValueError) as exc:
            if fd >= 0:
                os.close(fd)
            why = describe_oserror(exc)
            log.error("file: %s: %s (for %s)", self.path, why, conn.peer)
            conn.write(f"error: cannot read {self.path.name}: {why}\n".encode())
            conn.close(reason="file unavailable")
            return
        sender = _Sender(self, conn, fd, size)
        conn.state = sender
        self.senders.add(sender)
        sender.start()

    def figures(self) -> dict[str, float]:
        """Bytes of the file sent, by sendfile or copied (see :meth:`Service.figures`)."""
        live = sum(sender.offset for sender in self.senders)
        return {"file_bytes_sent_total": self.bytes_sent_done + live}

    def progress(self, conn: Conn) -> tuple[int, int] | None:
        """``(bytes sent, file size)`` while ``conn`` is being sent the file, else None (for
        the bars of :mod:`twoway.transfers`)."""
        sender = conn.state
        if not isinstance(sender, _Sender) or not sender.active:
            return None
        return sender.offset, sender.size

    def on_data(self, conn: Conn, data: bytes) -> None:
        """What a reader sends is read and dropped (so its FIN is seen)."""

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        """Let a transfer in progress finish within the grace period; the server aborts it
        after that, with a reset: a FIN now would end a partial file as if it were whole.
        A connection that already has its file (``keep_open``) is closed."""
        sender: _Sender | None = conn.state
        if sender is None or not sender.active:
            conn.close()

    def on_eof(self, conn: Conn) -> None:
        sender: _Sender | None = conn.state
        if sender is None or sender.offset >= sender.size:
            conn.close()
        # else: keep sending; a half-closed reader can still read the rest

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        sender: _Sender | None = conn.state
        if sender is not None:
            sender.release()

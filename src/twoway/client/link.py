"""A link: one named client connection that lives across reconnects.

The link owns what must outlive a single TCP connection: its name, the bounded buffer of
lines sent while disconnected, the counters, and the reason the last connection ended. It
connects through :class:`twoway.net.client.connect` (the reconnecting iterator and its
backoff; :class:`~twoway.client.dial.LinkTarget`) and receives through a callback
:class:`~twoway.client.dial.LinkService`, so received bytes go from ``data_received``
straight to the output sink, with no task or queue per chunk.

Sending (:meth:`Link.send`) awaits the connection's drain, so a producer never runs ahead of
the peer. While disconnected (or connecting), a send is kept in the buffer; beyond
``buffer`` lines the oldest is dropped and counted, and the count is reported at the next
connection. Lines handed to a connection that is then lost cannot be known to have arrived
(TCP acknowledges to the kernel, not to the server's application): they are not resent.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

from twoway.client.dial import LinkService, LinkTarget
from twoway.client.resume import ResumeWatch
from twoway.errors import ConnectError, describe_oserror
from twoway.net.options import ConnectionOptions
from twoway.sansio.hexdump import HexDump

if TYPE_CHECKING:
    from twoway.client.options import ClientOptions
    from twoway.client.output import Sink
    from twoway.client.status import Status
    from twoway.net.conn import Conn

__all__ = ["Link", "all_done"]


class Link:
    """One named connection to ``opts.host:opts.port``; see the module docstring.

    Run it with :meth:`run` (as a task); feed it with :meth:`send`; say there is no more
    input with :meth:`finish_input`. :attr:`done` is set when it has stopped for good;
    :attr:`error` then holds the one-line reason if it stopped because of a failure.
    """

    def __init__(
        self,
        name: str,
        opts: ClientOptions,
        sink: Sink,
        status: Status,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.opts = opts
        self.sink = sink
        self.status = status
        self.reconnect = opts.reconnect
        #: Whether the connections speak TLS.
        self.tls = tls is not None
        self.conn: Conn | None = None
        #: Why the last connection ended (``closed by the server``, ``connection reset...``).
        self.reason: str | None = None
        #: The failure that stopped this link, as one line; ``None`` if it ended cleanly.
        self.error: str | None = None
        self.chunks_received = 0
        self.sent = 0
        # Bytes of the connections that have ended (the live one is added by the properties).
        self._in_done = 0
        self._out_done = 0
        self._counted: Conn | None = None
        self.dropped_total = 0
        self.attempted = asyncio.Event()
        self.done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._outbox: collections.deque[bytes] = collections.deque()
        self._dropped = 0
        self._flushing = False
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._input_done = False
        self._close_after: float | None = None
        self._ended = False
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._data_waiter: asyncio.Future[None] | None = None
        #: ``-x``: the bounded dump of this link's traffic, or ``None``.
        self.dump: HexDump | None = None
        #: With --reconnect: the chat session to resume after a drop (see client.resume).
        self.resume: ResumeWatch | None = ResumeWatch() if opts.reconnect else None
        if opts.hexdump:
            self.dump = HexDump(lambda line: status.show(name, line), opts.hexdump_max)
        options = ConnectionOptions(keepalive=opts.keepalive, max_line=None)
        service = LinkService(
            on_connect=self._on_connect,
            on_data=self._on_data,
            on_eof=self._on_eof,
            on_close=self._on_close,
        )
        self.target = LinkTarget(
            self._on_lookup,
            family=opts.family,
            host=opts.host,
            port=opts.port,
            handler=service,
            options=options,
            ssl=tls,
            server_hostname=(opts.tls.servername if opts.tls else None) or opts.host,
            unix=opts.unix,
            connect_timeout=opts.connect_timeout,
            reconnect=opts.reconnect,
            max_attempts=opts.max_attempts,
            initial_delay=opts.retry_delay,
            max_delay=max(opts.retry_max, opts.retry_delay),
            on_wait=self._on_wait,
        )

    @property
    def where(self) -> str:
        """``host:port`` as in messages."""
        return self.target.where

    @property
    def bytes_in(self) -> int:
        """Bytes received on every connection of this link so far."""
        conn = self.conn
        live = conn.bytes_read if conn is not None and conn is not self._counted else 0
        return self._in_done + live

    @property
    def bytes_out(self) -> int:
        """Bytes sent on every connection of this link so far."""
        conn = self.conn
        live = conn.bytes_written if conn is not None and conn is not self._counted else 0
        return self._out_done + live

    @property
    def connected(self) -> bool:
        """True while a connection is up and accepting writes."""
        conn = self.conn
        return conn is not None and not conn.is_closing

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Connect, reconnect as configured, and return when the link is finished.

        Never raises for network failures: they end up in :attr:`error`. Cancelling it
        aborts the current connection.
        """
        try:
            async with aclosing(aiter(self.target)) as conns:
                async for conn in conns:
                    self.attempted.set()
                    await self._session(conn)
                    if not self.reconnect and self._failed:
                        self.error = f"connection to {self.where} lost: {self.reason}"
                        break
                    self.status.state(self.name, f"disconnected: {self.reason}")
                    # Done when we said all we had to say and the server then closed.
                    if not self.reconnect or (self._input_done and self._ended):
                        break
        except ConnectError as exc:
            self.error = str(exc)
            if self.reconnect and self.opts.max_attempts is not None:
                self.error += f" (gave up after {self.opts.max_attempts} attempts)"
        finally:
            self.attempted.set()
            self.done.set()
            self._flushed.set()
            if self._data_waiter is not None and not self._data_waiter.done():
                self._data_waiter.set_result(None)
            left = len(self._outbox) + self._dropped
            if left and self.error is None:
                self.status.error(self.name, f"{left} line(s) dropped or never sent")

    async def _session(self, conn: Conn) -> None:
        try:
            await self.flush_outbox(conn)
            if self._input_done and not self._outbox:
                self._end(conn)
            await conn.wait_closed()
        finally:
            if not conn.is_closed:  # cancelled (Ctrl-C, SIGTERM): no time for courtesy
                conn.abort()
            self.conn = None
            self._flushed.set()

    async def flush_outbox(self, conn: Conn) -> None:
        """Send the lines kept while disconnected on ``conn``, oldest first, after reporting
        how many were dropped; a :meth:`send` meanwhile waits behind them. Each new
        connection's session calls it before anything else is sent."""
        if self._dropped:
            self.status.state(
                self.name,
                f"dropped {self._dropped} line(s) while disconnected (buffer {self.opts.buffer})",
            )
            self._dropped = 0
        if not self._outbox:
            return
        self._flushing = True
        self._flushed.clear()
        try:
            outbox = self._outbox
            while outbox and not conn.is_closing:
                data = outbox.popleft()
                self.sent += 1
                self.dump_sent(data)
                await conn.write(data)
        finally:
            self._flushing = False
            self._flushed.set()

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes) -> None:
        """Send ``data`` (one line, usually) and wait for the drain; while disconnected,
        keep it in the buffer instead (dropping the oldest beyond ``buffer``)."""
        while True:
            conn = self.conn
            # Connected but the buffer not yet flushed (the connection is up before its
            # session starts): queue behind the buffered lines, which go first.
            waiting = bool(self._outbox) and not self._flushing
            if conn is None or conn.is_closing or self._ended or waiting:
                self._keep(data)
                return
            if self._flushing:  # the buffered lines go first
                await self._flushed.wait()
                continue
            self.sent += 1
            self.dump_sent(data)
            await conn.write(data)
            return

    def dump_sent(self, data: bytes) -> None:
        """Show ``data`` in the ``-x`` dump as sent: for writers that bypass :meth:`send`
        (the raw pipe pump). Does nothing without ``-x``."""
        if self.dump is not None:
            self.dump.sent(data)

    def _keep(self, data: bytes) -> None:
        if self.done.is_set() or (self._ended and not self.reconnect):
            self._drop()
            return
        outbox = self._outbox
        if len(outbox) >= self.opts.buffer:
            self._drop()
            if not outbox:  # --buffer 0
                return
            outbox.popleft()
        outbox.append(data)

    def _drop(self) -> None:
        self._dropped += 1
        self.dropped_total += 1
        if self._dropped == 1 and not self.done.is_set():
            self.status.state(
                self.name, f"buffer full ({self.opts.buffer} lines): dropping the oldest"
            )

    def finish_input(self, close_after: float | None = None) -> None:
        """No more input: half-close once the buffer is delivered, then wait for the server
        to close; with ``close_after``, close ourselves if it has not within that time."""
        self._input_done = True
        self._close_after = close_after
        conn = self.conn
        if conn is not None and not conn.is_closing and not self._flushing and not self._outbox:
            self._end(conn)

    def stop(self, timeout: float) -> None:
        """Leave now, politely (Ctrl-C, SIGTERM): no more reconnecting and no more input;
        what the connection has queued is flushed, then FIN, and the server gets ``timeout``
        seconds to close before the connection is aborted. Lines still in the buffer of a
        link that is down are dropped (and reported). Idempotent."""
        self.reconnect = False
        self._input_done = True
        conn = self.conn
        if conn is not None and not conn.is_closing:
            self._ended = True
            conn.close(timeout=timeout)

    def _end(self, conn: Conn) -> None:
        self._ended = True
        conn.end()
        close_after = self._close_after
        if close_after is None and self.tls:
            # TLS has no half-close (close_notify ends both directions): the server never
            # learns that our input ended, so give its replies `linger` seconds, then close.
            close_after = self.opts.linger
        if close_after is not None:
            self._loop.call_later(close_after, conn.close)

    async def wait_data(self, after: int) -> None:
        """Wait until more than ``after`` chunks have been received in total, or the link
        is done."""
        while self.chunks_received <= after and not self.done.is_set():
            self._data_waiter = self._loop.create_future()
            await self._data_waiter

    # ------------------------------------------------------------------ flow control

    def pause_reading(self) -> None:
        """The output is full: stop reading (now and on later connections)."""
        self._paused = True
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_reading(self) -> None:
        """The output has room again."""
        self._paused = False
        if self.conn is not None:
            self.conn.resume_reading()

    # ------------------------------------------------------------------ callbacks

    @property
    def _failed(self) -> bool:
        return self.reason not in (None, "closed", "closed by the server")

    def _on_connect(self, conn: Conn) -> None:
        from twoway.net.address import format_address

        self.conn = conn
        self.reason = None
        self._ended = False
        if self.dump is not None:
            self.dump.reset()
        self.status.detail(
            self.name, f"connected {format_address(conn.local_address)} -> {conn.peer}"
        )
        # Here, in connection_made, not when the session starts: data can arrive in between,
        # and `connected to` must come before the server's first lines (its banner).
        self.status.state(self.name, f"connected to {self.where}")
        if self._paused:
            conn.pause_reading()
        if self.resume is not None:
            first = self.resume.connected()  # /resume TOKEN, before anything else is sent
            if first is not None:
                self.dump_sent(first)
                conn.write(first)
        timeout = self.opts.timeout
        if timeout is not None:
            self._last_read = self._loop.time()
            self._timer = self._loop.call_later(timeout, self._check_timeout, conn)

    def _on_lookup(self, host: str) -> None:
        self.status.detail(self.name, f"looking up {host}")

    def _on_data(self, data: bytes) -> None:
        self.chunks_received += 1
        if self.dump is not None:
            self.dump.received(data)
        if self._timer is not None:
            self._last_read = self._loop.time()
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.resume is not None:
            data, report = self.resume.feed(data)
            for line in report:
                self.status.show(self.name, line)
            if not data:
                return
        self.sink.data(data)

    def _check_timeout(self, conn: Conn) -> None:
        timeout = self.opts.timeout
        assert timeout is not None
        self._timer = None
        if conn.is_closing:
            return
        quiet = self._loop.time() - self._last_read
        if quiet < timeout:
            self._timer = self._loop.call_later(timeout - quiet, self._check_timeout, conn)
            return
        # Only what the peer sends proves it is alive: our own writes are accepted by the
        # kernel even when the peer (or the path to it) is gone.
        self.reason = f"nothing received for {timeout:g} s"
        self.status.detail(self.name, f"timeout: {self.reason}")
        conn.abort(reason="timeout")

    def _on_eof(self, conn: Conn) -> None:
        self.status.detail(self.name, "end: the server finished sending")
        if self.reason is None:
            self.reason = "closed" if self._ended else "closed by the server"
        conn.close()

    def _on_close(self, conn: Conn, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if exc is not None:
            self.status.detail(self.name, f"error: {describe_oserror(exc)}")
            if self.reason is None:
                self.reason = describe_oserror(exc)
        elif self.reason is None:
            self.reason = "closed" if self._ended else "closed by the server"
        self.sink.flush()
        self._in_done += conn.bytes_read
        self._out_done += conn.bytes_written
        self._counted = conn
        if self.dump is not None:
            self.dump.finish()
        self.status.detail(
            self.name,
            f"close: read {conn.bytes_read} B, wrote {conn.bytes_written} B"
            f" in {conn.duration:.1f} s",
        )

    def _on_wait(self, delay: float, attempt: int, exc: BaseException | None) -> None:
        self.attempted.set()
        if exc is not None:
            self.status.state(self.name, str(exc))
        self.status.state(self.name, f"reconnecting in {delay:.1f} s (attempt {attempt})")


async def all_done(links: Sequence[Link]) -> None:
    """Wait until every link has stopped for good."""
    await asyncio.gather(*(link.done.wait() for link in links))

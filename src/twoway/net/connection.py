"""One TCP connection: an ``asyncio.Protocol`` that is also the user-facing connection object.

The protocol callbacks are the hot path. ``data_received`` counts the bytes, cuts them into
lines (or passes them raw), calls the service synchronously and returns: no task per line, no
await. Replies written while any ``data_received`` runs are coalesced per peer and handed to
the transport once, at the end of that callback (a chat line fanned out to a hundred peers
costs a hundred ``write`` calls per read, not per line).

Memory is bounded both ways. Outbound: above ``write_high`` a server connection stops reading
from its peer (the ``pipe`` behaviour of Node.js) and ``drain()`` waits; a client connection
keeps reading (see :meth:`Connection.pause_writing`); a peer that lets more than
``max_queued`` bytes pile up, or stays above ``write_high`` for ``slow_grace`` seconds, is
handed to :meth:`Service.on_slow`. Inbound: the line decoder holds at most ``max_line + 1``
bytes and the async inbox pauses reading at ``inbox_limit``.

Closing is explicit and bounded: :meth:`Connection.close` flushes, sends FIN, reads and
discards whatever the peer still sends (so the kernel answers with a FIN, not an RST, and the
peer can read our last line), and aborts after ``close_timeout``. :meth:`Connection.abort`
resets at once. Both are idempotent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Generator
from typing import Any, cast

from twoway.errors import ConnectionClosed, ConnectionClosedLocally, ConnectionLost
from twoway.net.address import format_address
from twoway.net.idle import set_keepalive, sweeper_for
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry
from twoway.net.service import LineService, Service, deliver_line
from twoway.net.tlspeer import PeerCertificate, peer_certificate
from twoway.sansio.framing import Line, LineDecoder, LineTooLong, PartialLine
from twoway.sansio.telnet import TelnetFilter

__all__ = [
    "AsciiLineConnection",
    "ChunkConnection",
    "Connection",
    "LineConnection",
    "RawConnection",
    "TelnetLineConnection",
    "connection_class",
]

log = logging.getLogger("twoway.connection")

#: A read longer than this is decoded in slices of it (see LineConnection._feed_slices).
_SLICE = 16 * 1024

_PAUSE_USER = 1
_PAUSE_WRITE = 2
_PAUSE_INBOX = 4
_PAUSE_HANDOFF = 8  # another reader owns the socket's input (see hand_off_reading)

# Connections written to by service callbacks during this loop iteration, flushed by one
# call_soon at its end (see the module docstring). One event loop per process is assumed:
# the state is module-global because a thread-local would cost on every write.
_dirty: list[Connection] = []
_batching = False
_flush_scheduled = False
# The connection whose callback is running, until its first reply was written (see write()).
_owner: Connection | None = None


class _Ready:
    """An awaitable that is already done: what ``write()`` returns when no drain is needed."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_READY = _Ready()


def _end_callback(conn: Connection) -> None:
    """The end of a service callback (the epilogue of every ``data_received`` path).

    Replies to this peer go out now, so its write backpressure pauses its reading before
    libuv reads more; writes to other peers wait for the end of the loop iteration.
    """
    global _batching, _owner
    _batching = False
    _owner = None
    if conn._pending is not None:
        conn._flush_pending()
    if _dirty and not _flush_scheduled:
        _schedule_flush()


def _schedule_flush() -> None:
    global _flush_scheduled
    _flush_scheduled = True
    # Runs after every other callback of this loop iteration: a peer written to by several
    # reads handled in the same iteration (ten chat senders, say) gets one write for all.
    asyncio.get_running_loop().call_soon(_flush_dirty)


def _flush_dirty() -> None:
    global _flush_scheduled
    _flush_scheduled = False
    for conn in _dirty:
        if conn._pending is not None:
            conn._flush_pending()
    _dirty.clear()


class Connection(asyncio.Protocol):
    """A connection, server or client side. Use :class:`RawConnection` and friends.

    Attributes a user reads: ``peer`` (``"host:port"``), ``remote_address``,
    ``local_address``, ``bytes_read``, ``bytes_written``, ``opened_at`` (epoch seconds),
    :attr:`duration`, ``state`` (free for the service's per-connection data).
    """

    __slots__ = (
        "_close_timer",
        "_closed",
        "_closing",
        "_drain_waiters",
        "_ended",
        "_eof",
        "_here",
        "_idle_seen",
        "_idle_since",
        "_inbox",
        "_inbox_bytes",
        "_inbox_waiter",
        "_local",
        "_lost",
        "_newline",
        "_opened_mono",
        "_pause",
        "_pending",
        "_pending_size",
        "_registry",
        "_slow",
        "_slow_timer",
        "_started",
        "_write_paused",
        "bytes_read",
        "bytes_written",
        "close_reason",
        "options",
        "remote_address",
        "service",
        "state",
        "transport",
    )

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        self.service = service
        self.options = options
        #: The server's registry this connection reports to; None on the client side.
        self._registry = registry
        self.transport: asyncio.Transport | None = None
        self.bytes_read = 0
        self.bytes_written = 0
        self.state: Any = None
        self.remote_address: Any = None
        self._local: Any = None
        #: Why the connection was closed by this side ("quit", "idle", "too slow", ...).
        self.close_reason: str | None = None
        self._opened_mono = 0.0
        self._newline = b"\n"
        self._closing = False
        self._closed = False
        self._ended = False
        self._here = False  # this side ended it (close/abort/end): see _closed_error
        self._eof = False
        self._pause = 0
        self._write_paused = False
        self._slow = False
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._inbox: collections.deque[Any] | None = None
        self._inbox_bytes = 0
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._slow_timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] | None = None
        self._idle_seen = 0
        self._idle_since = 0.0
        self._started = False  # on_connect ran, so on_close will (a rejected one gets neither)

    # ------------------------------------------------------------------ properties

    @property
    def opened_at(self) -> float:
        """When the connection was made, in seconds since the epoch."""
        return time.time() - (time.monotonic() - self._opened_mono)

    @property
    def peer(self) -> str:
        """The remote address as ``host:port`` (``[host]:port`` for IPv6), ``?`` if unknown."""
        return format_address(self.remote_address)

    @property
    def local_address(self) -> Any:
        """The local socket address (``None`` before the connection is made)."""
        if self._local is None and self.transport is not None:
            # Looked up on demand: ten thousand idle connections need not each keep a copy.
            self._local = self.transport.get_extra_info("sockname")
        return self._local

    @property
    def peer_certificate(self) -> PeerCertificate | None:
        """The client's verified TLS certificate (subject and SHA-256 fingerprint), or
        ``None``: no TLS, no ``--tls-client-ca``, or the connection is gone. Read on demand
        (a connection keeps no copy)."""
        return peer_certificate(self.transport) if self.transport is not None else None

    @property
    def duration(self) -> float:
        """Seconds since the connection was opened."""
        return time.monotonic() - self._opened_mono

    @property
    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the peer is gone."""
        return self._closing

    @property
    def is_closed(self) -> bool:
        """True once the transport is gone (``on_close`` has run)."""
        return self._closed

    @property
    def at_eof(self) -> bool:
        """True once the peer has half-closed (sent FIN)."""
        return self._eof

    @property
    def is_ended(self) -> bool:
        """True once this side has half-closed with :meth:`end` (or closed)."""
        return self._ended or self._closing

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet accepted by the kernel."""
        size = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if self._pending:
            size += sum(map(len, self._pending))
        return size

    @property
    def newline(self) -> bytes:
        """The line ending replies use: the one of the peer's last line (default LF)."""
        return self._newline

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._opened_mono = time.monotonic()
        opts = self.options
        if self.remote_address is None:  # preset by the accept path for a PROXY header
            self.remote_address = transport.get_extra_info("peername")
        # Both loops already set TCP_NODELAY on TCP sockets. The socket object is fetched only
        # when an option needs it: uvloop builds a wrapper per call (~200 B per connection).
        # A server's connections inherit keep-alive from the listening socket (see Server).
        keepalive = opts.keepalive if self._registry is None else None
        sock = None
        if not opts.nodelay or keepalive is not None:
            sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                if not opts.nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
                if keepalive is not None:
                    set_keepalive(sock, keepalive)
            except OSError as exc:  # the socket may already be gone
                log.debug("%s: socket options not set: %s", self.peer, exc)
        transport.set_write_buffer_limits(high=opts.write_high, low=opts.write_low)
        if self._registry is not None and not self._registry.admit(self):
            return
        timeouts = [t for t in (opts.idle_timeout, opts.line_timeout) if t is not None]
        if timeouts:
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            sweeper_for(loop).watch(self, self._sweep, min(timeouts))
        self._started = True
        self._call(self.service.on_connect)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._local is None and self.transport is not None:
            self._local = self.transport.get_extra_info("sockname")  # readable after the close
        self._closed = True
        self._closing = True
        self._pending = None
        for timer in (self._close_timer, self._slow_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._slow_timer = None
        self._wake_drainers()
        self._wake_inbox()
        if self.options.idle_timeout is not None or self.options.line_timeout is not None:
            sweeper_for(asyncio.get_running_loop()).unwatch(self)
        if self._started:
            try:
                self.service.on_close(self, exc)
            except Exception as err:
                self._report(err)
        if self._registry is not None:
            self._registry.forget(self, exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.transport = None

    def eof_received(self) -> bool:
        if self._closing:
            return False  # we sent FIN and were draining the peer's input: done
        self._eof = True
        self._call(self._at_eof)
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        # A server stops reading a peer that does not read its replies. A client must not:
        # streaming to an echoing server, each side would wait for the other to read first
        # and both would stop for good. The client's writers wait in drain() instead.
        if self._registry is not None:
            self._pause_reading(_PAUSE_WRITE)
        grace = self.options.slow_grace
        if grace is not None and self._slow_timer is None:
            self._slow_timer = asyncio.get_running_loop().call_later(grace, self._too_slow)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._resume_reading(_PAUSE_WRITE)
        self._wake_drainers()

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> Awaitable[None]:
        """Queue ``data`` for the peer. Never blocks; dropped silently once closing.

        Returns an awaitable that completes when the write buffer is below its low-water
        mark, so ``await conn.write(b"...")`` applies backpressure while callback code can
        ignore the result.
        """
        global _owner
        if self._closing or self._ended:
            return _READY
        self.bytes_written += len(data)
        pending = self._pending
        if pending is not None:  # keep the order: queued replies go out first
            pending.append(data)
            size = self._pending_size = self._pending_size + len(data)
            if size > self.options.write_high:
                # uvloop may run many reads before the end-of-iteration flush: hand a big
                # batch to the transport now so its high-water mark and max_queued apply.
                self._flush_pending()
            return _READY
        if _batching:
            if self is _owner:
                # A callback's first reply to its own peer goes straight out: no pending list,
                # no flush. Later writes in the same callback queue behind it, coalesced.
                _owner = None
                assert self.transport is not None
                self.transport.write(data)
                if self._write_paused:
                    self._check_queue()
                return _READY
            self._pending = [data]
            self._pending_size = len(data)
            _dirty.append(self)
            return _READY
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # lost, connection_lost still to come (see _flush_pending)
            self._closing = True
            return _READY
        transport.write(data)
        if self._write_paused:
            self._check_queue()
            return self._drain_waiter()
        return _READY

    def send_line(self, text: str) -> Awaitable[None]:
        """Write ``text`` (UTF-8) and the peer's line ending; see :meth:`write`."""
        return self.write(text.encode() + self._newline)

    async def send(self, data: bytes | str) -> None:
        """Write ``data`` (``str`` is UTF-8 encoded, nothing added) and wait for the drain.

        Raises :class:`ConnectionClosedLocally` once this side has closed or ended it,
        :class:`ConnectionLost` once it broke (both are :class:`ConnectionClosed`).
        """
        if self._closing or self._ended:
            raise self._closed_error()
        await self.write(data.encode() if isinstance(data, str) else data)
        if self._closed:
            raise self._closed_error()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark. Raises if lost."""
        if self._closed:
            raise self._closed_error()
        if self._write_paused:
            await self._drain_waiter()
        if self._closed:
            raise self._closed_error()

    # ------------------------------------------------------------------ reading control

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading` (the kernel buffers)."""
        self._pause_reading(_PAUSE_USER)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`; reading may stay paused for flow control."""
        self._resume_reading(_PAUSE_USER)

    def hand_off_reading(self) -> None:
        """Another reader (a thread splicing the socket into a file) takes over the input:
        reading stays paused, whatever else resumes it, until :meth:`take_back_reading`.
        Meanwhile :meth:`close` does not read to drain the peer (that would race the other
        reader): it closes at once, and the service's ``on_close`` must stop that reader."""
        self._pause_reading(_PAUSE_HANDOFF)

    def take_back_reading(self) -> None:
        """Undo :meth:`hand_off_reading`: this connection reads its socket again."""
        self._resume_reading(_PAUSE_HANDOFF)

    # ------------------------------------------------------------------ ending

    def end(self) -> None:
        """Half-close: flush what is queued, send FIN, keep reading. Idempotent."""
        if self._ended or self._closing or self.transport is None:
            return
        self._flush_own()
        self._ended = True
        self._here = True
        if self.transport.can_write_eof():
            try:
                self.transport.write_eof()
            except OSError:  # the peer is already gone (ENOTCONN after its RST)
                self.abort()

    def close(self, timeout: float | None = None, reason: str | None = None) -> None:
        """Flush what is queued, send FIN, then close; abort after ``timeout`` seconds
        (default ``close_timeout``) if the peer does not read or does not close. Idempotent.
        """
        if self._closing or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self._flush_own()
        self._closing = True
        self._here = True
        transport = self.transport
        if (
            self._eof
            or self._ended
            or self._pause & _PAUSE_HANDOFF
            or not transport.can_write_eof()
        ):
            transport.close()
        else:
            try:
                transport.write_eof()
            except OSError:  # the peer reset first (asyncio shuts down at once: ENOTCONN)
                transport.abort()
                return
            # Keep reading (and discarding) so unread input does not turn our close into an
            # RST that would destroy the last lines the peer has not read yet.
            self._pause = 0
            transport.resume_reading()
        delay = self.options.close_timeout if timeout is None else timeout
        self._close_timer = asyncio.get_running_loop().call_later(delay, self.abort)

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once with an RST; queued data is discarded. Idempotent."""
        if self._closed or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self._closing = True
        self._here = True
        self._pending = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone (``on_close`` has run)."""
        if self._closed:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ async reading

    async def _receive(self) -> Any:
        """The next inbox item (``str`` line or ``bytes`` chunk), ``None`` at the end."""
        while True:
            inbox = self._inbox
            if inbox:
                item = inbox.popleft()
                self._inbox_bytes -= len(item)
                if (
                    self._pause & _PAUSE_INBOX
                    and self._inbox_bytes <= self.options.inbox_limit // 2
                ):
                    self._resume_reading(_PAUSE_INBOX)
                return item
            if self._eof or self._closing:
                return None
            waiter = self._inbox_waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def readline(self) -> str | None:
        """The next line (without terminator), or ``None`` once the peer has finished."""
        item = await self._receive()
        if item is None or isinstance(item, str):
            return item
        return bytes(item).decode("utf-8", "replace")

    async def read(self) -> bytes:
        """The next received chunk (raw framing), or ``b""`` once the peer has finished."""
        item = await self._receive()
        if item is None:
            return b""
        return item.encode() if isinstance(item, str) else bytes(item)

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if line is None:
            raise StopAsyncIteration
        return line

    def feed_inbox(self, item: str | bytes) -> None:
        """Queue a received line (``str``) or chunk (``bytes``) for :meth:`readline`,
        :meth:`read` and ``async for``; reading pauses while more than ``inbox_limit`` bytes
        wait. What :class:`~twoway.net.asyncapi.AsyncService` does with every line."""
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = collections.deque()
        inbox.append(item)
        self._inbox_bytes += len(item)
        if self._inbox_bytes > self.options.inbox_limit:
            self._pause_reading(_PAUSE_INBOX)
        self._wake_inbox()

    # ------------------------------------------------------------------ internals

    def notify_shutdown(self, reason: str) -> None:
        """The server is shutting down: run the service's ``on_shutdown`` (which tells the
        peer ``reason`` and closes, by default) as a callback of this connection."""
        self._call(self.service.on_shutdown, reason)

    def _call(self, callback: Any, *args: Any) -> None:
        """Run a service callback with write coalescing and exception containment."""
        global _batching, _owner
        if _batching:
            try:
                callback(self, *args)
            except Exception as exc:
                self._report(exc)
                self.abort()
            return
        _batching = True
        _owner = self
        try:
            callback(self, *args)
        except Exception as exc:
            self._report(exc)
            self.abort()
        finally:
            _end_callback(self)

    def _at_eof(self, _conn: Connection) -> None:
        self._wake_inbox()
        self.service.on_eof(self)

    def _closed_error(self) -> ConnectionClosed:
        """The error for an operation on a closed connection: :class:`ConnectionClosedLocally`
        when this side closed it (``close``, ``abort``, ``end``), :class:`ConnectionLost` when
        it broke (the peer reset it, or it went away without this side closing it)."""
        if self._here:
            return ConnectionClosedLocally(f"connection to {self.peer} is closed")
        return ConnectionLost(f"connection to {self.peer} was lost")

    def _report(self, exc: Exception) -> None:
        try:
            self.service.on_error(self, exc)
        except Exception:
            log.exception("%s: error while reporting an error", self.peer)

    def _flush_pending(self) -> None:
        pending = self._pending
        self._pending = None
        transport = self.transport
        if pending is None or transport is None:
            return
        if transport.is_closing():
            # The peer is gone and connection_lost has not run yet (a batch of resets): a
            # write now would only make asyncio log "socket.send() raised exception.".
            self._closing = True
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._write_paused:
            self._check_queue()

    def _flush_own(self) -> None:
        pending = self._pending
        if pending and self.transport is not None and not self.transport.is_closing():
            self._pending = None
            self.transport.write(b"".join(pending))

    def _pause_reading(self, why: int) -> None:
        if not self._pause and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._pause |= why

    def _resume_reading(self, why: int) -> None:
        if not self._pause & why:
            return
        self._pause &= ~why
        if not self._pause and self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def _drain_waiter(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._drain_waiters is None:
            self._drain_waiters = [fut]
        else:
            self._drain_waiters.append(fut)
        return fut

    def _wake_drainers(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _wake_inbox(self) -> None:
        waiter = self._inbox_waiter
        if waiter is not None:
            self._inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check_queue(self) -> None:
        limit = self.options.max_queued
        if limit is not None and not self._slow and self.write_buffer_size > limit:
            self._too_slow()

    def _too_slow(self) -> None:
        self._slow_timer = None
        if self._slow or self._closed:
            return
        self._slow = True
        if self.close_reason is None:
            self.close_reason = "too slow"
        log.info("%s: too slow (%d bytes queued), disconnecting", self.peer, self.write_buffer_size)
        if self._registry is not None:
            self._registry.note("too slow")
        try:
            self.service.on_slow(self)
        except Exception as exc:
            self._report(exc)
            self.abort()

    def _sweep(self, now: float) -> None:
        """The sweeper's callback (see net.idle): the idle timeout and the line deadline."""
        if self._closing:
            return
        timeout = self.options.idle_timeout
        if timeout is not None:
            seen = self.bytes_read + self.bytes_written
            if seen != self._idle_seen:
                self._idle_seen = seen
                self._idle_since = now
            elif now - self._idle_since >= timeout:
                if self.close_reason is None:
                    self.close_reason = "idle"
                if self._registry is not None:
                    self._registry.note("idle")
                self._call(self.service.on_idle)
                return
        timeout = self.options.line_timeout
        if timeout is not None:
            self._check_line_deadline(now, timeout)

    def _check_line_deadline(self, now: float, timeout: float) -> None:
        """Line connections end a line that takes longer than ``timeout``; others have none."""


class RawConnection(Connection):
    """A connection whose service gets every received chunk as bytes (``on_data``)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._closing:
            return
        global _batching, _owner
        if _batching:
            self._call(self.service.on_data, data)
            return
        # _call, inlined: this is the hot path of every raw service.
        _batching = True
        _owner = self
        try:
            self.service.on_data(self, data)
        except Exception as exc:
            self._report(exc)
            self.abort()
        finally:
            _end_callback(self)


class LineConnection(Connection):
    """A connection whose service gets decoded lines (``on_line``).

    Answering obeys the write queue: once a server connection's queue passes its high-water
    mark, the rest of the read is kept as bytes (at most one read) and answered when the
    peer has read enough (``resume_writing``); reading stays paused meanwhile. One read can
    hold a quarter of a million empty lines, so answering them all first would let a peer
    that never reads pin megabytes.
    """

    __slots__ = ("_backlog", "_decoder", "_line_since", "_line_start")

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        super().__init__(service, options, registry)
        self._decoder = LineDecoder(options.max_line)
        #: Received bytes not answered yet because the write queue is full (see the class).
        self._backlog: bytes | None = None
        #: Where the unfinished line the last sweep saw began (a stream offset; -1 while an
        #: over-long line is skipped), and since when it has been unfinished.
        self._line_start: int | None = None
        self._line_since = 0.0

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._closing:
            return
        if self._backlog is not None:
            self._backlog += data  # a read that was already under way when reading paused
            return
        if not _batching and self._decoder.is_single(data):
            self._one_line(data[:-1])
            return
        self._feed(data)

    def resume_writing(self) -> None:
        backlog = self._backlog
        if backlog is not None:
            # The peer read enough: answer the rest of the last read before reading more.
            self._backlog = None
            self._write_paused = False
            if self._slow_timer is not None:
                self._slow_timer.cancel()
                self._slow_timer = None
            if not self._closing:
                self._feed(backlog)
            if self._write_paused or self._backlog is not None:
                return  # over the high-water mark again: reading stays paused
        super().resume_writing()

    def _feed(self, data: bytes) -> None:
        if self.bytes_read == len(data) and data[:2] == b"\x16\x03" and self._registry is not None:
            # A TLS record as the very first bytes: a TLS client on a plain port. Checked here,
            # off the one-line hot path (a ClientHello is never one line), for one log line
            # instead of a binary "line" reaching the service.
            self._registry.tls_on_plain_port(self)
            return
        decoder = self._decoder
        if len(data) > _SLICE:
            self._feed_slices(data)
            return
        # A feed that starts inside an over-long line ends it at the first newline without an
        # event: _keep_rest must count that newline too.
        skip = 1 if decoder.discarding else 0
        events = decoder.feed(data)
        if events:
            self._deliver(events, data, skip)

    def _feed_slices(self, data: bytes) -> None:
        """A big read, decoded a slice at a time: a 256 KiB read of empty lines would be a
        quarter of a million events alive at once (16 MiB); a slice holds at most 16 K."""
        decoder = self._decoder
        n = len(data)
        pos = 0
        while pos < n and not self._closing:
            piece = data[pos : pos + _SLICE]
            pos += _SLICE
            skip = 1 if decoder.discarding else 0
            events = decoder.feed(piece)
            if events:
                self._deliver(events, piece, skip)
            if self._backlog is not None:  # answering stopped inside this slice
                self._backlog += data[pos:]
                return

    def _one_line(self, raw: bytes) -> None:
        """The hot path for a read holding exactly one LF line: no event objects at all."""
        global _batching, _owner
        _batching = True
        _owner = self
        service: LineService = self.service  # type: ignore[assignment]
        try:
            self._newline = b"\n"
            text = raw.decode("utf-8", "replace")
            if len(text) == 4 and service.quit_command and text.lower() == "quit":
                service.on_quit(self)
            else:
                service.on_line(self, text)
        except Exception as exc:
            self._report(exc)
            self.abort()
        finally:
            _end_callback(self)

    def _deliver(self, events: list[Any], data: bytes, skip: int) -> None:
        global _batching, _owner
        if _batching:
            self._call(self._dispatch, events, data, skip)
            return
        # _call, inlined: this is the hot path of every line service.
        _batching = True
        _owner = self
        try:
            self._dispatch(self, events, data, skip)
        except Exception as exc:
            self._report(exc)
            self.abort()
        finally:
            _end_callback(self)

    def _dispatch(self, _conn: Connection, events: list[Any], data: bytes, skip: int) -> None:
        service: LineService = self.service  # type: ignore[assignment]
        for done, event in enumerate(events, 1):
            if type(event) is Line:
                raw, crlf = event
                self._newline = b"\r\n" if crlf else b"\n"
                text = raw.decode("utf-8", "replace")
                if len(text) == 4 and service.quit_command and text.lower() == "quit":
                    service.on_quit(self)
                else:
                    service.on_line(self, text)
            elif type(event) is LineTooLong:
                service.on_line_too_long(self, event.limit)
            if self._closing:
                return
            if self._write_paused and self._registry is not None and done < len(events):
                self._keep_rest(data, done + skip)
                return

    def _check_line_deadline(self, now: float, timeout: float) -> None:
        decoder = self._decoder
        buffered = decoder.buffered
        if buffered:
            start = self.bytes_read - buffered
        elif decoder.discarding:
            start = -1
        else:
            self._line_start = None
            return
        if start != self._line_start:
            self._line_start = start
            self._line_since = now
        elif now - self._line_since >= timeout:
            if self.close_reason is None:
                self.close_reason = "line timeout"
            if self._registry is not None:
                self._registry.note("line timeout")
            service = cast(LineService, self.service)
            self._call(service.on_line_timeout, timeout)

    def _keep_rest(self, data: bytes, newlines: int) -> None:
        """Keep what follows the ``newlines``-th newline of ``data`` unanswered (the events
        after the ones handled); the decoder starts again at that line boundary later."""
        pos = -1
        for _ in range(newlines):
            pos = data.index(b"\n", pos + 1)
        self._decoder.reset()
        self._backlog = data[pos + 1 :]

    def _at_eof(self, _conn: Connection) -> None:
        events = self._decoder.feed_eof()
        service = cast(LineService, self.service)
        for event in events:
            if self._closing or not isinstance(event, PartialLine):
                break
            deliver_line(service, self, event.data.decode("utf-8", "replace"))
        super()._at_eof(_conn)


class AsciiLineConnection(LineConnection):
    """A line connection for a service with ``ascii_lines``: a read that is exactly one
    ASCII line goes to :meth:`LineService.on_ascii_line` as the received bytes, ending
    included, with no decoding and no encoding (UTF-8 and ASCII agree on every such line).
    Anything else takes the :class:`LineConnection` path."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._closing:
            return
        if self._backlog is not None:
            self._backlog += data
            return
        if not _batching and data.isascii() and self._decoder.is_single(data):
            self._one_ascii_line(data)
            return
        self._feed(data)

    def _one_ascii_line(self, data: bytes) -> None:
        """:meth:`LineConnection._one_line`'s twin for bytes, written out on purpose like the
        other hot-path callbacks here: a shared helper would cost a call per message."""
        global _batching, _owner
        _batching = True
        _owner = self
        service: LineService = self.service  # type: ignore[assignment]
        try:
            self._newline = b"\n"
            if len(data) == 5 and service.quit_command and data.lower() == b"quit\n":
                service.on_quit(self)
            else:
                service.on_ascii_line(self, data)
        except Exception as exc:
            self._report(exc)
            self.abort()
        finally:
            _end_callback(self)


class TelnetLineConnection(LineConnection):
    """A line connection that also speaks just enough telnet for a real ``telnet`` client:
    IAC sequences are consumed (never reach the service), options are refused, and
    ``\\r\\0`` ends a line. Used when the service sets ``telnet = True``."""

    __slots__ = ("_telnet",)

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        super().__init__(service, options, registry)
        self._telnet = TelnetFilter()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._closing:
            return
        data, reply = self._telnet.feed(data)
        if reply:
            self.write(reply)
        if data:
            if self._backlog is not None:
                self._backlog += data
            else:
                self._feed(data)


class ChunkConnection(Connection):
    """A line-service connection that treats each received chunk as one message.

    For clients that send without newlines (``client.write('I am Chuck Norris!')``). TCP
    keeps no message boundaries: two quick writes may arrive as one chunk, or one as two.
    A trailing CRLF or LF is removed; the reply uses it, else LF.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self._closing:
            return
        self._call(self._dispatch, data)

    def _dispatch(self, _conn: Connection, data: bytes) -> None:
        service = cast(LineService, self.service)
        limit = self.options.max_line
        if data.endswith(b"\n"):
            self._newline = b"\r\n" if data.endswith(b"\r\n") else b"\n"
            data = data.rstrip(b"\r\n")
        if limit is not None and len(data) > limit:
            service.on_line_too_long(self, limit)
            return
        deliver_line(service, self, data.decode("utf-8", "replace"))


def _ascii_fast_path(service: Service) -> bool:
    """``ascii_lines``, unless ``on_line`` is overridden below the ``on_ascii_line`` that
    would bypass it (a subclass of ``UpperService`` that changes ``on_line`` must get it)."""
    if not getattr(service, "ascii_lines", False) or "on_line" in vars(service):
        return False
    mro = type(service).__mro__
    line_owner = next(k for k in mro if "on_line" in vars(k))
    ascii_owner = next(k for k in mro if "on_ascii_line" in vars(k))
    return issubclass(ascii_owner, line_owner)


def connection_class(service: Service) -> type[Connection]:
    """The connection class matching ``service.framing``."""
    framing = service.framing
    if framing == "line":
        if getattr(service, "telnet", False):
            return TelnetLineConnection
        return AsciiLineConnection if _ascii_fast_path(service) else LineConnection
    if framing == "chunk":
        return ChunkConnection
    if framing == "raw":
        return RawConnection
    raise ValueError(f"unknown framing {framing!r} (raw, line or chunk)")


def tapped(cls: type[Connection]) -> type[Connection]:
    """``cls`` with ``options.tap`` called on every chunk read and written and at the end
    (``serve -x``). A subclass, chosen by the server only when a tap is set: connections
    without one run the untouched methods and pay nothing, not even a test."""

    class Tapped(cls):  # type: ignore[valid-type, misc]  # a class chosen at run time
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            self.options.tap(self, "in", data)
            super().data_received(data)

        def write(self, data: bytes) -> Awaitable[None]:
            if not (self._closing or self._ended):  # what write() drops is not shown
                self.options.tap(self, "out", data)
            return super().write(data)  # type: ignore[no-any-return]

        def connection_lost(self, exc: Exception | None) -> None:
            self.options.tap(self, "close", b"")  # before the close is logged
            super().connection_lost(exc)

    Tapped.__name__ = Tapped.__qualname__ = f"Tapped{cls.__name__}"
    return Tapped

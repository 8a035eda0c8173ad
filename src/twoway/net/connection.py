"""One TCP connection: an ``asyncio.Protocol`` that is also the user-facing connection object.

The protocol callbacks are the hot path. ``data_received`` (in the framed classes of
:mod:`twoway.net.framed`) counts the bytes, cuts them into lines (or passes them raw), calls
the service synchronously and returns: no task per line, no await. Replies are coalesced
per peer (:mod:`twoway.net.coalesce`); flow control and the slow-consumer policy are in
:mod:`twoway.net.flow`; the phases of a connection's life and the reasons for closing it
in :mod:`twoway.net.state`.

Memory is bounded both ways: outbound by the write high-water mark, ``max_queued`` and
``slow_grace`` (see :mod:`~twoway.net.flow`); inbound by the line decoder (at most
``max_line + 1`` bytes) and the async inbox (reading pauses at ``inbox_limit``).

Closing is explicit and bounded: :meth:`Connection.close` flushes, sends FIN, reads and
discards whatever the peer still sends (so the kernel answers with a FIN, not an RST, and the
peer can read our last line), and aborts after ``close_timeout``. :meth:`Connection.abort`
resets at once. Both are idempotent.

For the framed classes (the net package's own contract, not a service's): ``phase``,
``registry``, ``queued``, ``write_paused`` and the methods :meth:`~Connection.run_callback`,
:meth:`~Connection.report_error`, :meth:`~Connection.flush_queued`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from twoway.errors import ConnectionClosed, ConnectionClosedLocally, ConnectionLost
from twoway.net.address import format_address
from twoway.net.coalesce import READY, coalescer
from twoway.net.flow import Pause
from twoway.net.groups import Group
from twoway.net.idle import set_keepalive, sweeper_for
from twoway.net.inbox import AsyncInbox
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry
from twoway.net.service import Service
from twoway.net.state import TRANSITIONS, CloseReason, Phase
from twoway.net.tlspeer import PeerCertificate, peer_certificate

__all__ = ["Connection"]

log = logging.getLogger("twoway.connection")

_co = coalescer
_ENDED = Phase.ENDED.value
_CLOSING = Phase.CLOSING.value
_CLOSED = Phase.CLOSED.value


class Connection(AsyncInbox, asyncio.Protocol):
    """A connection, server or client side. Use :class:`~twoway.net.framed.RawConnection`
    and friends.

    Attributes a user reads: ``peer`` (``"host:port"``), ``remote_address``,
    ``local_address``, ``bytes_read``, ``bytes_written``, ``opened_at`` (epoch seconds),
    :attr:`duration`, ``state`` (free for the service's per-connection data).
    """

    __slots__ = (
        "_close_timer",
        "_eof",
        "_here",
        "_idle_seen",
        "_idle_since",
        "_local",
        "_lost",
        "_newline",
        "_opened_mono",
        "bytes_read",
        "bytes_written",
        "close_reason",
        "group",
        "group_key",
        "options",
        "phase",
        "queued",
        "queued_size",
        "registry",
        "remote_address",
        "service",
        "state",
        "transport",
    )

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        super().__init__()
        self.service = service
        self.options = options
        #: The server's registry this connection reports to; None on the client side.
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        #: Where the connection is in its life: a :class:`~twoway.net.state.Phase` value,
        #: kept as a plain ``int`` because the hot paths compare it on every read and write.
        self.phase: int = Phase.NEW.value
        self.bytes_read = 0
        self.bytes_written = 0
        self.state: Any = None
        self.remote_address: Any = None
        self._local: Any = None
        #: Why this side closed the connection (a :class:`~twoway.net.state.CloseReason`
        #: or a service's own words: "quota exceeded"...).
        self.close_reason: str | None = None
        self._opened_mono = 0.0
        self._newline = b"\n"
        self._here = False  # this side ended it (close/abort/end): see closed_error
        self._eof = False  # the peer half-closed
        #: Writes coalesced until the end of the callback or loop iteration (see coalesce).
        self.queued: list[bytes] | None = None
        self.queued_size = 0
        #: The write group this connection is in (a chat room), and its key there: set by
        #: the group (see :mod:`twoway.net.groups`). A write takes the group's lines first.
        self.group: Group | None = None
        self.group_key = 0
        self._close_timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] | None = None
        self._idle_seen = 0
        self._idle_since = 0.0

    def _move(self, phase: Phase) -> None:
        """Advance to ``phase`` (never back: moving to where it is, or before, is a no-op)."""
        now = Phase(self.phase)
        if phase <= now:
            return
        if phase not in TRANSITIONS[now]:
            raise RuntimeError(f"connection phase {now.name} cannot become {phase.name}")
        self.phase = int(phase)

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
        return self.phase >= _CLOSING

    @property
    def is_closed(self) -> bool:
        """True once the transport is gone (``on_close`` has run)."""
        return self.phase == _CLOSED

    @property
    def at_eof(self) -> bool:
        """True once the peer has half-closed (sent FIN)."""
        return self._eof

    @property
    def is_ended(self) -> bool:
        """True once this side has half-closed with :meth:`end` (or closed)."""
        return self.phase >= _ENDED

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet accepted by the kernel."""
        size = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if self.queued:
            size += sum(map(len, self.queued))
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
        keepalive = opts.keepalive if self.registry is None else None
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
        if self.registry is not None and not self.registry.admit(self):
            return  # refused: stays NEW until connection_lost, the service never hears of it
        timeouts = [t for t in (opts.idle_timeout, opts.line_timeout) if t is not None]
        if timeouts:
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            sweeper_for(loop).watch(self, self._sweep, min(timeouts))
        self._move(Phase.OPEN)
        self.run_callback(self.service.on_connect)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._local is None and self.transport is not None:
            self._local = self.transport.get_extra_info("sockname")  # readable after the close
        # A refused connection went from NEW to CLOSING: its service never heard of it.
        registry = self.registry
        started = self.phase != Phase.NEW and (registry is None or registry.admitted(self))
        self._move(Phase.CLOSED)
        self.queued = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.stop_flow()
        self.wake_inbox()
        if self.options.idle_timeout is not None or self.options.line_timeout is not None:
            sweeper_for(asyncio.get_running_loop()).unwatch(self)
        if started:
            try:
                self.service.on_close(self, exc)
            except Exception as err:
                self.report_error(err)
        if self.registry is not None:
            self.registry.forget(self, exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.transport = None

    def eof_received(self) -> bool:
        if self.phase >= _CLOSING:
            return False  # we sent FIN and were draining the peer's input: done
        self._eof = True
        self.run_callback(self._at_eof)
        return True

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> Awaitable[None]:
        """Queue ``data`` for the peer. Never blocks; dropped silently once closing.

        Returns an awaitable that completes when the write buffer is below its low-water
        mark, so ``await conn.write(b"...")`` applies backpressure while callback code can
        ignore the result.
        """
        if self.phase >= _ENDED:
            return READY
        if self.group is not None:  # three bytecodes for connections in no group (echo)
            group = self.group
            if group.batch is not None:
                # Lines its group queued for it before this write come first (see groups).
                data = group.take(self.group_key, self._newline) + data
        self.bytes_written += len(data)
        queued = self.queued
        if queued is not None:  # keep the order: queued replies go out first
            queued.append(data)
            size = self.queued_size = self.queued_size + len(data)
            if size > self.options.write_high:
                # uvloop may run many reads before the end-of-iteration flush: hand a big
                # batch to the transport now so its high-water mark and max_queued apply.
                self.flush_queued()
            return READY
        if _co.batching:
            co = _co
            if self is co.owner:
                # A callback's first reply to its own peer goes straight out: no queue, no
                # flush. Later writes in the same callback queue behind it, coalesced.
                co.owner = None
                assert self.transport is not None
                self.transport.write(data)
                if self.write_paused:
                    self.check_queue()
                return READY
            self.queued = [data]
            self.queued_size = len(data)
            co.dirty.append(self)
            return READY
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # lost, connection_lost still to come (see flush_queued)
            self._move(Phase.CLOSING)
            return READY
        transport.write(data)
        if self.write_paused:
            self.check_queue()
            return self.drain_waiter()
        return READY

    def send_line(self, text: str) -> Awaitable[None]:
        """Write ``text`` (UTF-8) and the peer's line ending; see :meth:`write`."""
        return self.write(text.encode() + self._newline)

    async def send(self, data: bytes | str) -> None:
        """Write ``data`` (``str`` is UTF-8 encoded, nothing added) and wait for the drain.

        Raises :class:`ConnectionClosedLocally` once this side has closed or ended it,
        :class:`ConnectionLost` once it broke (both are :class:`ConnectionClosed`).
        """
        if self.phase >= _ENDED:
            raise self.closed_error()
        await self.write(data.encode() if isinstance(data, str) else data)
        if self.phase == _CLOSED:
            raise self.closed_error()

    def flush_queued(self) -> None:
        """Hand the coalesced writes to the transport as one write."""
        queued = self.queued
        self.queued = None
        transport = self.transport
        if queued is None or transport is None:
            return
        if transport.is_closing():
            # The peer is gone and connection_lost has not run yet (a batch of resets): a
            # write now would only make asyncio log "socket.send() raised exception.".
            self._move(Phase.CLOSING)
            return
        transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
        if self.write_paused:
            self.check_queue()

    def _flush_own(self) -> None:
        group = self.group
        if group is not None and group.batch is not None:
            pending = group.take(self.group_key, self._newline)
            if pending:
                self.write(pending)
        queued = self.queued
        if queued and self.transport is not None and not self.transport.is_closing():
            self.queued = None
            self.transport.write(b"".join(queued))

    # ------------------------------------------------------------------ ending

    def end(self) -> None:
        """Half-close: flush what is queued, send FIN, keep reading. Idempotent."""
        if self.phase >= _ENDED or self.transport is None:
            return
        self._flush_own()
        self._move(Phase.ENDED)
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
        if self.phase >= _CLOSING or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        ended = self.phase == _ENDED
        self._flush_own()
        self._move(Phase.CLOSING)
        self._here = True
        transport = self.transport
        if self._eof or ended or self.reading_held(Pause.HANDOFF) or not transport.can_write_eof():
            transport.close()
        else:
            try:
                transport.write_eof()
            except OSError:  # the peer reset first (asyncio shuts down at once: ENOTCONN)
                transport.abort()
                return
            # Keep reading (and discarding) so unread input does not turn our close into an
            # RST that would destroy the last lines the peer has not read yet.
            self.forget_pauses()
            transport.resume_reading()
        delay = self.options.close_timeout if timeout is None else timeout
        self._close_timer = asyncio.get_running_loop().call_later(delay, self.abort)

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once with an RST; queued data is discarded. Idempotent."""
        if self.phase == _CLOSED or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self._move(Phase.CLOSING)
        self._here = True
        self.queued = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone (``on_close`` has run)."""
        if self.phase == _CLOSED:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._lost)

    # ------------------------------------------------------------------ for the framed classes

    def notify_shutdown(self, reason: str) -> None:
        """The server is shutting down: run the service's ``on_shutdown`` (which tells the
        peer ``reason`` and closes, by default) as a callback of this connection."""
        self.run_callback(self.service.on_shutdown, reason)

    def run_callback(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run a service callback with write coalescing and exception containment."""
        co = _co
        if co.batching:
            try:
                callback(self, *args)
            except Exception as exc:
                self.report_error(exc)
                self.abort()
            return
        co.batching = True
        co.owner = self
        try:
            callback(self, *args)
        except Exception as exc:
            self.report_error(exc)
            self.abort()
        finally:
            co.end(self)

    def give_reason(self, reason: str) -> None:
        """Record why this side closes the connection, unless a reason was given first."""
        if self.close_reason is None:
            self.close_reason = reason

    def report_error(self, exc: Exception) -> None:
        """Hand ``exc``, raised by a service callback, to the service's ``on_error``."""
        try:
            self.service.on_error(self, exc)
        except Exception:
            log.exception("%s: error while reporting an error", self.peer)

    def closed_error(self) -> ConnectionClosed:
        """The error for an operation on a closed connection: :class:`ConnectionClosedLocally`
        when this side closed it (``close``, ``abort``, ``end``), :class:`ConnectionLost` when
        it broke (the peer reset it, or it went away without this side closing it)."""
        if self._here:
            return ConnectionClosedLocally(f"connection to {self.peer} is closed")
        return ConnectionLost(f"connection to {self.peer} was lost")

    def _at_eof(self, _conn: Connection) -> None:
        self.wake_inbox()
        self.service.on_eof(self)

    def _sweep(self, now: float) -> None:
        """The sweeper's callback (see net.idle): the idle timeout and the line deadline."""
        if self.phase >= _CLOSING:
            return
        timeout = self.options.idle_timeout
        if timeout is not None:
            seen = self.bytes_read + self.bytes_written
            if seen != self._idle_seen:
                self._idle_seen = seen
                self._idle_since = now
            elif now - self._idle_since >= timeout:
                if self.close_reason is None:
                    self.close_reason = CloseReason.IDLE
                if self.registry is not None:
                    self.registry.note(CloseReason.IDLE)
                self.run_callback(self.service.on_idle)
                return
        timeout = self.options.line_timeout
        if timeout is not None:
            self._check_line_deadline(now, timeout)

    def _check_line_deadline(self, now: float, timeout: float) -> None:
        """Line connections end a line that takes longer than ``timeout``; others have none."""

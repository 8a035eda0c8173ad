"""One WebSocket client of a line service: an ``asyncio.Protocol`` that presents the
:class:`~twoway.net.conn.Conn` contract, so the very same service object (chat, upper...)
serves TCP clients and browser tabs.

The WebSocket protocol is the **websockets** library's sans-I/O core
(:class:`websockets.server.ServerProtocol`): bytes in with ``receive_data``, frames and the
HTTP request out with ``events_received``, bytes to send with ``data_to_send``. No framing is
written here. What this module adds is what a twoway connection promises:

- **admission** through the server's :class:`~twoway.net.registry.Registry` (allow/deny and
  the connection limits shared with TCP): the socket holds a ``pending`` slot during the
  HTTP handshake (answered by :mod:`twoway.net.wshttp`: the upgrade, or the page's files),
  then is admitted like a TCP connection (``error: server full`` arrives as a text message,
  then the close);
- **one text message in is one line** to the service (a message holding newlines is several
  lines; the ``quit`` rule applies); **one write out is one text message** (see
  :mod:`twoway.net.wsframe`);
- **limits**: a message longer than ``max_line`` bytes (fragments counted together) closes
  with 1009; binary messages on a text service with 1003; bad UTF-8 with 1007; more than
  :data:`~twoway.net.wsframe.MAX_FRAGMENTS` fragments in one message with 1009. Each is one
  log line;
- **slow consumers** exactly as TCP: above the write high-water mark reading pauses; past
  ``max_queued`` bytes or ``slow_grace`` seconds the service's ``on_slow`` drops the tab;
- **idle timeout** on messages (pings and pongs are not traffic), and **ping/pong**: a ping
  every ``ping_interval`` seconds, and a peer that has not answered the last ping by the
  next one is closed (a tab whose laptop went to sleep).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from twoway.errors import ConnectionClosed, ConnectionClosedLocally, ConnectionLost
from twoway.net.address import format_address
from twoway.net.coalesce import READY
from twoway.net.idle import sweeper_for
from twoway.net.service import deliver_line
from twoway.net.wsconfig import WsConfig
from twoway.net.wsframe import MAX_FRAGMENTS, close_code, text_frame
from twoway.net.wshttp import answer_request

__all__ = ["WsConnection"]

log = logging.getLogger("twoway.ws")
# The library logs "connection open/closed" at INFO for every client: the access log does.
_protocol_log = logging.getLogger("twoway.ws.protocol")
_protocol_log.setLevel(logging.WARNING)


class WsConnection(asyncio.Protocol):
    """One WebSocket (or page request) socket; the service sees it as a ``Conn`` once its
    handshake is done and the registry admitted it. See the module docstring."""

    __slots__ = (
        "_cfg",
        "_close_timer",
        "_closed",
        "_closing",
        "_drainers",
        "_fragments",
        "_going_away",
        "_hs_timer",
        "_lost",
        "_message",
        "_opened_mono",
        "_paused",
        "_pending_slot",
        "_ping_due",
        "_pong_wanted",
        "_proto",
        "_screened",
        "_seen",
        "_seen_at",
        "_slow",
        "_slow_timer",
        "_started",
        "_traffic",
        "_write_paused",
        "_ws_open",
        "bytes_read",
        "bytes_written",
        "close_reason",
        "options",
        "remote_address",
        "service",
        "state",
        "transport",
    )

    def __init__(self, cfg: WsConfig, *, screened: bool = False) -> None:
        self._cfg = cfg
        #: True when the accept path already checked room and access (the TLS acceptor).
        self._screened = screened
        self.service = cfg.service
        self.options = cfg.options
        self.state: Any = None
        self.close_reason: str | None = None
        self.bytes_read = 0
        self.bytes_written = 0
        self.remote_address: Any = None
        self.transport: asyncio.Transport | None = None
        self._proto: ServerProtocol | None = None
        self._opened_mono = 0.0
        self._closing = False
        self._closed = False
        self._started = False
        self._ws_open = False  # the handshake is done: writes are text frames
        self._pending_slot = False
        self._paused = 0
        self._write_paused = False
        self._slow = False
        self._slow_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._hs_timer: asyncio.TimerHandle | None = None
        self._drainers: list[asyncio.Future[None]] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._message: bytearray | None = None  # the fragments of a message so far
        self._fragments = 0
        self._going_away = False  # the server is shutting down: close with 1001
        self._traffic = 0  # messages in and out: what the idle timeout watches
        self._seen = 0
        self._seen_at = 0.0
        self._ping_due = 0.0
        self._pong_wanted = False

    # ------------------------------------------------------------------ Conn properties

    @property
    def peer(self) -> str:
        """The remote address as ``host:port`` (``[host]:port`` for IPv6)."""
        return format_address(self.remote_address)

    @property
    def local_address(self) -> Any:
        """The local socket address."""
        return self.transport.get_extra_info("sockname") if self.transport is not None else None

    @property
    def transport_kind(self) -> str:
        """``ws`` or ``wss``, for the metrics (see :func:`~twoway.net.registry.transport_of`)."""
        return "wss" if self._cfg.secure else "ws"

    @property
    def opened_at(self) -> float:
        """When the socket was accepted, in seconds since the epoch."""
        return time.time() - (time.monotonic() - self._opened_mono)

    @property
    def duration(self) -> float:
        """Seconds since the socket was accepted."""
        return time.monotonic() - self._opened_mono

    @property
    def newline(self) -> bytes:
        """Always LF: a write's lines become one message, split on LF by the page."""
        return b"\n"

    @property
    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the peer is gone."""
        return self._closing

    @property
    def is_closed(self) -> bool:
        """True once the socket is gone."""
        return self._closed

    @property
    def at_eof(self) -> bool:
        """True once the peer started the closing handshake (or went away)."""
        proto = self._proto
        return self._closed or (proto is not None and proto.close_rcvd is not None)

    @property
    def is_ended(self) -> bool:
        """True once closing (a WebSocket has no half-close)."""
        return self._closing

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet accepted by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._opened_mono = time.monotonic()
        cfg = self._cfg
        if self.remote_address is None:  # preset by the TLS acceptor
            self.remote_address = transport.get_extra_info("peername")
        registry = cfg.registry
        # The access rules first: a refused address costs no handshake. A full server is
        # told after the handshake (admit), so the page can show "error: server full".
        if not self._screened and not (
            registry.accepting and registry.permits(self.remote_address)
        ):
            self._closing = True
            transport.abort()
            return
        registry.pending += 1  # a slot of max_connections, until admitted or gone
        self._pending_slot = True
        opts = self.options
        transport.set_write_buffer_limits(high=opts.write_high, low=opts.write_low)
        self._proto = ServerProtocol(
            max_size=opts.max_line, logger=_protocol_log, origins=None, subprotocols=None
        )
        self._hs_timer = asyncio.get_running_loop().call_later(
            cfg.handshake_timeout, self._handshake_timeout
        )

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        proto = self._proto
        if proto is None or self._closed:
            return
        proto.receive_data(data)
        events = proto.events_received()
        if events:
            self._call(self._handle, events)
        if proto.parser_exc is not None:
            if self.close_reason is None:
                self._protocol_failed(proto.parser_exc)
        elif proto.handshake_exc is not None and not self._closing:
            self._closing = True
            self._cfg.log_refusal(self.remote_address, "not an HTTP request")
        self._send_pending()

    def eof_received(self) -> bool:
        proto = self._proto
        if proto is not None:
            proto.receive_eof()
            self._send_pending()
        self._closing = True
        return False  # no half-open WebSocket: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._closing = True
        for timer in (self._close_timer, self._slow_timer, self._hs_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._slow_timer = self._hs_timer = None
        self._wake_drainers()
        cfg = self._cfg
        if self._pending_slot:
            self._pending_slot = False
            cfg.registry.pending -= 1
        if self._started:
            self._unwatch()
            try:
                self.service.on_close(self, exc)
            except Exception as err:
                self._report(err)
            cfg.registry.forget(self, exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._proto = None
        self._message = None
        self.transport = None

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause(1)  # stop reading a tab that does not read its messages
        grace = self.options.slow_grace
        if grace is not None and self._slow_timer is None:
            self._slow_timer = asyncio.get_running_loop().call_later(grace, self._too_slow)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._slow_timer is not None:
            self._slow_timer.cancel()
            self._slow_timer = None
        self._resume(1)
        self._wake_drainers()

    # ------------------------------------------------------------------ the handshake

    def _handle(self, _conn: WsConnection, events: list[Any]) -> None:
        for event in events:
            if self._closing and not isinstance(event, Frame):
                return
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._request(event)

    def _request(self, request: Request) -> None:
        proto = self._proto
        assert proto is not None
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        response = answer_request(self._cfg, proto, request, self.remote_address)
        self._respond(response)
        if response.status_code == 101:
            self._open()

    def _respond(self, response: Response) -> None:
        proto = self._proto
        assert proto is not None
        if response.status_code != 101:
            self._closing = True
        proto.send_response(response)
        self._send_pending()  # before any frame the service writes

    def _open(self) -> None:
        """The handshake is done: a member like any other, if the registry admits it."""
        cfg = self._cfg
        registry = cfg.registry
        self._pending_slot = False
        registry.pending -= 1
        self._ws_open = True
        if not registry.admit(self):
            return
        self._started = True
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._seen_at = now
        self._ping_due = now + (cfg.ping_interval or 0.0)
        periods = [p for p in (self.options.idle_timeout, cfg.ping_interval) if p]
        if periods:
            sweeper_for(loop).watch(self, self._sweep, min(periods))
        self.service.on_connect(self)

    def _handshake_timeout(self) -> None:
        self._hs_timer = None
        if self._closing or self._closed:
            return
        self._cfg.log_refusal(
            self.remote_address, f"no HTTP request within {self._cfg.handshake_timeout:g} s"
        )
        self.abort()

    # ------------------------------------------------------------------ messages

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.CONT:
            if self._closing:
                return
            if opcode is Opcode.TEXT:
                if frame.fin:
                    self._text(bytes(frame.data))
                    return
                self._message = bytearray(frame.data)
                self._fragments = 1
                return
            message = self._message
            if message is None:
                return  # the protocol refused the stray continuation already
            message += frame.data
            self._fragments += 1
            if frame.fin:
                self._message = None
                self._text(bytes(message))
            elif self._fragments > MAX_FRAGMENTS:
                self._fail(
                    CloseCode.MESSAGE_TOO_BIG, f"more than {MAX_FRAGMENTS} fragments in a message"
                )
        elif opcode is Opcode.BINARY:
            if not self._closing:
                self._fail(CloseCode.UNSUPPORTED_DATA, "binary message on a text service")
        elif opcode is Opcode.PONG:
            self._pong_wanted = False
        elif opcode is Opcode.CLOSE:
            self._closing = True
            if self.close_reason is None:
                self.close_reason = "closed by peer"

    def _text(self, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
            return
        self._traffic += 1
        service = self.service
        if "\n" not in text:
            deliver_line(service, self, text)
            return
        for line in text.split("\n"):
            if self._closing:
                return
            deliver_line(service, self, line.removesuffix("\r"))

    def _fail(self, code: CloseCode, reason: str) -> None:
        """Close for a protocol violation: one log line, a close frame with ``reason``."""
        log.info("%s: WebSocket closed: %s", self.peer, reason)
        if self.close_reason is None:
            self.close_reason = reason
        proto = self._proto
        if proto is not None and proto.state is State.OPEN:
            proto.fail(code, reason)
            self._send_pending()
        self._start_closing(self.options.close_timeout)

    def _protocol_failed(self, exc: Exception) -> None:
        """The library refused what the peer sent (and sent the close frame itself)."""
        if isinstance(exc, PayloadTooBig):
            reason = f"message too big (max {self.options.max_line} bytes)"
        elif isinstance(exc, EOFError):
            reason = "the peer went away without a close frame"
        else:
            reason = f"protocol error: {exc}"
        if self._started:
            log.info("%s: WebSocket closed: %s", self.peer, reason)
        if self.close_reason is None:
            self.close_reason = reason
        self._start_closing(self.options.close_timeout)

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> Awaitable[None]:
        """Send the lines in ``data`` as one text message (see the module docstring). Never
        blocks; dropped once closing; the awaitable completes below the low-water mark."""
        transport = self.transport
        if self._closing or transport is None or not data or not self._ws_open:
            return READY
        if transport.is_closing():
            self._closing = True
            return READY
        frame = text_frame(data)
        self.bytes_written += len(frame)
        self._traffic += 1
        transport.write(frame)
        if self._write_paused:
            limit = self.options.max_queued
            if limit is not None and not self._slow and transport.get_write_buffer_size() > limit:
                self._too_slow()
            return self._drain_waiter()
        return READY

    def send_line(self, text: str) -> Awaitable[None]:
        """Send ``text`` as one text message."""
        return self.write(text.encode() + b"\n")

    async def send(self, data: bytes | str) -> None:
        """Write and wait for the drain; raises ``ConnectionClosed`` once closed."""
        if self._closing:
            raise self._closed_error()
        await self.write(data.encode() if isinstance(data, str) else data)
        if self._closed:
            raise self._closed_error()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark."""
        if self._closed:
            raise self._closed_error()
        if self._write_paused:
            await self._drain_waiter()
        if self._closed:
            raise self._closed_error()

    def _send_pending(self) -> None:
        """Hand what the protocol has to send (handshake, pongs, close) to the transport;
        the empty chunk that means "close the TCP connection" closes it."""
        proto = self._proto
        transport = self.transport
        if proto is None or transport is None:
            return
        for chunk in proto.data_to_send():
            if chunk:
                self.bytes_written += len(chunk)
                transport.write(chunk)
            else:
                self._closing = True
                transport.close()  # after what is buffered
                return

    # ------------------------------------------------------------------ reading control

    def pause_reading(self) -> None:
        """Stop reading from the peer until :meth:`resume_reading`."""
        self._pause(2)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading` (flow control may keep reading paused)."""
        self._resume(2)

    def hand_off_reading(self) -> None:
        """Not for WebSockets (no zero-copy reader): reading just pauses."""
        self._pause(4)

    def take_back_reading(self) -> None:
        """Undo :meth:`hand_off_reading`."""
        self._resume(4)

    def _pause(self, why: int) -> None:
        if not self._paused and self.transport is not None and not self._closing:
            self.transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self._closed:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ ending

    def end(self) -> None:
        """A WebSocket has no half-close: the same as :meth:`close`."""
        self.close()

    def close(self, timeout: float | None = None, reason: str | None = None) -> None:
        """Send a close frame (after what is queued) and close once the peer answers;
        abort after ``timeout`` seconds (default ``close_timeout``). Idempotent."""
        if self._closing or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        proto = self._proto
        if proto is not None and proto.state is State.OPEN:
            code = close_code(self.close_reason, self._going_away)
            proto.send_close(code, (self.close_reason or "")[:120])
            self._send_pending()
        elif self.transport is not None:
            self.transport.close()
        self._start_closing(self.options.close_timeout if timeout is None else timeout)

    def _start_closing(self, timeout: float) -> None:
        self._closing = True
        self._message = None
        # Keep reading: the peer's close frame (or its FIN) ends it cleanly.
        self._paused = 0
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
            if self._close_timer is None:
                self._close_timer = asyncio.get_running_loop().call_later(timeout, self.abort)

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once; queued data is discarded. Idempotent."""
        if self._closed or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self._closing = True
        self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        if self._closed:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._lost)

    def notify_shutdown(self, reason: str) -> None:
        """The server is shutting down: the service's ``on_shutdown`` (the reason, then
        close with 1001), as for a TCP connection."""
        self._going_away = True
        if self._started:
            self._call(lambda conn: self.service.on_shutdown(conn, reason))
        else:
            self.abort()

    # ------------------------------------------------------------------ protections

    def _too_slow(self) -> None:
        self._slow_timer = None
        if self._slow or self._closed:
            return
        self._slow = True
        if self.close_reason is None:
            self.close_reason = "too slow"
        log.info(
            "%s: WebSocket too slow (%d bytes queued), disconnecting",
            self.peer,
            self.write_buffer_size,
        )
        self._cfg.registry.note("too slow")
        self._call(self.service.on_slow)

    def _sweep(self, now: float) -> None:
        """The sweeper's callback: the idle timeout (on messages) and the pings."""
        if self._closing:
            return
        timeout = self.options.idle_timeout
        if timeout is not None:
            if self._traffic != self._seen:
                self._seen = self._traffic
                self._seen_at = now
            elif now - self._seen_at >= timeout:
                if self.close_reason is None:
                    self.close_reason = "idle"
                self._cfg.registry.note("idle")
                self._call(self.service.on_idle)
                return
        interval = self._cfg.ping_interval
        if interval and now >= self._ping_due:
            self._ping_due = now + interval
            if self._pong_wanted:
                log.info("%s: WebSocket closed: no pong within %g s", self.peer, interval)
                self.close(reason="no pong")
                return
            proto = self._proto
            if proto is not None and proto.state is State.OPEN:
                self._pong_wanted = True
                proto.send_ping(b"tw")
                self._send_pending()

    def _unwatch(self) -> None:
        if self.options.idle_timeout or self._cfg.ping_interval:
            sweeper_for(asyncio.get_running_loop()).unwatch(self)

    # ------------------------------------------------------------------ internals

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        """Run a service callback; an exception is the service's bug: logged, aborted."""
        try:
            callback(self, *args)
        except Exception as exc:
            self._report(exc)
            self.abort()

    def _report(self, exc: Exception) -> None:
        try:
            self.service.on_error(self, exc)
        except Exception:
            log.exception("%s: error while reporting an error", self.peer)

    def _closed_error(self) -> ConnectionClosed:
        if self.close_reason is not None and self.close_reason != "closed by peer":
            return ConnectionClosedLocally(f"connection to {self.peer} is closed")
        return ConnectionLost(f"connection to {self.peer} was lost")

    def _drain_waiter(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._drainers is None:
            self._drainers = [fut]
        else:
            self._drainers.append(fut)
        return fut

    def _wake_drainers(self) -> None:
        waiters = self._drainers
        if waiters:
            self._drainers = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

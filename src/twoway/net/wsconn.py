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
- **one text message in is one line** to the service, **one write out is one text
  message**, with the **message limits** (:mod:`twoway.net.wsframe`; its
  :class:`~twoway.net.wsframe.WsReceiver` is a base class);
- **slow consumers** exactly as TCP (:mod:`twoway.net.wsflow`, a base class): above the
  write high-water mark reading pauses; past ``max_queued`` bytes or ``slow_grace`` seconds
  the service's ``on_slow`` drops the tab;
- **idle timeout** on messages and **ping/pong** (:mod:`twoway.net.wsalive`, a base class).

The base classes are one chain (``WsConnection`` → ``WsReceiver`` → ``WsKeepalive`` →
``WsFlow``), not mixins side by side: a class may have only one base with ``__slots__``, and
the slots keep an idle WebSocket small. For them (the net package's own contract, not a
service's): ``config``, ``protocol``, ``started``, the plain attributes ``is_closing`` and
``is_closed`` (read on every message, so not properties), and the methods
:meth:`~WsConnection.run_callback`, :meth:`~WsConnection.closed_error`,
:meth:`~WsConnection.give_reason`, :meth:`~WsConnection.close_received`,
:meth:`~WsConnection.send_pending` and :meth:`~WsConnection.start_closing`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from twoway.errors import ConnectionClosed, ConnectionClosedLocally, ConnectionLost
from twoway.net.address import format_address
from twoway.net.coalesce import READY
from twoway.net.groups import Group
from twoway.net.wsconfig import WsConfig
from twoway.net.wsframe import WsReceiver, close_code, text_frame
from twoway.net.wshttp import answer_request

__all__ = ["WsConnection"]

log = logging.getLogger("twoway.ws")
# The library logs "connection open/closed" at INFO for every client: the access log does.
_protocol_log = logging.getLogger("twoway.ws.protocol")
_protocol_log.setLevel(logging.WARNING)


class WsConnection(WsReceiver, asyncio.Protocol):
    """One WebSocket (or page request) socket; the service sees it as a ``Conn`` once its
    handshake is done and the registry admitted it. See the module docstring."""

    __slots__ = (
        "_close_timer",
        "_going_away",
        "_hs_timer",
        "_lost",
        "_opened_mono",
        "_pending_slot",
        "_screened",
        "_ws_open",
        "bytes_read",
        "bytes_written",
        "close_reason",
        "config",
        "group",
        "group_key",
        "is_closed",
        "is_closing",
        "options",
        "protocol",
        "remote_address",
        "service",
        "started",
        "state",
        "transport",
    )

    def __init__(self, cfg: WsConfig, *, screened: bool = False) -> None:
        super().__init__()
        #: What every connection of the gateway shares (service, registry, limits...).
        self.config = cfg
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
        #: The websockets library's sans-I/O protocol (``None`` until the socket is accepted
        #: and once it is gone).
        self.protocol: ServerProtocol | None = None
        self._opened_mono = 0.0
        #: True once :meth:`close` or :meth:`abort` was called or the peer is gone.
        self.is_closing = False
        #: True once the socket is gone.
        self.is_closed = False
        #: True once admitted: the service knows this connection (``on_connect`` ran).
        self.started = False
        self._ws_open = False  # the handshake is done: writes are text frames
        self._pending_slot = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._hs_timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.Future[None] | None = None
        self._going_away = False  # the server is shutting down: close with 1001
        #: The write group (a chat room) and the key in it: see :mod:`twoway.net.groups`.
        self.group: Group | None = None
        self.group_key = 0

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
        return "wss" if self.config.secure else "ws"

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
    def at_eof(self) -> bool:
        """True once the peer started the closing handshake (or went away)."""
        proto = self.protocol
        return self.is_closed or (proto is not None and proto.close_rcvd is not None)

    @property
    def is_ended(self) -> bool:
        """True once closing (a WebSocket has no half-close)."""
        return self.is_closing

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued for the peer and not yet accepted by the kernel."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._opened_mono = time.monotonic()
        cfg = self.config
        if self.remote_address is None:  # preset by the TLS acceptor
            self.remote_address = transport.get_extra_info("peername")
        registry = cfg.registry
        # The access rules first: a refused address costs no handshake. A full server is
        # told after the handshake (admit), so the page can show "error: server full".
        if not self._screened and not (
            registry.accepting and registry.permits(self.remote_address)
        ):
            self.is_closing = True
            transport.abort()
            return
        registry.pending += 1  # a slot of max_connections, until admitted or gone
        self._pending_slot = True
        opts = self.options
        transport.set_write_buffer_limits(high=opts.write_high, low=opts.write_low)
        self.protocol = ServerProtocol(
            max_size=opts.max_line, logger=_protocol_log, origins=None, subprotocols=None
        )
        self._hs_timer = asyncio.get_running_loop().call_later(
            cfg.handshake_timeout, self._handshake_timeout
        )

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        proto = self.protocol
        if proto is None or self.is_closed:
            return
        proto.receive_data(data)
        events = proto.events_received()
        if events:
            self.run_callback(self._handle, events)
        if proto.parser_exc is not None:
            if self.close_reason is None:
                self.protocol_failed(proto.parser_exc)
        elif proto.handshake_exc is not None and not self.is_closing:
            self.is_closing = True
            self.config.log_refusal(self.remote_address, "not an HTTP request")
        self.send_pending()

    def eof_received(self) -> bool:
        proto = self.protocol
        if proto is not None:
            proto.receive_eof()
            self.send_pending()
        self.is_closing = True
        return False  # no half-open WebSocket: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        self.is_closing = True
        for timer in (self._close_timer, self._hs_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._hs_timer = None
        self.stop_flow()
        cfg = self.config
        if self._pending_slot:
            self._pending_slot = False
            cfg.registry.pending -= 1
        if self.started:
            self.stop_watch()
            try:
                self.service.on_close(self, exc)
            except Exception as err:
                self._report(err)
            cfg.registry.forget(self, exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.protocol = None
        self.forget_message()
        self.transport = None

    # ------------------------------------------------------------------ the handshake

    def _handle(self, _conn: WsConnection, events: list[Any]) -> None:
        for event in events:
            if self.is_closing and not isinstance(event, Frame):
                return
            if isinstance(event, Frame):
                self.receive_frame(event)
            elif isinstance(event, Request):
                self._request(event)

    def _request(self, request: Request) -> None:
        proto = self.protocol
        assert proto is not None
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        response = answer_request(self.config, proto, request, self.remote_address)
        self._respond(response)
        if response.status_code == 101:
            self._open()

    def _respond(self, response: Response) -> None:
        proto = self.protocol
        assert proto is not None
        if response.status_code != 101:
            self.is_closing = True
        proto.send_response(response)
        self.send_pending()  # before any frame the service writes

    def _open(self) -> None:
        """The handshake is done: a member like any other, if the registry admits it."""
        cfg = self.config
        registry = cfg.registry
        self._pending_slot = False
        registry.pending -= 1
        self._ws_open = True
        if not registry.admit(self):
            return
        self.started = True
        self.start_watch(asyncio.get_running_loop())
        self.service.on_connect(self)

    def _handshake_timeout(self) -> None:
        self._hs_timer = None
        if self.is_closing or self.is_closed:
            return
        self.config.log_refusal(
            self.remote_address, f"no HTTP request within {self.config.handshake_timeout:g} s"
        )
        self.abort()

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes) -> Awaitable[None]:
        """Send the lines in ``data`` as one text message (see the module docstring). Never
        blocks; dropped once closing; the awaitable completes below the low-water mark."""
        transport = self.transport
        if self.is_closing or transport is None or not data or not self._ws_open:
            return READY
        if transport.is_closing():
            self.is_closing = True
            return READY
        if self.group is not None:
            group = self.group
            if group.batch is not None:
                # Lines its group queued for it before this write come first (see groups).
                data = group.take(self.group_key, b"\n") + data
        frame = text_frame(data)
        self.bytes_written += len(frame)
        self.traffic += 1
        transport.write(frame)
        if self.write_paused:
            self.check_queue(transport)
            return self.drain_waiter()
        return READY

    def send_line(self, text: str) -> Awaitable[None]:
        """Send ``text`` as one text message."""
        return self.write(text.encode() + b"\n")

    async def send(self, data: bytes | str) -> None:
        """Write and wait for the drain; raises ``ConnectionClosed`` once closed."""
        if self.is_closing:
            raise self.closed_error()
        await self.write(data.encode() if isinstance(data, str) else data)
        if self.is_closed:
            raise self.closed_error()

    def send_pending(self) -> None:
        """Hand what the protocol has to send (handshake, pongs, close) to the transport;
        the empty chunk that means "close the TCP connection" closes it."""
        proto = self.protocol
        transport = self.transport
        if proto is None or transport is None:
            return
        for chunk in proto.data_to_send():
            if chunk:
                self.bytes_written += len(chunk)
                transport.write(chunk)
            else:
                self.is_closing = True
                transport.close()  # after what is buffered
                return

    # ------------------------------------------------------------------ ending

    def end(self) -> None:
        """A WebSocket has no half-close: the same as :meth:`close`."""
        self.close()

    def close(self, timeout: float | None = None, reason: str | None = None) -> None:
        """Send a close frame (after what is queued) and close once the peer answers;
        abort after ``timeout`` seconds (default ``close_timeout``). Idempotent."""
        if self.is_closing or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        proto = self.protocol
        if proto is not None and proto.state is State.OPEN:
            code = close_code(self.close_reason, self._going_away)
            proto.send_close(code, (self.close_reason or "")[:120])
            self.send_pending()
        elif self.transport is not None:
            self.transport.close()
        self.start_closing(self.options.close_timeout if timeout is None else timeout)

    def start_closing(self, timeout: float) -> None:
        """Closing: no more lines, and abort after ``timeout`` seconds."""
        self.is_closing = True
        self.forget_message()
        # Keep reading: the peer's close frame (or its FIN) ends it cleanly.
        self.forget_pauses()
        if self.transport is not None and not self.is_closed:
            self.transport.resume_reading()
            if self._close_timer is None:
                self._close_timer = asyncio.get_running_loop().call_later(timeout, self.abort)

    def abort(self, reason: str | None = None) -> None:
        """Drop the connection at once; queued data is discarded. Idempotent."""
        if self.is_closed or self.transport is None:
            return
        if reason is not None and self.close_reason is None:
            self.close_reason = reason
        self.is_closing = True
        self.transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        if self.is_closed:
            return
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._lost)

    def notify_shutdown(self, reason: str) -> None:
        """The server is shutting down: the service's ``on_shutdown`` (the reason, then
        close with 1001), as for a TCP connection."""
        self._going_away = True
        if self.started:
            self.run_callback(lambda conn: self.service.on_shutdown(conn, reason))
        else:
            self.abort()

    # ------------------------------------------------------------------ internals

    def run_callback(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(self, *args)``, a service callback (or this connection's own
        handler of the protocol's events): an exception is the service's bug: handed to
        its ``on_error``, then the connection is aborted."""
        try:
            callback(self, *args)
        except Exception as exc:
            self._report(exc)
            self.abort()

    def give_reason(self, reason: str) -> None:
        """Record why the connection closes, unless a reason was given first."""
        if self.close_reason is None:
            self.close_reason = reason

    def close_received(self) -> None:
        """The peer's close frame arrived (the library answers it): no more lines, and
        writes are dropped."""
        self.is_closing = True
        self.give_reason("closed by peer")

    def _report(self, exc: Exception) -> None:
        try:
            self.service.on_error(self, exc)
        except Exception:
            log.exception("%s: error while reporting an error", self.peer)

    def closed_error(self) -> ConnectionClosed:
        """The error for an operation on a closed connection: :class:`ConnectionClosedLocally`
        when this side closed it, :class:`ConnectionLost` when the peer closed it or went
        away."""
        if self.close_reason is not None and self.close_reason != "closed by peer":
            return ConnectionClosedLocally(f"connection to {self.peer} is closed")
        return ConnectionLost(f"connection to {self.peer} was lost")

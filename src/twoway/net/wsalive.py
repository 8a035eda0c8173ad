"""Keep-alive of a WebSocket connection: the idle timeout and the pings.

The idle timeout counts messages (:attr:`WsKeepalive.traffic`, in and out), not bytes: pings
and pongs are not traffic. A ping goes out every ``ping_interval`` seconds, and a peer that
has not answered the last ping by the next one is closed (a tab whose laptop went to
sleep). Both are checked by the loop's one :class:`~twoway.net.idle.Sweeper`, not a timer
per connection.

:class:`WsKeepalive` is a base class of :class:`~twoway.net.wsconn.WsConnection` (through
:class:`~twoway.net.wsframe.WsReceiver`), not an object of its own, so a connection costs no
extra allocation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.protocol import State

from twoway.net.idle import sweeper_for
from twoway.net.wsflow import WsFlow

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

__all__ = ["WsKeepalive"]

log = logging.getLogger("twoway.ws")


class WsKeepalive(WsFlow):
    """The idle timeout (on messages) and the ping/pong check of a WebSocket connection."""

    __slots__ = ("_ping_due", "_pong_wanted", "_seen", "_seen_at", "traffic")

    # Provided by the connection (besides what WsFlow lists).
    protocol: ServerProtocol | None

    def __init__(self) -> None:
        super().__init__()
        #: Messages in and out: what the idle timeout watches (the connection counts them).
        self.traffic = 0
        self._seen = 0
        self._seen_at = 0.0
        self._ping_due = 0.0
        self._pong_wanted = False

    if TYPE_CHECKING:  # what the connection provides

        def close(self, timeout: float | None = None, reason: str | None = None) -> None: ...

        def send_pending(self) -> None: ...

    def start_watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The WebSocket is open and admitted: start the clocks and have the loop's sweeper
        check them (if there is an idle timeout or a ping period)."""
        cfg = self.config
        now = loop.time()
        self._seen_at = now
        self._ping_due = now + (cfg.ping_interval or 0.0)
        periods = [p for p in (self.options.idle_timeout, cfg.ping_interval) if p]
        if periods:
            sweeper_for(loop).watch(self, self._sweep, min(periods))

    def stop_watch(self) -> None:
        """The connection is gone: the sweeper forgets it."""
        if self.options.idle_timeout or self.config.ping_interval:
            sweeper_for(asyncio.get_running_loop()).unwatch(self)

    def pong_received(self) -> None:
        """The peer answered the last ping."""
        self._pong_wanted = False

    def _sweep(self, now: float) -> None:
        """The sweeper's callback: the idle timeout (on messages) and the pings."""
        if self.is_closing:
            return
        timeout = self.options.idle_timeout
        if timeout is not None:
            if self.traffic != self._seen:
                self._seen = self.traffic
                self._seen_at = now
            elif now - self._seen_at >= timeout:
                self.give_reason("idle")
                self.config.registry.note("idle")
                self.run_callback(self.service.on_idle)
                return
        interval = self.config.ping_interval
        if interval and now >= self._ping_due:
            self._ping_due = now + interval
            if self._pong_wanted:
                log.info("%s: WebSocket closed: no pong within %g s", self.peer, interval)
                self.close(reason="no pong")
                return
            proto = self.protocol
            if proto is not None and proto.state is State.OPEN:
                self._pong_wanted = True
                proto.send_ping(b"tw")
                self.send_pending()

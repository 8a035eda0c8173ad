"""``twoway serve chat``: the I/O side of the chat server.

All chat logic lives in :class:`twoway.sansio.chat.ChatCore`; this module only maps
connections to client ids, applies the effects the core returns, enforces flood control and
turns transport events (closed, idle, too slow) into departures.

Fan-out never waits for the slowest peer: a room line is encoded once and handed to every
member's transport without awaiting; writes made while a read is being handled are coalesced
per peer by the net layer. A peer whose queue passes ``max_queued`` (or stays above a quarter
of it for ``slow_grace`` seconds) gets ``error: too slow, disconnecting`` and is dropped; the
room reads ``* nick left #room (too slow)``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twoway.config import Settings
from twoway.errors import ConfigError, describe_oserror
from twoway.net.handlers import LineService
from twoway.sansio.chat import ChatCore, Close, Effect, Log, Send, ToRoom
from twoway.sansio.flood import FloodControl, Verdict

if TYPE_CHECKING:
    from twoway.net.connection import Connection
    from twoway.net.server import Server

__all__ = ["ChatService", "ChatStats", "build_chat", "chat_connection_options"]

log = logging.getLogger("twoway.chat")


@dataclass(slots=True)
class ChatStats:
    """I/O-side counters (the core keeps its own in ``core.counters``)."""

    lines_out: int = 0
    flood_drops: int = 0
    flood_kicks: int = 0


class _Client:
    __slots__ = ("cid", "flood")

    def __init__(self, cid: int, flood: FloodControl | None) -> None:
        self.cid = cid
        self.flood = flood


class ChatService(LineService):
    """A line chat: nicks, rooms, history, private messages, flood control."""

    name = "chat"
    quit_command = False  # the core handles ``quit`` (it announces the departure)
    telnet = True

    def __init__(
        self,
        core: ChatCore | None = None,
        *,
        flood_rate: float = 5.0,
        flood_burst: int = 10,
    ) -> None:
        self.core = core if core is not None else ChatCore()
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        self.stats = ChatStats()
        self.server: Server | None = None
        self._conns: dict[int, Connection] = {}
        self._next_cid = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_listening(self, server: Server) -> None:
        self.server = server

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    # ------------------------------------------------------------------ callbacks

    def on_connect(self, conn: Connection) -> None:
        self._next_cid += 1
        cid = self._next_cid
        flood = FloodControl(self.flood_rate, self.flood_burst) if self.flood_rate > 0 else None
        conn.state = _Client(cid, flood)
        self._conns[cid] = conn
        self.apply(self.core.connect(cid, self._now(), conn.peer))

    def on_line(self, conn: Connection, line: str) -> None:
        client: _Client = conn.state
        flood = client.flood
        now = self._now()
        if flood is not None:
            verdict = flood.check(now)
            if verdict is not Verdict.OK:
                if verdict is Verdict.DROP:
                    self.stats.flood_drops += 1
                    conn.send_line("error: slow down")
                else:
                    self.stats.flood_kicks += 1
                    self._kick(conn, "error: flooding, disconnecting", "flooding")
                return
        self.apply(self.core.line(client.cid, line, now))

    def on_idle(self, conn: Connection) -> None:
        notice = f"error: idle for {conn.options.idle_timeout:g} s, disconnecting"
        self._kick(conn, notice, "idle")

    def on_slow(self, conn: Connection) -> None:
        # Called while the net layer flushes a fan-out: the departure is announced from the
        # next loop iteration, so the notice cannot overtake lines still being flushed to
        # the other members.
        self._kick(conn, "error: too slow, disconnecting", "too slow", timeout=1.0, later=True)

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        client: _Client | None = conn.state
        if client is None or self._conns.pop(client.cid, None) is None:
            return
        if conn.close_reason is not None:
            reason = conn.close_reason
        elif exc is not None:
            reason = describe_oserror(exc)
        else:
            reason = "closed"
        self.apply(self.core.disconnect(client.cid, reason))

    def _kick(
        self,
        conn: Connection,
        notice: str,
        reason: str,
        *,
        timeout: float | None = None,
        later: bool = False,
    ) -> None:
        """Disconnect ``conn`` for ``reason`` after one last ``notice`` line.

        The room is told and the client forgotten now, when the server decides, not when
        the TCP close completes: that can take up to ``close_timeout`` with a peer that does
        not read or does not close, and until then the departed client would still be in
        ``/who``, ``/peers`` and hold its nick.
        """
        conn.send_line(notice)
        conn.close(timeout=timeout, reason=reason)
        client: _Client | None = conn.state
        if client is None or self._conns.pop(client.cid, None) is None:
            return
        if later:
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._depart, client.cid, reason)
        else:
            self._depart(client.cid, reason)

    def _depart(self, cid: int, reason: str) -> None:
        self.apply(self.core.disconnect(cid, reason))

    # ------------------------------------------------------------------ effects

    def apply(self, effects: list[Effect]) -> None:
        """Carry out the core's effects, in order."""
        conns = self._conns
        for effect in effects:
            kind = type(effect)
            if kind is ToRoom:
                assert isinstance(effect, ToRoom)
                self._to_room(effect)
            elif kind is Send:
                assert isinstance(effect, Send)
                conn = conns.get(effect.cid)
                if conn is not None:
                    conn.send_line(effect.text)
                    self.stats.lines_out += 1
            elif kind is Close:
                assert isinstance(effect, Close)
                conn = conns.pop(effect.cid, None)
                if conn is not None:
                    conn.close(reason=effect.reason)
            elif kind is Log:
                assert isinstance(effect, Log)
                log.info("%s", effect.message)

    def _to_room(self, effect: ToRoom) -> None:
        members = self.core.members(effect.room)
        if not members:
            return
        body = effect.text.encode()
        lf = body + b"\n"
        crlf: bytes | None = None
        exclude = effect.exclude
        conns = self._conns
        sent = 0
        for cid in members:
            if cid == exclude:
                continue
            conn = conns.get(cid)
            if conn is None:
                continue
            if conn._newline == b"\n":
                conn.write(lf)
            else:
                if crlf is None:
                    crlf = body + b"\r\n"
                conn.write(crlf)
            sent += 1
        self.stats.lines_out += sent


def chat_connection_options(settings: Settings) -> dict[str, Any]:
    """Connection options for chat: the slow-consumer limits."""
    max_queued = settings.max_queued
    overrides: dict[str, Any] = {"max_queued": max_queued, "slow_grace": settings.slow_grace}
    if max_queued is not None:
        # The soft limit: a client may hold up to a quarter of its queue for slow_grace
        # seconds (a burst it will catch up on); reading from it pauses meanwhile.
        high = max(4096, max_queued // 4)
        overrides["write_high"] = high
        overrides["write_low"] = high // 4
    return overrides


def build_chat(settings: Settings) -> ChatService:
    """A :class:`ChatService` configured from ``settings``; bad values raise ConfigError."""
    motd: str | None = None
    if settings.motd:
        try:
            motd = Path(settings.motd).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"motd: {settings.motd}: {describe_oserror(exc)}") from None
    core = ChatCore(history=settings.history, motd=motd)
    return ChatService(core, flood_rate=settings.flood_rate, flood_burst=settings.flood_burst)

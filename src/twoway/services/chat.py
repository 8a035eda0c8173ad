"""``twoway serve chat``: the I/O side of the chat server.

All chat logic lives in :class:`twoway.sansio.chat.ChatCore`; this module only maps
connections to client ids, applies the effects the core returns, enforces flood control and
turns transport events (closed, idle, too slow) into departures.

Fan-out never waits for the slowest peer. A room's lines of one loop iteration are gathered
in a :class:`~twoway.sansio.chat.batch.RoomBatch` and each member gets one write with its
share, without awaiting; joins and departures inside the batch keep each client's lines exact
(no flush per join), and lines of joins and departures alone wait a few milliseconds more to
be gathered (uvloop admits one connection per iteration). A member already lost gets nothing.
A peer whose queue passes ``max_queued`` (or stays above a quarter of it for ``slow_grace``
seconds) gets ``error: too slow, disconnecting`` and is dropped; the room reads ``*** nick
left #room (too slow)``.

With a bus (``--bus redis://...``, see :mod:`twoway.bus`) the chat spans several servers.
Client ids are then ``node << 32 | n``, unique across servers. What the core returns for the
other servers (:class:`~twoway.sansio.chat.Presence`, ``Gone``, ``Said``, ``TopicSet``, and a
``Send`` to a client of another server) is published; what the other servers published comes
back through :meth:`ChatService.bus_events` into the core's directory. Local delivery never
waits for the bus.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from twoway.bus import Backfill, Bus, BusEvent, LocalBus, Missed, NodeLost, Overflow, make_bus
from twoway.config import Settings
from twoway.errors import ConfigError, describe_oserror
from twoway.net.service import LineService, Service
from twoway.sansio.bus import Hello, Lost, Moderated, Received, RecordSet, RoomGap
from twoway.sansio.chat import (
    ChatCore,
    Close,
    Effect,
    Gone,
    Log,
    Presence,
    Said,
    Send,
    TopicSet,
    ToRoom,
    is_command,
)
from twoway.sansio.chat.batch import RoomBatch
from twoway.sansio.chat.sequence import MAX_REPLAY
from twoway.sansio.flood import DEFAULT_PASTE_LINES, FloodControl, Verdict
from twoway.sansio.text import escape_controls
from twoway.store import MemoryRecords, Records

if TYPE_CHECKING:
    from twoway.net.conn import Conn, Listening
    from twoway.sansio.buckets import Buckets
    from twoway.store.sqlite import SqliteStore

__all__ = ["ChatService", "ChatStats", "Moderator", "build_chat", "read_motd", "reconfigure_chat"]

log = logging.getLogger("twoway.chat")


@dataclass(slots=True)
class ChatStats:
    """I/O-side counters (the core keeps its own in ``core.counters``)."""

    lines_out: int = 0
    flood_drops: int = 0
    flood_kicks: int = 0
    #: Notices sent to members that messages from other servers may have been missed.
    gap_notices: int = 0
    flood_slowed: int = 0


class Moderator(Protocol):
    """What the chat asks its moderation (:mod:`twoway.services.chatmod`), if it has one."""

    #: Client ids whose plain lines moderation must see (muted, or not past /pass yet).
    watched: set[int]

    def admit(self, conn: Conn, cid: int) -> bool:
        """A client connected: False if moderation took it (refused, or waiting for
        ``/pass``); True to let it into the chat now."""

    def joined(self, conn: Conn, cid: int) -> None:
        """The client is in the chat (after :meth:`ChatCore.connect`)."""

    def line(self, conn: Conn, cid: int, line: str, now: float) -> bool:
        """A command, or a line of a watched client: True if moderation handled it."""

    def left(self, cid: int) -> None:
        """The client is gone."""

    def bus_item(self, item: Moderated | RecordSet) -> None:
        """A moderation item another server published."""

    def is_operator(self, cid: int) -> bool:
        """Whether ``cid`` is an operator."""


class _Client:
    __slots__ = ("cid", "flood", "paused", "read_mark")

    def __init__(self, cid: int, flood: FloodControl | None) -> None:
        self.cid = cid
        self.flood = flood
        # bytes_read when the last line was seen: lines that see the same value arrived in
        # one read (a paste, for flood control).
        self.read_mark = -1
        self.paused = False  # reading paused by flood control (fakelag)


# Client ids: the low 32 bits count this server's connections, the bits above are its node.
_LOCAL_IDS = (1 << 32) - 1
# Characters of room lines gathered before they are flushed early: a bound on the memory one
# loop iteration can queue (uvloop may read many times per iteration).
_BATCH_LIMIT = 64 * 1024
# Guest numbers reserved across servers at a time (with a bus): the next block is asked for
# when fewer than half are left, so a burst of connections rarely waits for one.
_GUEST_BLOCK = 128
# Joins and departures alone are delivered after a short delay rather than at the end of the
# loop iteration: uvloop admits one connection per iteration, so a burst of N joins flushed
# per iteration would write N times to every member. The delay is three times what the last
# delivery took (so delivering presence costs at most a quarter of the loop), within these
# bounds in seconds; a room line flushes at once, with the presence lines queued before it.
_PRESENCE_DELAY_MIN = 0.005
_PRESENCE_DELAY_MAX = 0.25
# Lines each room keeps in memory for /since, /history and resumes: one request's worth.
_TAIL = MAX_REPLAY
# How often departed sessions past the resume window are forgotten (their nicks freed).
_EXPIRE_EVERY = 1.0


class ChatService(LineService):
    """A line chat: nicks, rooms, history, private messages, flood control.

    ``bus`` joins it to other servers (default: a :class:`~twoway.bus.LocalBus`, alone); the
    core must then have been created with ``cluster=True``. The bus is started by
    :meth:`on_start` and stopped by :meth:`on_stopped`.
    """

    name = "chat"
    quit_command = False  # the core handles ``quit`` (it announces the departure)
    telnet = True

    def __init__(
        self,
        core: ChatCore | None = None,
        *,
        flood_rate: float = 5.0,
        flood_burst: int = 10,
        bus: Bus | None = None,
        paste_lines: int = DEFAULT_PASTE_LINES,
        mod: Moderator | None = None,
        store: SqliteStore | None = None,
        records: Records | None = None,
        describe_store: str = "",
    ) -> None:
        self.bus: Bus = bus if bus is not None else LocalBus()
        #: The durable store the core journals to (None: memory only); started by
        #: :meth:`on_start`, closed by :meth:`on_stopped`.
        self.store = store
        #: Keyed records (accounts, bans...) in the same store, or in memory.
        self.records: Records = records if records is not None else MemoryRecords()
        #: Which store is in use, for the ready line (``history in /path/chat.db``).
        self.ready_note = describe_store
        self._expiry: asyncio.TimerHandle | None = None
        if core is None:
            core = ChatCore(cluster=self.bus.cluster)
        elif self.bus.cluster and not core.cluster:
            raise ValueError("a chat with a bus needs a core created with cluster=True")
        self.core = core
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        self.paste_lines = paste_lines
        #: Moderation (identity, operators, bans, mutes), if any: see Moderator.
        self.mod = mod
        self.stats = ChatStats()
        #: ``/stats``: when set (by the process), the lines it answers with (or an awaitable
        #: of them: with ``--workers`` the figures come from every worker), for operators
        #: and, with ``stats_public`` (``--stats-public``), for everyone; when None,
        #: ``/stats`` is an unknown command like any other.
        self.stats_lines: Callable[[], list[str] | Awaitable[list[str]]] | None = None
        self._stats_asked: set[asyncio.Task[None]] = set()
        self.stats_public = False
        self.server: Listening | None = None
        self._conns: dict[int, Conn] = {}
        self._next_cid = 0
        self._node_bits = 0  # this server's node number, shifted into place in client ids
        self._loop: asyncio.AbstractEventLoop | None = None
        # Room lines of the current loop iteration, by room (see RoomBatch).
        self._batch: dict[str, RoomBatch] = {}
        self._batch_size = 0
        self._flush_scheduled = False
        self._presence_timer: asyncio.TimerHandle | None = None
        self._presence_delay = _PRESENCE_DELAY_MIN
        self._presence = False  # True while the effects of a join or a departure are applied
        # Guest numbers across servers: the reservation in flight, the connections waiting.
        self._reserving: asyncio.Task[None] | None = None
        self._awaiting_guest: list[Conn] = []
        self._unreserved = False  # welcoming them although no block could be reserved
        # What to do with each kind of effect, and with each kind of bus event and item.
        publish = self._publish
        self._effect_handlers: dict[type[Any], Callable[[Any], None]] = {
            ToRoom: self._to_room,
            Send: self._send,
            Close: self._close,
            Log: self._log,
            Said: publish,
            Presence: publish,
            Gone: publish,
            TopicSet: publish,
        }
        self._event_handlers: dict[type[Any], Callable[[Any], list[Effect]]] = {
            Received: self._received,
            RoomGap: self._room_gap,
            Missed: self._missed,
            NodeLost: self._node_lost,
            Overflow: self._overflow,
            Backfill: self._backfill,
        }
        self._item_handlers: dict[type[Any], Callable[[int, Any], list[Effect]]] = {
            Said: self._said,
            Presence: self._presence_of,
            Gone: self._gone,
            Send: self._private,
            TopicSet: self._topic_set,
            Hello: self._hello,
            Lost: self._lost,
            Moderated: self._moderated,
            RecordSet: self._moderated,
        }

    async def on_start(self, server: Listening) -> None:
        """Start the bus (it fixes the node number client ids embed)."""
        self._loop = asyncio.get_running_loop()
        await self.bus.start(self)
        self._node_bits = self.bus.node << 32
        if self.store is not None:
            self.store.on_failure = _store_failed
            self.store.start()
        self._expiry = self._loop.call_later(_EXPIRE_EVERY, self._expire)
        if self.bus.cluster:
            await self._reserve_guests()  # the first clients need not wait for a block

    def _expire(self) -> None:
        self.core.expire(self._now())
        loop = self._loop or asyncio.get_running_loop()
        self._expiry = loop.call_later(_EXPIRE_EVERY, self._expire)

    def on_listening(self, server: Listening) -> None:
        self.server = server

    async def on_stopped(self) -> None:
        """Every client is gone (their departures are queued for the bus): flush and stop it."""
        if self._reserving is not None:
            self._reserving.cancel()
        self.flush_rooms()
        if self._expiry is not None:
            self._expiry.cancel()
        await self.bus.stop()
        if self.store is not None:
            # What was said is written before the process ends (a SIGTERM loses nothing).
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
            log.info("history store: %s", self.store.describe_writes())
        if self.records is not self.store:  # records of their own (in Redis, with a bus)
            await asyncio.get_running_loop().run_in_executor(None, self.records.close)

    def _now(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    # ------------------------------------------------------------------ callbacks

    def on_connect(self, conn: Conn) -> None:
        if self.bus.cluster and not self._guest_at_hand(conn):
            return  # welcomed once a block of guest numbers is reserved
        self._next_cid += 1
        cid = self._node_bits | (self._next_cid & _LOCAL_IDS)
        flood = None
        if self.flood_rate > 0:
            # Slowing (fakelag) for up to a burst's worth of messages before dropping any.
            flood = FloodControl(
                self.flood_rate,
                self.flood_burst,
                paste_lines=self.paste_lines,
                lag=self.flood_burst,
            )
        conn.state = _Client(cid, flood)
        self._conns[cid] = conn
        mod = self.mod
        if mod is not None and not mod.admit(conn, cid):
            return  # refused (closed), or waiting for /pass: not in the chat (yet)
        self.enter_chat(conn, cid)

    def enter_chat(self, conn: Conn, cid: int) -> None:
        """Put the connected client ``cid`` into the chat (the lobby): at once, or after
        moderation admitted it (``/pass``)."""
        effects = self.core.connect(cid, self._now(), conn.peer)
        if self._batch:
            self._moved(cid, None, None, self.core.lobby)
        self._apply_presence(effects)
        if self.mod is not None:
            self.mod.joined(conn, cid)

    # ------------------------------------------------------------------ guest numbers

    def _guest_at_hand(self, conn: Conn) -> bool:
        """With a bus: whether a guest number reserved for this server is at hand for
        ``conn`` (asking early for the next block). If not, ``conn`` waits, unread and not
        yet welcomed, for the block being reserved: its first lines must be true."""
        if self._unreserved:
            return True
        left = self.core.guests_at_hand
        if left < _GUEST_BLOCK // 2 and self._reserving is None:
            loop = self._loop or asyncio.get_running_loop()
            self._reserving = loop.create_task(self._reserve_then_welcome())
        if left > 0:
            return True
        conn.pause_reading()
        self._awaiting_guest.append(conn)
        return False

    async def _reserve_guests(self) -> bool:
        """Reserve a block of guest numbers across servers; False if the bus could not."""
        first = await self.bus.reserve("guests", _GUEST_BLOCK)
        if first is None:
            return False
        self.core.lease_guests(first, _GUEST_BLOCK)
        return True

    async def _reserve_then_welcome(self) -> None:
        """Reserve a block, then welcome the connections that waited for it. If the bus could
        not reserve (it is down), they are welcomed with numbers of this server's count."""
        try:
            reserved = await self._reserve_guests()
        finally:
            self._reserving = None
        waiting, self._awaiting_guest = self._awaiting_guest, []
        for conn in waiting:
            if _gone(conn):
                continue
            conn.resume_reading()
            self._unreserved = not reserved
            try:
                self.on_connect(conn)  # may wait again, for the next block
            finally:
                self._unreserved = False

    def on_line(self, conn: Conn, line: str) -> None:
        client: _Client = conn.state
        flood = client.flood
        now = self._now()
        if flood is not None:
            mark = conn.bytes_read
            same_read = mark == client.read_mark
            client.read_mark = mark
            verdict = flood.check(now, same_read)
            if verdict is Verdict.SLOW:
                self._slow_down(conn, client, flood.delay)
            elif verdict is not Verdict.OK:
                if verdict is Verdict.DROP:
                    self.stats.flood_drops += 1
                    if flood.fresh:  # once per message (a paste is dropped whole)
                        if self._batch:
                            self._catch_up(client.cid, conn)
                        conn.send_line("error: slow down (lines dropped)")
                else:
                    self.stats.flood_kicks += 1
                    self._kick(conn, "error: flooding, disconnecting", "flooding")
                return
        if self.stats_lines is not None and line.strip().lower() == "/stats":
            if self._batch:
                self._catch_up(client.cid, conn)
            mod = self.mod
            if self.stats_public or (mod is not None and mod.is_operator(client.cid)):
                self._send_stats(conn, self.stats_lines())
            else:
                conn.send_line("error: not permitted")
            return
        mod = self.mod
        if (
            mod is not None
            and (line[:1] == "/" or client.cid in mod.watched)
            and mod.line(conn, client.cid, line, now)
        ):
            return
        self.core_line(conn, line, now)

    def core_line(self, conn: Conn, line: str, now: float) -> None:
        """Hand ``line`` of ``conn``'s client to the chat core and carry out the effects."""
        client: _Client = conn.state
        core = self.core
        if self._batch and is_command(line):
            # A command may take the client out of its room: it first gets what was queued
            # for it there, and nothing queued in the room it enters.
            cid = client.cid
            old = core.room_of(cid)
            effects = core.line(cid, line, now)
            new = core.room_of(cid)
            if new != old:
                self._moved(cid, conn, old, new)
            self.apply(effects)
            return
        self.apply(core.line(client.cid, line, now))

    def _slow_down(self, conn: Conn, client: _Client, delay: float) -> None:
        """Fakelag: stop reading from ``conn`` for ``delay`` seconds (its kernel buffer, then
        its sender, wait meanwhile); the line itself is delivered."""
        self.stats.flood_slowed += 1
        if client.paused:
            return
        client.paused = True
        conn.pause_reading()
        loop = self._loop or asyncio.get_running_loop()
        loop.call_later(delay, self._resume, conn, client)

    def _resume(self, conn: Conn, client: _Client) -> None:
        client.paused = False
        if not conn.is_closing:
            conn.resume_reading()

    def is_operator(self, cid: int) -> bool:
        """Whether the client ``cid`` is an operator (``/oper``): for ``/stats`` and such."""
        return self.mod is not None and self.mod.is_operator(cid)

    def conn_of(self, cid: int) -> Conn | None:
        """The connection of the local client ``cid``, or None."""
        return self._conns.get(cid)

    def kick(self, cid: int, notice: str, reason: str) -> bool:
        """Disconnect the local client ``cid`` after one last ``notice`` line; its room reads
        ``*** nick left #room (reason)``. False if there is no such client."""
        conn = self._conns.get(cid)
        if conn is None:
            return False
        self._kick(conn, notice, reason)
        return True

    def local_cids(self) -> list[int]:
        """The ids of the clients connected to this server (in the chat or not yet)."""
        return list(self._conns)

    def on_idle(self, conn: Conn) -> None:
        notice = f"error: idle for {conn.options.idle_timeout:g} s, disconnecting"
        self._kick(conn, notice, "idle")

    def on_slow(self, conn: Conn) -> None:
        # Called while the net layer flushes a fan-out: the departure is announced from the
        # next loop iteration, so the notice cannot overtake lines still being flushed to
        # the other members.
        self._kick(conn, "error: too slow, disconnecting", "too slow", timeout=1.0, later=True)

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        client: _Client | None = conn.state
        if client is None or self._conns.pop(client.cid, None) is None:
            return
        if conn.close_reason is not None:
            reason = conn.close_reason
        elif exc is not None:
            reason = describe_oserror(exc)
        else:
            reason = "closed"
        # The connection is gone: nothing queued for it can be delivered, so no catch-up.
        if self.mod is not None:
            self.mod.left(client.cid)
        self._apply_presence(self.core.disconnect(client.cid, reason, self._now()))

    def _kick(
        self,
        conn: Conn,
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
        if self._batch and conn.state is not None:
            self._catch_up(conn.state.cid, conn)  # what was queued for it comes first
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
        # The client had its lines before its last notice (see _kick): none since.
        if self.mod is not None:
            self.mod.left(cid)
        self._apply_presence(self.core.disconnect(cid, reason))

    # ------------------------------------------------------------------ effects

    def apply(self, effects: list[Effect]) -> None:
        """Carry out the core's effects, in order."""
        handlers = self._effect_handlers
        for effect in effects:
            handlers[type(effect)](effect)

    def _send(self, effect: Send) -> None:
        conn = self._conns.get(effect.cid)
        if conn is not None:
            if self._batch:
                self._catch_up(effect.cid, conn)  # its room lines queued before
            conn.send_line(effect.text)
            self.stats.lines_out += 1
        elif self.core.is_remote(effect.cid):
            self.bus.publish(effect)  # a /msg to a client of another server

    def _close(self, effect: Close) -> None:
        conn = self._conns.pop(effect.cid, None)
        if conn is not None:
            if self.mod is not None:
                self.mod.left(effect.cid)
            conn.close(reason=effect.reason)

    def _log(self, effect: Log) -> None:
        log.info("%s", effect.message)

    def _publish(self, effect: Said | Presence | Gone | TopicSet) -> None:
        self.bus.publish(effect)  # only the other servers need these

    def _apply_presence(self, effects: list[Effect]) -> None:
        """:meth:`apply` for a join or a departure: its room lines may wait a little (see
        ``_PRESENCE_DELAY_MIN``)."""
        self._presence = True
        try:
            self.apply(effects)
        finally:
            self._presence = False

    def _to_room(self, effect: ToRoom) -> None:
        """Queue a room line: every room's lines of this loop iteration go out together, one
        write per member, at the end of the iteration (joins and departures alone a little
        later; see :meth:`flush_rooms`)."""
        batch = self._batch.get(effect.room)
        if batch is None:
            batch = self._batch[effect.room] = RoomBatch()
        if not self._flush_scheduled:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            if not self._presence:
                self._flush_scheduled = True
                loop.call_soon(self.flush_rooms)
            elif self._presence_timer is None:
                self._presence_timer = loop.call_later(self._presence_delay, self.flush_rooms)
        batch.add(effect.text, effect.exclude)
        self._batch_size += len(effect.text)
        if self._batch_size > _BATCH_LIMIT:
            self.flush_rooms()  # uvloop may read a lot in one iteration: bound the batch

    def _catch_up(self, cid: int, conn: Conn, room: str | None = None) -> None:
        """Write ``cid`` the lines queued for it in ``room`` (default: its room) that it has
        not had: called before anything is written to it directly, or before it leaves the
        room, so its lines keep their order without flushing the room to everybody."""
        batch = self._batch.get(room or self.core.room_of(cid) or "")
        if batch is None:
            return
        data, count = batch.take(cid, conn.newline)
        if count and not _gone(conn):
            conn.write(data)
            self.stats.lines_out += count

    def _moved(self, cid: int, conn: Conn | None, old: str | None, new: str | None) -> None:
        """``cid`` left room ``old`` (if not None) for ``new`` (if not None) while lines were
        queued: it takes what it had in ``old`` and nothing of what ``new`` has so far."""
        if old is not None and conn is not None:
            self._catch_up(cid, conn, old)
        if new is not None:
            batch = self._batch.get(new)
            if batch is not None:
                batch.joined(cid)

    def flush_rooms(self) -> None:
        """Deliver the queued room lines: at the end of each loop iteration, or earlier when
        the batch is big. Each member gets one write with what it has not had (see
        :class:`~twoway.sansio.chat.batch.RoomBatch`); a member whose connection is already
        lost or closing gets nothing."""
        self._flush_scheduled = False
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        batches = self._batch
        if not batches:
            return
        self._batch = {}
        self._batch_size = 0
        conns = self._conns
        core = self.core
        sent = 0
        loop = self._loop
        started = loop.time() if loop is not None else 0.0
        for room, batch in batches.items():
            members = core.members(room)
            if not members:
                continue
            full, special = batch.plain()
            lines = len(batch)
            for cid in members:
                conn = conns.get(cid)
                if conn is None:
                    continue
                transport = conn.transport
                if transport is None or transport.is_closing():
                    # Lost (reset, say) but not yet told: a write would only fail, and on
                    # asyncio log a warning. A burst of resets would make that n squared.
                    continue
                newline = conn.newline
                if newline == b"\n" and cid not in special:
                    conn.write(full)  # the common case: the whole batch, one shared object
                    sent += lines
                    continue
                data, count = batch.share(cid, newline)
                if count:
                    conn.write(data)
                    sent += count
        self.stats.lines_out += sent
        if loop is not None:
            took = 3 * (loop.time() - started)
            self._presence_delay = min(max(took, _PRESENCE_DELAY_MIN), _PRESENCE_DELAY_MAX)

    # ------------------------------------------------------------------ the bus

    def bus_events(self, events: Sequence[BusEvent]) -> None:
        """What other servers published (see :class:`~twoway.bus.BusListener`): into the
        core's directory, then out to the local clients, in order (room lines join the
        room batches, behind what local clients said before)."""
        handlers = self._event_handlers
        out: list[Effect] = []
        for event in events:
            out += handlers[type(event)](event)
        if out:
            self.apply(out)

    def _received(self, event: Received) -> list[Effect]:
        return self._item_handlers[type(event.item)](event.node, event.item)

    def _room_gap(self, event: RoomGap) -> list[Effect]:
        self.stats.gap_notices += 1
        return self.core.notice(_missed_notice(event.missed), event.room)

    def _missed(self, event: Missed) -> list[Effect]:
        self.stats.gap_notices += 1
        n = f"{event.count} " if event.count is not None else ""
        return self.core.notice(f"*** notice: {n}messages from other servers may have been missed")

    def _node_lost(self, event: NodeLost) -> list[Effect]:
        return self.core.drop_node(event.node, event.reason)

    def _overflow(self, event: Overflow) -> list[Effect]:
        return self.core.notice(
            f"*** notice: {event.count} messages could not be sent to other servers"
        )

    def _backfill(self, event: Backfill) -> list[Effect]:
        self.core.backfill(event.lines)
        return []

    def _said(self, node: int, item: Said) -> list[Effect]:
        return self.core.remote_message(item.room, item.text)

    def _presence_of(self, node: int, item: Presence) -> list[Effect]:
        return self.core.remote_presence(item.cid, item.nick, item.room, node)

    def _gone(self, node: int, item: Gone) -> list[Effect]:
        return self.core.remote_gone(item.cid, item.reason)

    def _private(self, node: int, item: Send) -> list[Effect]:
        if item.cid in self._conns:  # (never back to the bus: it was meant for us)
            return [Send(item.cid, escape_controls(item.text))]
        return []

    def _topic_set(self, node: int, item: TopicSet) -> list[Effect]:
        return self.core.remote_topic(item.room, item.topic, item.nick)

    def _moderated(self, node: int, item: Moderated | RecordSet) -> list[Effect]:
        if self.mod is not None:
            self.mod.bus_item(item)
        return []

    def _hello(self, node: int, item: Hello) -> list[Effect]:
        return self.core.remote_snapshot(node, item.members, item.topics)

    def _lost(self, node: int, item: Lost) -> list[Effect]:
        out: list[Effect] = []
        for room, count in item.rooms:
            out += self.core.notice(_missed_notice(count), room)
        return out

    def _send_stats(self, conn: Conn, answer: list[str] | Awaitable[list[str]]) -> None:
        """Send ``/stats``'s lines, now or once they are known."""
        if isinstance(answer, list):
            for text in answer:
                conn.send_line(text)
            return

        async def later(pending: Awaitable[list[str]]) -> None:
            lines = await pending
            if not _gone(conn):
                for text in lines:
                    conn.send_line(text)

        task = asyncio.get_running_loop().create_task(later(answer))
        self._stats_asked.add(task)
        task.add_done_callback(self._stats_asked.discard)

    def histograms(self) -> dict[str, Buckets]:
        """The bus's lag between servers, with a bus to other servers (see
        :meth:`Service.histograms`)."""
        lag = getattr(self.bus, "lag", None)
        return {"bus_lag_seconds": lag} if lag is not None else {}

    def figures(self) -> dict[str, float]:
        """Members, rooms, history and traffic, and the bus's state (see
        :meth:`Service.figures`)."""
        core, stats = self.core, self.stats
        counters = core.counters
        out: dict[str, float] = {
            "chat_members": core.connection_count,
            "chat_rooms": len(core.rooms()),
            "chat_history_bytes": core.history_bytes,
            "chat_lines_received_total": counters.lines_in,
            "chat_messages_total": counters.messages,
            "chat_private_messages_total": counters.private_messages,
            "chat_commands_total": counters.commands,
            "chat_lines_sent_total": stats.lines_out,
            "chat_flood_drops_total": stats.flood_drops,
            "chat_flood_kicks_total": stats.flood_kicks,
            "chat_remote_messages_total": counters.remote_messages,
            "chat_gap_notices_total": stats.gap_notices,
        }
        bus_stats = getattr(self.bus, "stats", None)
        if isinstance(bus_stats, dict):  # a bus to other servers (Redis)
            out["bus_up"] = 1 if getattr(self.bus, "up", False) else 0
            out["bus_published_total"] = bus_stats.get("published", 0)
            out["bus_read_total"] = bus_stats.get("entries_read", 0)
            out["bus_dropped_total"] = bus_stats.get("dropped", 0)
            out["bus_reconnections_total"] = bus_stats.get("reconnections", 0)
            out["bus_gap_notices_total"] = bus_stats.get("gap_notices", 0)
            out["bus_buffered"] = getattr(self.bus, "buffered", 0)
        return out

    def bus_snapshot(self) -> Hello:
        """This server's clients and topics, for the other servers."""
        return Hello(tuple(self.core.local_presence()), tuple(self.core.local_topics()))


def _gone(conn: Conn) -> bool:
    """Whether ``conn`` can no longer be written to: closing, or its transport lost (before
    ``on_close`` has run)."""
    transport = conn.transport
    return transport is None or transport.is_closing() or conn.is_closing


def _store_failed(message: str) -> None:
    # From the writer thread (logging is thread-safe): once, loud.
    log.error("%s", message, extra={"event": "store_failed"})


def _missed_notice(count: int) -> str:
    return f"*** notice: {count} message{'' if count == 1 else 's'} may have been missed"


def read_motd(settings: Settings) -> str | None:
    """The text of ``settings.motd`` (``None`` without one); raises ConfigError."""
    if not settings.motd:
        return None
    try:
        return Path(settings.motd).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"motd: {settings.motd}: {describe_oserror(exc)}") from None


def reconfigure_chat(service: Service, settings: Settings) -> None:
    """Apply the live chat settings (MOTD, flood control) to a running ``service``: for the
    clients that connect from now on. Raises ConfigError (an unreadable MOTD) before
    changing anything."""
    assert isinstance(service, ChatService)
    motd = read_motd(settings)
    service.core.set_motd(motd)
    service.flood_rate = settings.flood_rate
    service.flood_burst = settings.flood_burst


def build_chat(settings: Settings) -> ChatService:
    """A :class:`ChatService` configured from ``settings``; bad values raise ConfigError."""
    motd = read_motd(settings)
    from twoway.services.chatstore import open_memory

    bus = make_bus(settings.bus)
    core = ChatCore(
        history=settings.history,
        history_bytes=settings.history_bytes,
        max_rooms=settings.max_rooms,
        motd=motd,
        cluster=bus.cluster,
        tail=_TAIL,
        # Random, so a room whose history was lost (a restart in memory) is told apart.
        new_epoch=lambda: secrets.token_hex(4),
        resume_window=settings.resume_window,
        new_token=lambda: secrets.token_urlsafe(18),  # 144 bits: unguessable
    )
    memory = open_memory(settings, core, _TAIL)
    return ChatService(
        core,
        flood_rate=settings.flood_rate,
        flood_burst=settings.flood_burst,
        bus=bus,
        paste_lines=settings.paste_lines,
        store=memory.store,
        records=memory.records,
        describe_store=memory.describe,
    )

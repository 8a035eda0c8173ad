"""``twoway serve chat``: the I/O side of the chat server.

All chat logic lives in :class:`twoway.sansio.chat.ChatCore`; this module only maps
connections to client ids, applies the effects the core returns, enforces flood control and
turns transport events (closed, idle, too slow) into departures.

Fan-out never waits for the slowest peer: each room is a write group
(:class:`~twoway.net.groups.Group`), kept in step with the core's rooms as clients move
(:meth:`ChatCore.watch_rooms`); a room's lines of one loop iteration go out as one write per
member, in order with everything else the member is sent, by construction. A peer whose queue passes
``max_queued`` (or stays above a quarter of it for ``slow_grace`` seconds) gets ``error: too
slow, disconnecting`` and is dropped; the room reads ``*** nick left #room (too slow)``.

With a bus (``--bus redis://...``, see :mod:`twoway.bus`) the chat spans several servers.
Client ids are then ``node << 32 | n``, unique across servers. What the core returns for the
other servers (:class:`~twoway.sansio.chat.Presence`, ``Gone``, ``Said``, ``TopicSet``, and a
``Send`` to a client of another server) is published; what the other servers published comes
back through :meth:`ChatService.bus_events` into the core's directory
(:mod:`twoway.services.chatbus`); guest numbers come in blocks reserved across servers
(:mod:`twoway.services.chatguests`). Local delivery never waits for the bus.

:func:`~twoway.services.chatbuild.build_chat` builds the service from the settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twoway.bus import Bus, BusEvent, LocalBus
from twoway.errors import describe_oserror
from twoway.net.coalesce import coalescer
from twoway.net.groups import Group
from twoway.net.service import LineService
from twoway.sansio.bus import Hello, Moderated, RecordSet
from twoway.sansio.chat import (
    ChatCore,
    Close,
    Effect,
    Gone,
    Held,
    Log,
    Lookup,
    Presence,
    Said,
    Send,
    TopicSet,
    ToRoom,
)
from twoway.sansio.chat.sequence import MAX_REPLAY
from twoway.sansio.flood import DEFAULT_PASTE_LINES, Verdict
from twoway.services.chataudit import client_error, refuse
from twoway.services.chatbus import BusIntake
from twoway.services.chatclient import ChatClient, flood_control
from twoway.services.chatfigures import ChatStats, StatsAnswers, chat_figures
from twoway.services.chatguests import GuestBlocks
from twoway.services.chatresume import ResumeDesk
from twoway.store import MemoryRecords, Records

if TYPE_CHECKING:
    from twoway.bus.sessions import RedisSessions
    from twoway.net.conn import Conn, Listening
    from twoway.sansio.buckets import Buckets
    from twoway.store.sqlite import SqliteStore

__all__ = ["TAIL", "ChatService", "ChatStats", "Moderator"]

log = logging.getLogger("twoway.chat")


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


# Client ids: the low 32 bits count this server's connections, the bits above are its node.
_LOCAL_IDS = (1 << 32) - 1
#: Lines each room keeps in memory for /since, /history and resumes: one request's worth.
TAIL = MAX_REPLAY
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
        sessions: RedisSessions | None = None,
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
        self._stats_answers = StatsAnswers()
        self.stats_public = False
        self.server: Listening | None = None
        self._conns: dict[int, Conn] = {}
        self._next_cid = 0
        self._node_bits = 0  # this server's node number, shifted into place in client ids
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The rooms with members here, as write groups (kept in step by the core).
        self.groups: dict[str, Group] = {}
        core.watch_rooms(self._entered, self._left)
        #: True while the effects of a join or a departure are carried out: their room
        #: lines may wait a little to be gathered (see :mod:`twoway.net.coalesce`).
        self.presence = False
        self._feed = core.line
        #: What the other servers publish, as the core's effects.
        self.intake = BusIntake(core, self._conns, self.stats, self._moderated, self._now)
        #: Resume tickets every server shares (with a bus), and the lookups in them.
        self.sessions = sessions
        self.desk = ResumeDesk(core, self._conns, self.apply, self._now, sessions)
        #: Guest numbers reserved across servers (with a bus).
        self.guests = GuestBlocks(core, self.bus.reserve, self.on_connect)
        # What to do with each kind of effect.
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
            Held: publish,
            Lookup: self.desk.lookup,
        }

    async def on_start(self, server: Listening) -> None:
        """Start the bus (it fixes the node number client ids embed)."""
        self._loop = asyncio.get_running_loop()
        await self.bus.start(self)
        self._node_bits = self.bus.node << 32
        where = getattr(self.bus, "where", None)
        if self.sessions is not None and where is not None:
            self.sessions.where = where  # a ticket says where its client was in the log
        if self.store is not None:
            self.store.on_failure = _store_failed
            self.store.start()
        self._expiry = self._loop.call_later(_EXPIRE_EVERY, self._expire)
        if self.bus.cluster:
            await self.guests.reserve()  # the first clients need not wait for a block
        if self.sessions is not None:  # nicks held for resumes, whoever heard of them
            self.intake.on_missed = self.desk.reload_holds
            await self.desk.hold_nicks(lambda: bool(getattr(self.bus, "up", True)))

    def _expire(self) -> None:
        self.core.expire(self._now())
        loop = self._loop or asyncio.get_running_loop()
        self._expiry = loop.call_later(_EXPIRE_EVERY, self._expire)

    def on_listening(self, server: Listening) -> None:
        self.server = server

    async def on_stopped(self) -> None:
        """Every client is gone (their departures are queued for the bus): flush and stop it."""
        self.guests.cancel()
        coalescer.deliver_groups()
        if self._expiry is not None:
            self._expiry.cancel()
        await self.desk.close()
        await self.bus.stop()
        if self.sessions is not None:  # the tickets of the last departures, written
            await asyncio.get_running_loop().run_in_executor(None, self.sessions.close)
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
        if self.bus.cluster and not self.guests.at_hand(conn):
            return  # welcomed once a block of guest numbers is reserved
        self._next_cid += 1
        cid = self._node_bits | (self._next_cid & _LOCAL_IDS)
        flood = flood_control(self.flood_rate, self.flood_burst, self.paste_lines)
        conn.state = ChatClient(cid, flood)
        self._conns[cid] = conn
        mod = self.mod
        if mod is not None and not mod.admit(conn, cid):
            return  # refused (closed), or waiting for /pass: not in the chat (yet)
        self.enter_chat(conn, cid)

    def enter_chat(self, conn: Conn, cid: int) -> None:
        """Put the connected client ``cid`` into the chat (the lobby): at once, or after
        moderation admitted it (``/pass``)."""
        self._apply_presence(self.core.connect(cid, self._now(), conn.peer))
        if self.mod is not None:
            self.mod.joined(conn, cid)

    def on_line(self, conn: Conn, line: str) -> None:
        client: ChatClient = conn.state
        flood = client.flood
        now = self._now()
        if flood is not None:
            mark = conn.bytes_read
            same_read = mark == client.read_mark
            client.read_mark = mark
            verdict = flood.check(now, same_read)
            if verdict is Verdict.SLOW:
                self.stats.flood_slowed += 1
                client.slow_down(conn, flood.delay)
            elif verdict is not Verdict.OK:
                if verdict is Verdict.DROP:
                    self.stats.flood_drops += 1
                    if flood.fresh:  # once per message (a paste is dropped whole)
                        refuse(self.core, conn, client.cid, "error: slow down (lines dropped)")
                else:
                    self.stats.flood_kicks += 1
                    self._kick(conn, "error: flooding, disconnecting", "flooding")
                return
        if self.stats_lines is not None and line.strip().lower() == "/stats":
            mod = self.mod
            if self.stats_public or (mod is not None and mod.is_operator(client.cid)):
                self._stats_answers.send(conn, self.stats_lines())
            else:
                refuse(self.core, conn, client.cid, "error: not permitted")
            return
        mod = self.mod
        if (
            mod is not None
            and (line[:1] == "/" or client.cid in mod.watched)
            and mod.line(conn, client.cid, line, now)
        ):
            return
        self.apply(self._feed(client.cid, line, now))

    def core_line(self, conn: Conn, line: str, now: float) -> None:
        """Hand ``line`` of ``conn``'s client to the chat core and carry out the effects."""
        client: ChatClient = conn.state
        self.apply(self._feed(client.cid, line, now))

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

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        """The server is stopping: tell the client why and let it go now, as a departure
        for ``reason`` (its nick held: its session is kept, to resume after the restart)."""
        self._kick(conn, reason, reason)

    def on_slow(self, conn: Conn) -> None:
        # Called while the net layer flushes a fan-out: the departure is announced from the
        # next loop iteration, so the notice cannot overtake lines still being flushed to
        # the other members.
        self._kick(conn, "error: too slow, disconnecting", "too slow", timeout=1.0, later=True)

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        client: ChatClient | None = conn.state
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
        conn.send_line(notice)  # after the room lines queued for it (see net.groups)
        conn.close(timeout=timeout, reason=reason)
        client: ChatClient | None = conn.state
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
            conn.send_line(effect.text)  # after its room lines queued before (net.groups)
            self.stats.lines_out += 1
            if effect.text.startswith("error:"):  # the client's mistake: in the log too
                client_error(self.core, conn, effect.cid, effect.text)
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

    def _publish(self, effect: Said | Presence | Gone | TopicSet | Held) -> None:
        self.bus.publish(effect)  # only the other servers need these

    def _apply_presence(self, effects: list[Effect]) -> None:
        """:meth:`apply` for a join or a departure: its room lines may wait a little (see
        :mod:`twoway.net.coalesce`)."""
        self.presence = True
        try:
            self.apply(effects)
        finally:
            self.presence = False

    def _to_room(self, effect: ToRoom) -> None:
        group = self.groups.get(effect.room)
        if group is not None:  # else nobody is in it here (the others are on other servers)
            group.send(effect.text, effect.exclude, soon=not self.presence)

    def _entered(self, cid: int, room: str) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        group = self.groups.get(room)
        if group is None:
            group = self.groups[room] = Group(room, self.stats)
        group.add(cid, conn)

    def _left(self, cid: int, room: str) -> None:
        group = self.groups.get(room)
        if group is not None:
            group.remove(cid)  # it gets what was queued for it there first
            if not group:
                del self.groups[room]

    # ------------------------------------------------------------------ the bus

    def bus_events(self, events: Sequence[BusEvent]) -> None:
        """What other servers published (see :class:`~twoway.bus.BusListener`): into the
        core's directory, then out to the local clients, in order (room lines join the
        room batches, behind what local clients said before)."""
        out = self.intake.effects(events)
        if out:
            self.apply(out)

    def _moderated(self, item: Moderated | RecordSet) -> None:
        if self.mod is not None:
            self.mod.bus_item(item)

    def histograms(self) -> dict[str, Buckets]:
        """The bus's lag between servers, with a bus to other servers (see
        :meth:`Service.histograms`)."""
        lag = getattr(self.bus, "lag", None)
        return {"bus_lag_seconds": lag} if lag is not None else {}

    def figures(self) -> dict[str, float]:
        """Members, rooms, history and traffic, and the bus's state (see
        :meth:`Service.figures`)."""
        return chat_figures(self.core, self.stats, self.bus)

    def bus_snapshot(self) -> Hello:
        """This server's clients and topics, for the other servers."""
        return Hello(tuple(self.core.local_presence()), tuple(self.core.local_topics()))


def _store_failed(message: str) -> None:
    # From the writer thread (logging is thread-safe): once, loud.
    log.error("%s", message, extra={"event": "store_failed"})

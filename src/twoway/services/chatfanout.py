"""The chat's room fan-out: room lines of one loop iteration, one write per member.

A room line is not written to each member as it is said: :class:`RoomFanout` gathers each
room's lines of the loop iteration in a :class:`~twoway.sansio.chat.batch.RoomBatch` and
writes each member its share once, at the end of the iteration, without awaiting. Joins and
departures inside the batch keep each client's lines exact (no flush per join); lines of joins
and departures alone wait a few milliseconds more to be gathered (uvloop admits one
connection per iteration). A member already lost gets nothing.

:class:`RoomFanout` is handed what it needs of the chat (the open connections by client id,
the core's ``members``/``room_of``/``line``, the chat's ``apply``, the counters), never the
chat itself. This is the chat's hot path: each line costs one dict look-up and one
``RoomBatch.add``, each iteration one write per member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twoway.sansio.chat import Effect, ToRoom, is_command
from twoway.sansio.chat.batch import RoomBatch

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["ChatStats", "RoomFanout", "is_gone"]

# Characters of room lines gathered before they are flushed early: a bound on the memory one
# loop iteration can queue (uvloop may read many times per iteration).
_BATCH_LIMIT = 64 * 1024
# Joins and departures alone are delivered after a short delay rather than at the end of the
# loop iteration: uvloop admits one connection per iteration, so a burst of N joins flushed
# per iteration would write N times to every member. The delay is three times what the last
# delivery took (so delivering presence costs at most a quarter of the loop), within these
# bounds in seconds; a room line flushes at once, with the presence lines queued before it.
_PRESENCE_DELAY_MIN = 0.005
_PRESENCE_DELAY_MAX = 0.25


@dataclass(slots=True)
class ChatStats:
    """I/O-side counters of the chat (the core keeps its own in ``core.counters``)."""

    lines_out: int = 0
    flood_drops: int = 0
    flood_kicks: int = 0
    #: Notices sent to members that messages from other servers may have been missed.
    gap_notices: int = 0
    flood_slowed: int = 0


def is_gone(conn: Conn) -> bool:
    """Whether ``conn`` can no longer be written to: closing, or its transport lost (before
    ``on_close`` has run)."""
    transport = conn.transport
    return transport is None or transport.is_closing() or conn.is_closing


class RoomFanout:
    """The room lines queued in this loop iteration and their delivery (see the module
    docstring).

    ``conns`` is the chat's map of client id to connection (shared, not copied); ``members``
    and ``room_of`` answer from the core; ``feed`` is the core's ``line`` and ``apply`` the
    chat's effect application, for :meth:`line`; ``stats`` counts the lines written.
    """

    __slots__ = (
        "apply",
        "batch",
        "batch_size",
        "conns",
        "feed",
        "flush_scheduled",
        "loop",
        "members",
        "presence",
        "presence_delay",
        "presence_timer",
        "room_of",
        "stats",
    )

    def __init__(
        self,
        conns: dict[int, Conn],
        *,
        members: Callable[[str], Collection[int]],
        room_of: Callable[[int], str | None],
        feed: Callable[[int, str, float], list[Effect]],
        apply: Callable[[list[Effect]], None],
        stats: ChatStats,
    ) -> None:
        self.conns = conns
        self.members = members
        self.room_of = room_of
        self.feed = feed
        self.apply = apply
        self.stats = stats
        #: The event loop (taken when first needed).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Room lines of the current loop iteration, by room (see RoomBatch): empty when
        #: nothing is queued, which is what callers test before catching a client up.
        self.batch: dict[str, RoomBatch] = {}
        self.batch_size = 0
        self.flush_scheduled = False
        self.presence_timer: asyncio.TimerHandle | None = None
        self.presence_delay = _PRESENCE_DELAY_MIN
        #: True while the effects of a join or a departure are applied: their room lines
        #: may wait a little (see ``_PRESENCE_DELAY_MIN``).
        self.presence = False

    def line(self, conn: Conn, cid: int, text: str, now: float) -> None:
        """Hand the line ``text`` of client ``cid`` (on ``conn``) to the core and apply the
        effects. A command that takes the client out of its room first gets it what was
        queued for it there, and nothing queued in the room it enters."""
        if self.batch and is_command(text):
            room_of = self.room_of
            old = room_of(cid)
            effects = self.feed(cid, text, now)
            new = room_of(cid)
            if new != old:
                self.moved(cid, conn, old, new)
            self.apply(effects)
            return
        self.apply(self.feed(cid, text, now))

    def to_room(self, effect: ToRoom) -> None:
        """Queue a room line: every room's lines of this loop iteration go out together, one
        write per member, at the end of the iteration (joins and departures alone a little
        later; see :meth:`flush`)."""
        batch = self.batch.get(effect.room)
        if batch is None:
            batch = self.batch[effect.room] = RoomBatch()
        if not self.flush_scheduled:
            loop = self.loop
            if loop is None:
                loop = self.loop = asyncio.get_running_loop()
            if not self.presence:
                self.flush_scheduled = True
                loop.call_soon(self.flush)
            elif self.presence_timer is None:
                self.presence_timer = loop.call_later(self.presence_delay, self.flush)
        batch.add(effect.text, effect.exclude)
        self.batch_size += len(effect.text)
        if self.batch_size > _BATCH_LIMIT:
            self.flush()  # uvloop may read a lot in one iteration: bound the batch

    def catch_up(self, cid: int, conn: Conn, room: str | None = None) -> None:
        """Write ``cid`` the lines queued for it in ``room`` (default: its room) that it has
        not had: called before anything is written to it directly, or before it leaves the
        room, so its lines keep their order without flushing the room to everybody."""
        batch = self.batch.get(room or self.room_of(cid) or "")
        if batch is None:
            return
        data, count = batch.take(cid, conn.newline)
        if count and not is_gone(conn):
            conn.write(data)
            self.stats.lines_out += count

    def moved(self, cid: int, conn: Conn | None, old: str | None, new: str | None) -> None:
        """``cid`` left room ``old`` (if not None) for ``new`` (if not None) while lines were
        queued: it takes what it had in ``old`` and nothing of what ``new`` has so far."""
        if old is not None and conn is not None:
            self.catch_up(cid, conn, old)
        if new is not None:
            batch = self.batch.get(new)
            if batch is not None:
                batch.joined(cid)

    def flush(self) -> None:
        """Deliver the queued room lines: at the end of each loop iteration, or earlier when
        the batch is big. Each member gets one write with what it has not had (see
        :class:`~twoway.sansio.chat.batch.RoomBatch`); a member whose connection is already
        lost or closing gets nothing."""
        self.flush_scheduled = False
        if self.presence_timer is not None:
            self.presence_timer.cancel()
            self.presence_timer = None
        batches = self.batch
        if not batches:
            return
        self.batch = {}
        self.batch_size = 0
        conns = self.conns
        members_of = self.members
        sent = 0
        loop = self.loop
        started = loop.time() if loop is not None else 0.0
        for room, batch in batches.items():
            members = members_of(room)
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
            self.presence_delay = min(max(took, _PRESENCE_DELAY_MIN), _PRESENCE_DELAY_MAX)

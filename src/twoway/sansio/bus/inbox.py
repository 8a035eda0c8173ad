"""The reading side of the bus: log entries and the time in; what to deliver, ask and
announce out.

:class:`Inbox` drops duplicates, finds gaps (in a node's entry numbers and in a room's line
numbers) and notices nodes that went silent. :meth:`Inbox.read` takes the raw entries of one
read of the log and returns a :class:`Reading`: the events for the listener, the nodes to ask
for their Hello, whether to publish ours, and the entries that are not bus data. Nothing here
touches a socket or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twoway.errors import BusProtocolError
from twoway.sansio.bus.codec import Entry, decode_entry
from twoway.sansio.bus.events import (
    Backfill,
    BusEvent,
    InboxEvent,
    Missed,
    NodeGap,
    NodeLost,
    Received,
    RoomGap,
    Unknown,
)
from twoway.sansio.bus.items import Ask, Bye, Heartbeat, Hello
from twoway.sansio.chat import Said

__all__ = ["Inbox", "RawEntry", "Reading", "backfill", "entry_lags"]

#: A stream entry as redis-py returns it: its id and its fields.
RawEntry = tuple[bytes, Mapping[bytes, bytes]]


@dataclass(slots=True)
class Reading:
    """What one read of the log asks of the bus (see :meth:`Inbox.read`)."""

    #: For the listener, in order: Received items, RoomGap, Missed (once per reading),
    #: NodeLost (a node said Bye).
    events: list[BusEvent] = field(default_factory=list)
    #: Nodes that publish but whose Hello this reader lacks: publish an ``Ask`` for each.
    ask: list[int] = field(default_factory=list)
    #: Some node asked for this node's Hello: publish it.
    reply: bool = False
    #: Entries that are not bus data, skipped: ``(entry id, why)`` (one log line each).
    skipped: list[tuple[bytes, str]] = field(default_factory=list)
    #: A node gap was found (its Missed is in ``events``, once).
    gap: bool = False
    #: Gap notices in ``events`` (Missed and RoomGap), for the metrics.
    gaps: int = 0


class _Node:
    __slots__ = ("alive", "asked_at", "covered", "known", "last", "seen")

    def __init__(self, last: int, seen: float, asked_at: float | None) -> None:
        self.last = last  # the highest entry number seen
        self.seen = seen  # when the last entry arrived
        self.alive = True
        self.known = False  # its Hello arrived since it was (re)discovered
        self.asked_at = asked_at
        self.covered = False  # a gap before its next entry was already announced


class Inbox:
    """The reading side of the bus for node ``node``: give it every log entry in log order,
    raw (:meth:`read`, what the bus does) or decoded (:meth:`feed`).

    * duplicates (an entry number already seen from that node) are dropped;
    * skipped entry numbers give a :class:`NodeGap`, jumps in a room's numbers a
      :class:`RoomGap` — both before the items of the entry that revealed them;
    * the node's own entries only advance the room numbers (it delivered them itself);
    * a node is *known* once its :class:`Hello` arrived; entries from one that is not give
      :class:`Unknown` (again after ``ask_again`` seconds while it stays unknown);
    * :meth:`expired` reports nodes silent for more than ``silence`` seconds.

    Time is passed in (seconds, any monotonic origin). ``max_rooms`` bounds the room
    numbers kept (the least recently numbered rooms are forgotten first; a forgotten room's
    next number is taken as is). Not thread-safe.
    """

    def __init__(
        self,
        node: int,
        *,
        silence: float = 3.5,
        ask_again: float = 3.0,
        forget_after: float = 600.0,
        max_rooms: int = 100_000,
    ) -> None:
        self.node = node
        self.silence = silence
        self.ask_again = ask_again
        self.forget_after = forget_after
        self.max_rooms = max_rooms
        self._nodes: dict[int, _Node] = {}
        self._rooms: dict[str, int] = {}
        self._asked_all_at: float | None = None
        self._own = str(node).encode()
        #: Entries dropped because their number was already seen (repeated publications).
        self.duplicates = 0

    def read(self, entries: Iterable[RawEntry], now: float) -> Reading:
        """Take the entries of one read of the log, in log order (what the caller does with
        the result is in :class:`Reading`). Entries that are not bus data are skipped and
        listed; heartbeats are consumed; an ``Ask`` for this node (or every node) sets
        ``reply``; a ``Bye`` forgets its node and gives a :class:`NodeLost`; any node gap
        gives one :class:`Missed` (what was lost is unknown, so one notice says it)."""
        reading = Reading()
        own = self._own
        events = reading.events
        on_event, on_item = _ON_EVENT, _ON_ITEM
        for entry_id, fields in entries:
            mine = fields.get(b"n") == own
            if mine and not fields.get(b"q"):
                continue  # our own entry without room lines: nothing to track
            try:
                entry = decode_entry(fields, items=not mine)
            except BusProtocolError as exc:
                reading.skipped.append((entry_id, str(exc)))
                continue
            for event in self.feed(entry, now):
                if type(event) is Received:  # the common case, inline: most are chat items
                    item = event.item
                    handler = on_item.get(type(item))
                    if handler is None:
                        events.append(event)  # a chat item, or a Hello: the listener's
                    else:
                        handler(self, reading, event.node, item)
                else:
                    on_event[type(event)](self, reading, event)
        return reading

    def _on_node_gap(self, reading: Reading, event: NodeGap) -> None:
        if not reading.gap:
            reading.gap = True
            reading.gaps += 1
            reading.events.append(Missed())

    def _on_room_gap(self, reading: Reading, event: RoomGap) -> None:
        reading.gaps += 1
        reading.events.append(event)

    def _on_unknown(self, reading: Reading, event: Unknown) -> None:
        reading.ask.append(event.node)

    def _on_heartbeat(self, reading: Reading, node: int, item: Heartbeat) -> None:
        pass  # it did its job in feed(): the node is alive

    def _on_ask(self, reading: Reading, node: int, item: Ask) -> None:
        if item.target in (0, self.node):
            reading.reply = True

    def _on_bye(self, reading: Reading, node: int, item: Bye) -> None:
        self.forget(node)
        reading.events.append(NodeLost(node, "server stopped"))

    def feed(self, entry: Entry, now: float) -> list[InboxEvent]:
        """Take one entry; return what to act on, in order."""
        if entry.node == self.node:
            self._number_rooms(entry, None)
            return []
        st = self._nodes.get(entry.node)
        out: list[InboxEvent] = []
        if st is None:
            st = self._nodes[entry.node] = _Node(entry.nseq, now, self._asked_all_at)
        else:
            if entry.nseq <= st.last:
                self.duplicates += 1
                return out  # already seen: a publish that was repeated
            missed = entry.nseq - st.last - 1
            if missed > 0 and not st.covered:
                out.append(NodeGap(entry.node, missed))
            st.covered = False
            st.last = entry.nseq
            st.seen = now
            st.alive = True
        self._number_rooms(entry, out)
        node = entry.node
        for item in entry.items:
            if type(item) is Hello:
                st.known = True
            out.append(Received(node, item))
        if not st.known and (st.asked_at is None or now - st.asked_at >= self.ask_again):
            st.asked_at = now
            out.append(Unknown(node))
        return out

    def _number_rooms(self, entry: Entry, out: list[InboxEvent] | None) -> None:
        if not entry.runs:
            return
        rooms = self._rooms
        for room, first, count in entry.runs:
            last = rooms.pop(room, None)
            if out is not None and last is not None and first > last + 1:
                out.append(RoomGap(room, first - last - 1))
            rooms[room] = first + count - 1  # (re)inserted last: the dict is in order of use
        if len(rooms) > self.max_rooms:
            for stale in list(rooms)[: len(rooms) - self.max_rooms]:
                del rooms[stale]

    def room_number(self, room: str) -> int | None:
        """The number of the last line of ``room`` read from the log (None: none known)."""
        return self._rooms.get(room)

    def expired(self, now: float) -> list[int]:
        """The nodes that fell silent for more than ``silence`` seconds since the last call:
        each is reported once, then counts as unknown (a new entry from it gives
        :class:`Unknown`). Nodes silent for ``forget_after`` seconds are forgotten."""
        out: list[int] = []
        for node, st in list(self._nodes.items()):
            quiet = now - st.seen
            if st.alive and quiet > self.silence:
                st.alive = False
                st.known = False
                st.asked_at = None
                out.append(node)
            elif not st.alive and quiet > self.forget_after:
                del self._nodes[node]
        return out

    def resume(self, now: float) -> None:
        """This reader was cut off from the log (its own outage says nothing about the other
        nodes): restart every silence clock at ``now``."""
        for st in self._nodes.values():
            st.seen = now

    def stream_reset(self) -> None:
        """The log came back empty (its server restarted without data): room numbers start
        again, and one gap per node is already announced by the caller."""
        self._rooms.clear()
        for st in self._nodes.values():
            st.covered = True

    def asked_all(self, now: float) -> None:
        """An :class:`Ask` for every node was just published: do not ask again before
        ``ask_again`` seconds."""
        self._asked_all_at = now
        for st in self._nodes.values():
            if not st.known:
                st.asked_at = now

    def forget(self, node: int) -> None:
        """``node`` said :class:`Bye`: forget it (a later entry starts afresh)."""
        self._nodes.pop(node, None)

    def is_alive(self, node: int) -> bool:
        """Whether ``node`` published recently enough (see :meth:`expired`)."""
        st = self._nodes.get(node)
        return st is not None and st.alive


# What Inbox.read does with each event of Inbox.feed but Received, by type (each handler
# takes its key's type).
_ON_EVENT: dict[type, Callable[[Inbox, Reading, Any], None]] = {
    NodeGap: Inbox._on_node_gap,
    RoomGap: Inbox._on_room_gap,
    Unknown: Inbox._on_unknown,
}

# The bus's own items that stop at the bus, by type (every other item goes to the listener).
_ON_ITEM: dict[type, Callable[[Inbox, Reading, int, Any], None]] = {
    Heartbeat: Inbox._on_heartbeat,
    Ask: Inbox._on_ask,
    Bye: Inbox._on_bye,
}


def entry_lags(entries: Iterable[RawEntry], node: int, now: float) -> list[float]:
    """For each entry another node published with its wall-clock time (``t``), how long
    ago that was at ``now`` (this node's wall clock, in seconds; negative when the clocks
    disagree). Entries of ``node`` itself, and those without a usable ``t`` (an older
    publisher), are left out. One look-up per entry, whatever it holds."""
    own = str(node).encode()
    out = []
    for _, fields in entries:
        sent = fields.get(b"t")
        if sent is None or fields.get(b"n") == own:
            continue
        try:
            at = float(sent)
        except ValueError:
            continue
        if math.isfinite(at):
            out.append(now - at)
    return out


def backfill(entries: Iterable[RawEntry]) -> tuple[Backfill, int]:
    """The room lines of ``entries`` (oldest first), for the rooms' history, and how many
    entries were skipped because they are not bus data."""
    lines: list[tuple[str, str]] = []
    skipped = 0
    for _, fields in entries:
        try:
            entry = decode_entry(fields)
        except BusProtocolError:
            skipped += 1
            continue
        lines += ((i.room, i.text) for i in entry.items if type(i) is Said)
    return Backfill(tuple(lines)), skipped

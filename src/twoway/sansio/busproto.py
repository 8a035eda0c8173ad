"""The chat bus protocol without I/O: what servers tell each other, how it is encoded, and how
a reader drops duplicates, finds gaps and notices servers that went silent.

Every server (a *node*) is authoritative for its own clients and publishes what the others
must know as *items*: the chat effects :class:`~twoway.sansio.chat.Presence`,
:class:`~twoway.sansio.chat.Gone`, :class:`~twoway.sansio.chat.Said`,
:class:`~twoway.sansio.chat.TopicSet` and :class:`~twoway.sansio.chat.Send` (a private
message to a client of another node), plus the bus's own :class:`Hello` (the complete state
of a node), :class:`Ask` (please publish your Hello), :class:`Lost` (lines that could not be
published), :class:`Heartbeat` and :class:`Bye`.

The items a node publishes during one event-loop iteration travel together in one *entry*
of a shared log (a Redis stream). An entry carries:

* ``n`` — the node number;
* ``s`` — the node's entry number, 1, 2, 3... with no gap: a reader drops an entry whose
  number it has already seen (a publish repeated after a lost reply is delivered once) and
  knows it missed entries when a number is skipped;
* ``d`` — the items, a JSON array of arrays (:func:`encode_items`);
* ``q`` — the room sequence numbers of the :class:`Said` items: every room has one counter
  shared by all nodes, so a reader that sees a room's number jump knows how many lines of
  that room it missed. Written by the log itself as *runs* (:func:`room_runs`: consecutive
  lines of one room), ``ROOM FIRST COUNT`` comma-separated, e.g. ``#lobby 41 3,#dev 7 1``:
  the lines of a run are numbered FIRST, FIRST+1... A reader can follow the numbers of an
  entry without decoding its items.

:class:`Inbox` is the reader's side as a pure state machine: entries and the time in,
:class:`Received` items and gap reports out. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twoway.sansio.chat import Gone, Presence, Said, Send, TopicSet

__all__ = [
    "Ask",
    "Bye",
    "Entry",
    "Heartbeat",
    "Hello",
    "Inbox",
    "InboxEvent",
    "Item",
    "Lost",
    "NodeGap",
    "ProtocolError",
    "Received",
    "RoomGap",
    "Unknown",
    "decode_entry",
    "decode_items",
    "decode_runs",
    "encode_items",
    "room_runs",
]


class ProtocolError(ValueError):
    """An entry that is not valid bus data (another program wrote it, or a bug)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The complete state of the publishing node: ``members`` as ``(cid, nick, room)`` and
    the ``topics`` of its rooms as ``(room, topic)``. A reader replaces what it knew of that
    node with it."""

    members: tuple[tuple[int, str, str], ...]
    topics: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Ask:
    """Node ``target`` (0: every node) should publish its :class:`Hello`."""

    target: int = 0


@dataclass(frozen=True, slots=True)
class Lost:
    """Room lines of the publishing node that never reached the log (its buffer overflowed
    while the log was unreachable): ``(room, count)`` pairs."""

    rooms: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The node is alive (published when it had nothing else to say for a while)."""


@dataclass(frozen=True, slots=True)
class Bye:
    """The node is stopping: forget it now rather than after its silence."""


Item = Presence | Gone | Said | TopicSet | Send | Hello | Ask | Lost | Heartbeat | Bye

_HEARTBEAT = Heartbeat()
_BYE = Bye()


# --------------------------------------------------------------------------- codec


def _encode(item: Item) -> list[Any]:
    kind = type(item)
    if kind is Said:
        assert isinstance(item, Said)
        return ["msg", item.room, item.text]
    if kind is Presence:
        assert isinstance(item, Presence)
        return ["presence", item.cid, item.nick, item.room]
    if kind is Gone:
        assert isinstance(item, Gone)
        return ["gone", item.cid, item.reason]
    if kind is Send:
        assert isinstance(item, Send)
        return ["send", item.cid, item.text]
    if kind is TopicSet:
        assert isinstance(item, TopicSet)
        return ["topic", item.room, item.topic, item.nick]
    if kind is Hello:
        assert isinstance(item, Hello)
        return ["hello", [list(m) for m in item.members], [list(t) for t in item.topics]]
    if kind is Ask:
        assert isinstance(item, Ask)
        return ["ask", item.target]
    if kind is Lost:
        assert isinstance(item, Lost)
        return ["lost", [list(r) for r in item.rooms]]
    if kind is Heartbeat:
        return ["heartbeat"]
    if kind is Bye:
        return ["bye"]
    raise TypeError(f"not a bus item: {item!r}")


def encode_items(items: Iterable[Item]) -> bytes:
    """The ``d`` field of an entry: the items as a compact JSON array (UTF-8)."""
    return json.dumps(
        [_encode(item) for item in items], ensure_ascii=False, separators=(",", ":")
    ).encode()


def room_runs(items: Iterable[Item]) -> list[tuple[str, int]]:
    """``(room, count)`` for each run of consecutive :class:`Said` items of one room (other
    items do not break a run): what the log numbers (``q``)."""
    runs: list[tuple[str, int]] = []
    room = ""
    count = 0
    for item in items:
        if type(item) is Said:
            if item.room == room:
                count += 1
            else:
                if count:
                    runs.append((room, count))
                room, count = item.room, 1
    if count:
        runs.append((room, count))
    return runs


def _str(v: Any) -> str:
    if type(v) is not str:
        raise ProtocolError(f"expected a string, got {v!r:.40}")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise ProtocolError(f"expected an integer, got {v!r:.40}")
    return v


def _list(v: Any) -> list[Any]:
    if type(v) is not list:
        raise ProtocolError(f"expected an array, got {v!r:.40}")
    return v


def _decode(raw: Any) -> Item | None:
    a = _list(raw)
    if not a:
        raise ProtocolError("empty item")
    kind = a[0]
    try:
        if kind == "msg":
            return Said(_str(a[1]), _str(a[2]))
        if kind == "presence":
            return Presence(_int(a[1]), _str(a[2]), _str(a[3]))
        if kind == "gone":
            return Gone(_int(a[1]), _str(a[2]))
        if kind == "send":
            return Send(_int(a[1]), _str(a[2]))
        if kind == "topic":
            return TopicSet(_str(a[1]), _str(a[2]), _str(a[3]))
        if kind == "hello":
            members = tuple((_int(m[0]), _str(m[1]), _str(m[2])) for m in map(_list, _list(a[1])))
            topics = tuple((_str(t[0]), _str(t[1])) for t in map(_list, _list(a[2])))
            return Hello(members, topics)
        if kind == "ask":
            return Ask(_int(a[1]))
        if kind == "lost":
            return Lost(tuple((_str(r[0]), _int(r[1])) for r in map(_list, _list(a[1]))))
        if kind == "heartbeat":
            return _HEARTBEAT
        if kind == "bye":
            return _BYE
    except IndexError:
        raise ProtocolError(f"{kind!r:.20} item with missing fields") from None
    return None  # a kind from a newer version: skipped


def decode_items(data: bytes) -> list[Item]:
    """The items of a ``d`` field. Kinds this version does not know are skipped; anything
    else that is not what :func:`encode_items` makes raises :class:`ProtocolError`."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"items are not JSON: {exc}") from None
    return [item for item in map(_decode, _list(raw)) if item is not None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: ``items`` published by ``node`` as its entry number ``nseq``;
    ``runs`` number its :class:`Said` items: ``(room, first, count)`` (see ``q`` above)."""

    node: int
    nseq: int
    items: Sequence[Item]
    runs: Sequence[tuple[str, int, int]] = ()


def decode_runs(q: bytes) -> list[tuple[str, int, int]]:
    """The ``q`` field: ``[(room, first, count), ...]``. Raises :class:`ProtocolError`."""
    if not q:
        return []
    try:
        runs = []
        for run in q.decode().split(","):
            room, first, count = run.split(" ")
            runs.append((room, int(first), int(count)))
    except ValueError:
        raise ProtocolError(f"bad room numbers {q!r:.60}") from None
    return runs


def decode_entry(fields: Mapping[bytes, bytes], *, items: bool = True) -> Entry:
    """An :class:`Entry` from the fields of a stream entry (bytes keys and values, as
    redis-py returns them). Raises :class:`ProtocolError` if anything is malformed: the
    caller skips the entry, and the reader reports the skipped number as a
    :class:`NodeGap` when the node's next entry arrives. ``items=False`` leaves the items
    out (undecoded): enough for a node reading its own entries."""
    try:
        node = int(fields[b"n"])
        nseq = int(fields[b"s"])
    except (KeyError, ValueError) as exc:
        raise ProtocolError(f"entry without a valid node or number ({exc})") from None
    runs = decode_runs(fields.get(b"q", b""))
    return Entry(node, nseq, decode_items(fields.get(b"d", b"[]")) if items else (), runs)


# --------------------------------------------------------------------------- the reader


@dataclass(frozen=True, slots=True)
class Received:
    """An item ``node`` published, new and in that node's order."""

    node: int
    item: Item


@dataclass(frozen=True, slots=True)
class RoomGap:
    """``missed`` lines of ``room`` never reached this reader."""

    room: str
    missed: int


@dataclass(frozen=True, slots=True)
class NodeGap:
    """``missed`` entries of ``node`` never reached this reader (what they held is unknown)."""

    node: int
    missed: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """``node`` publishes but this reader lacks its :class:`Hello`: ask it (:class:`Ask`)."""

    node: int


InboxEvent = Received | RoomGap | NodeGap | Unknown


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
    """The reading side of the bus for node ``node``: feed it every log entry in log order.

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
        #: Entries dropped because their number was already seen (repeated publications).
        self.duplicates = 0

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

"""What reading the bus's log gives: the events an :class:`~twoway.sansio.bus.inbox.Inbox`
reports and the ones a bus hands to its listener (the chat service).

A listener receives a list of :data:`BusEvent`, in order: :class:`Received` items,
:class:`RoomGap`, :class:`Missed`, :class:`NodeLost`, :class:`Overflow` and
:class:`Backfill`. :class:`NodeGap` and :class:`Unknown` stay inside the bus (a node gap
becomes a :class:`Missed`; an unknown node is asked for its Hello).
"""

from __future__ import annotations

from dataclasses import dataclass

from twoway.sansio.bus.items import Item

__all__ = [
    "Backfill",
    "BusEvent",
    "InboxEvent",
    "Missed",
    "NodeGap",
    "NodeLost",
    "Overflow",
    "Received",
    "RoomGap",
    "Unknown",
]


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
    """``node`` publishes but this reader lacks its Hello: ask it (an ``Ask``)."""

    node: int


InboxEvent = Received | RoomGap | NodeGap | Unknown


@dataclass(frozen=True, slots=True)
class Missed:
    """Lines from other nodes may have been missed, rooms unknown (the log came back empty,
    or was trimmed past this reader, or skipped one of a node's entries); ``count`` when
    known."""

    count: int | None = None


@dataclass(frozen=True, slots=True)
class NodeLost:
    """Node ``node`` is gone (``reason``: ``server lost`` after its silence, ``server
    stopped`` after its goodbye): its clients are gone too."""

    node: int
    reason: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """``count`` of this node's lines could not be published (the buffer was full while the
    log was unreachable); the other nodes were told which rooms lost lines."""

    count: int


@dataclass(frozen=True, slots=True)
class Backfill:
    """What other nodes said before this one joined, oldest first, as ``(room, text)``: for
    the rooms' history, delivered to nobody. Sent once, when a node first reaches the log."""

    lines: tuple[tuple[str, str], ...]


BusEvent = Received | RoomGap | Missed | NodeLost | Overflow | Backfill

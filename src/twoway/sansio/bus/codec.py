"""The bus's wire format: how items travel in the entries of the shared log.

The items a node publishes during one event-loop iteration travel together in one *entry*
of the log (a Redis stream). An entry carries:

* ``n`` — the node number;
* ``s`` — the node's entry number, 1, 2, 3... with no gap: a reader drops an entry whose
  number it has already seen (a publish repeated after a lost reply is delivered once) and
  knows it missed entries when a number is skipped;
* ``d`` — the items, a JSON array of arrays (:func:`encode_items`);
* ``q`` — the room sequence numbers of the :class:`~twoway.sansio.chat.Said` items: every
  room has one counter shared by all nodes, so a reader that sees a room's number jump knows
  how many lines of that room it missed. Written by the log itself as *runs*
  (:func:`room_runs`: consecutive lines of one room), ``ROOM FIRST COUNT`` comma-separated,
  e.g. ``#lobby 41 3,#dev 7 1``: the lines of a run are numbered FIRST, FIRST+1... A reader
  can follow the numbers of an entry without decoding its items.

Anything that is not what this module writes raises
:class:`~twoway.errors.BusProtocolError`; kinds of item from a newer version are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twoway.errors import BusProtocolError
from twoway.sansio.bus.items import Ask, Bye, Heartbeat, Hello, Item, Lost, Moderated, RecordSet
from twoway.sansio.chat import Gone, Held, Presence, Said, Send, TopicSet

__all__ = [
    "Entry",
    "decode_entry",
    "decode_items",
    "decode_runs",
    "encode_items",
    "item_size",
    "room_runs",
]

_HEARTBEAT = Heartbeat()
_BYE = Bye()


# --------------------------------------------------------------------------- encoding


def _said(i: Said) -> list[Any]:
    return ["msg", i.room, i.text]


def _presence(i: Presence) -> list[Any]:
    return ["presence", i.cid, i.nick, i.room]


def _gone(i: Gone) -> list[Any]:
    return ["gone", i.cid, i.reason]


def _send(i: Send) -> list[Any]:
    return ["send", i.cid, i.text]


def _topic(i: TopicSet) -> list[Any]:
    return ["topic", i.room, i.topic, i.nick]


def _hello_out(i: Hello) -> list[Any]:
    return ["hello", [list(m) for m in i.members], [list(t) for t in i.topics]]


def _ask(i: Ask) -> list[Any]:
    return ["ask", i.target]


def _lost(i: Lost) -> list[Any]:
    return ["lost", [list(r) for r in i.rooms]]


def _moderated(i: Moderated) -> list[Any]:
    return ["mod", i.action, i.mask, i.until, i.reason, i.by]


def _record(i: RecordSet) -> list[Any]:
    return ["record", i.kind, i.key, i.value]


def _held(i: Held) -> list[Any]:
    return ["held", i.nick, i.key, i.on]


# Each kind's encoder, by type (every value takes exactly its key's type).
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    Said: _said,
    Presence: _presence,
    Gone: _gone,
    Send: _send,
    TopicSet: _topic,
    Hello: _hello_out,
    Ask: _ask,
    Lost: _lost,
    Moderated: _moderated,
    RecordSet: _record,
    Held: _held,
    Heartbeat: lambda _: ["heartbeat"],
    Bye: lambda _: ["bye"],
}


def _encode(item: Item) -> list[Any]:
    encoder = _ENCODERS.get(type(item))
    if encoder is None:
        raise TypeError(f"not a bus item: {item!r}")
    return encoder(item)


def encode_items(items: Iterable[Item]) -> bytes:
    """The ``d`` field of an entry: the items as a compact JSON array (UTF-8). Raises
    :class:`TypeError` for something that is not an item (the caller's bug)."""
    out: list[list[Any]] = []
    for item in items:
        if type(item) is Said:  # the common case, inline (no call through the table)
            out.append(["msg", item.room, item.text])
        else:
            out.append(_encode(item))
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


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


def _said_size(i: Said) -> int:
    return len(i.text) + len(i.room) + 16


def _send_size(i: Send) -> int:
    return len(i.text) + 32


def _topic_size(i: TopicSet) -> int:
    return len(i.topic) + len(i.room) + len(i.nick) + 16


def _hello_size(i: Hello) -> int:
    return 64 * len(i.members) + sum(len(t) + 40 for _, t in i.topics) + 16


# The kinds whose size varies; every other kind is small (48).
_SIZES: dict[type, Callable[[Any], int]] = {
    Said: _said_size,
    Send: _send_size,
    TopicSet: _topic_size,
    Hello: _hello_size,
    Moderated: lambda i: len(i.mask) + len(i.reason) + len(i.by) + 48,
    RecordSet: lambda i: len(i.kind) + len(i.key) + len(i.value) + 32,
}


def item_size(item: Item) -> int:
    """A rough size of ``item`` once encoded, to bound the size of one entry."""
    size = _SIZES.get(type(item))
    return 48 if size is None else size(item)


# --------------------------------------------------------------------------- decoding


def _str(v: Any) -> str:
    if type(v) is not str:
        raise BusProtocolError(f"expected a string, got {v!r:.40}")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise BusProtocolError(f"expected an integer, got {v!r:.40}")
    return v


def _until(v: Any) -> float | None:
    if v is None:
        return None
    if type(v) not in (int, float):
        raise BusProtocolError(f"expected a number or null, got {v!r:.40}")
    return float(v)


def _list(v: Any) -> list[Any]:
    if type(v) is not list:
        raise BusProtocolError(f"expected an array, got {v!r:.40}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise BusProtocolError(f"expected true or false, got {v!r:.40}")
    return v


def _hello_in(a: list[Any]) -> Hello:
    members = tuple((_int(m[0]), _str(m[1]), _str(m[2])) for m in map(_list, _list(a[1])))
    topics = tuple((_str(t[0]), _str(t[1])) for t in map(_list, _list(a[2])))
    return Hello(members, topics)


_DECODERS: dict[str, Callable[[list[Any]], Item]] = {
    "msg": lambda a: Said(_str(a[1]), _str(a[2])),
    "presence": lambda a: Presence(_int(a[1]), _str(a[2]), _str(a[3])),
    "gone": lambda a: Gone(_int(a[1]), _str(a[2])),
    "send": lambda a: Send(_int(a[1]), _str(a[2])),
    "topic": lambda a: TopicSet(_str(a[1]), _str(a[2]), _str(a[3])),
    "hello": _hello_in,
    "ask": lambda a: Ask(_int(a[1])),
    "lost": lambda a: Lost(tuple((_str(r[0]), _int(r[1])) for r in map(_list, _list(a[1])))),
    "mod": lambda a: Moderated(_str(a[1]), _str(a[2]), _until(a[3]), _str(a[4]), _str(a[5])),
    "record": lambda a: RecordSet(_str(a[1]), _str(a[2]), _str(a[3])),
    "held": lambda a: Held(_str(a[1]), _str(a[2]), _bool(a[3])),
    "heartbeat": lambda a: _HEARTBEAT,
    "bye": lambda a: _BYE,
}


def _decode(raw: Any) -> Item | None:
    a = _list(raw)
    if not a:
        raise BusProtocolError("empty item")
    kind = a[0]
    try:
        if kind == "msg":  # the common case, inline (no call through the table)
            return Said(_str(a[1]), _str(a[2]))
        decoder = _DECODERS.get(kind) if type(kind) is str else None
        if decoder is None:
            return None  # a kind from a newer version: skipped
        return decoder(a)
    except IndexError:
        raise BusProtocolError(f"{kind!r:.20} item with missing fields") from None


def decode_items(data: bytes) -> list[Item]:
    """The items of a ``d`` field. Kinds this version does not know are skipped; anything
    else that is not what :func:`encode_items` makes raises
    :class:`~twoway.errors.BusProtocolError`."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BusProtocolError(f"items are not JSON: {exc}") from None
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
    """The ``q`` field: ``[(room, first, count), ...]``. Raises
    :class:`~twoway.errors.BusProtocolError`."""
    if not q:
        return []
    try:
        runs = []
        for run in q.decode().split(","):
            room, first, count = run.split(" ")
            runs.append((room, int(first), int(count)))
    except ValueError:
        raise BusProtocolError(f"bad room numbers {q!r:.60}") from None
    return runs


def decode_entry(fields: Mapping[bytes, bytes], *, items: bool = True) -> Entry:
    """An :class:`Entry` from the fields of a stream entry (bytes keys and values, as
    redis-py returns them). Raises :class:`~twoway.errors.BusProtocolError` if anything is
    malformed: the caller skips the entry, and the reader reports the skipped number as a
    node gap when the node's next entry arrives. ``items=False`` leaves the items out
    (undecoded): enough for a node reading its own entries."""
    try:
        node = int(fields[b"n"])
        nseq = int(fields[b"s"])
    except (KeyError, ValueError) as exc:
        raise BusProtocolError(f"entry without a valid node or number ({exc})") from None
    runs = decode_runs(fields.get(b"q", b""))
    return Entry(node, nseq, decode_items(fields.get(b"d", b"[]")) if items else (), runs)

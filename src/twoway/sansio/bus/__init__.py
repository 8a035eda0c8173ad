"""The chat bus protocol without I/O: the items, their wire codec, the inbox and the outbox.

What chat servers tell each other, and the reading (:class:`Inbox`) and writing
(:class:`Outbox`) sides of the shared log as pure state:

* :mod:`~twoway.sansio.bus.items` — what a node publishes;
* :mod:`~twoway.sansio.bus.codec` — how it travels in the log's entries;
* :mod:`~twoway.sansio.bus.events` — what reading the log gives;
* :mod:`~twoway.sansio.bus.inbox` — duplicates, gaps, unknown and silent nodes;
* :mod:`~twoway.sansio.bus.outbox` — the bounded buffer, entries, overflow counts.

Nothing here touches a socket, an event loop or a clock (time is passed in);
:mod:`twoway.bus` drives it.
"""

from __future__ import annotations

from twoway.sansio.bus.codec import (
    Entry,
    decode_entry,
    decode_items,
    decode_runs,
    encode_items,
    item_size,
    room_runs,
)
from twoway.sansio.bus.events import (
    Backfill,
    BusEvent,
    InboxEvent,
    Missed,
    NodeGap,
    NodeLost,
    Overflow,
    Received,
    RoomGap,
    Unknown,
)
from twoway.sansio.bus.inbox import Inbox, RawEntry, Reading, backfill, entry_lags
from twoway.sansio.bus.items import (
    USER_KINDS,
    Ask,
    Bye,
    Heartbeat,
    Hello,
    Item,
    Lost,
    Moderated,
    RecordSet,
)
from twoway.sansio.bus.outbox import Batch, Outbox

__all__ = [
    "USER_KINDS",
    "Ask",
    "Backfill",
    "Batch",
    "BusEvent",
    "Bye",
    "Entry",
    "Heartbeat",
    "Hello",
    "Inbox",
    "InboxEvent",
    "Item",
    "Lost",
    "Missed",
    "Moderated",
    "NodeGap",
    "NodeLost",
    "Outbox",
    "Overflow",
    "RawEntry",
    "Reading",
    "Received",
    "RecordSet",
    "RoomGap",
    "Unknown",
    "backfill",
    "decode_entry",
    "decode_items",
    "decode_runs",
    "encode_items",
    "entry_lags",
    "item_size",
    "room_runs",
]

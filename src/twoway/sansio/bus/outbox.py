"""The writing side of the bus: a bounded buffer of items, cut into entries for the log.

Local chat never waits for the log: :meth:`Outbox.put` appends and returns. While the log is
unreachable the buffer keeps up to ``limit`` chat items (the bus's own items are never
dropped nor counted); beyond that, items are dropped and counted per room, and once the
buffer has drained below half the limit :meth:`Outbox.overflow` hands the counts over once
(for a notice to the local rooms and a :class:`~twoway.sansio.bus.items.Lost` to the other
nodes). Nothing here touches a socket or a clock.
"""

from __future__ import annotations

from collections import deque

from twoway.sansio.bus.codec import encode_items, item_size, room_runs
from twoway.sansio.bus.items import USER_KINDS, Item, Lost
from twoway.sansio.chat import Said

__all__ = ["Batch", "Outbox"]


class Batch:
    """One entry being published, frozen once formed so that a retry repeats it exactly
    (the log drops an entry number it already has)."""

    __slots__ = ("count", "data", "items", "nseq", "runs")

    def __init__(self, nseq: int, items: list[Item], count: int) -> None:
        #: The node's entry number for it (1, 2, 3... with no gap).
        self.nseq = nseq
        self.items = items
        #: The ``d`` field.
        self.data = encode_items(items)
        #: The room runs, flat: ``room, count, room, count...`` (the script's arguments).
        self.runs: list[str | int] = [x for room, n in room_runs(items) for x in (room, n)]
        #: Chat items (messages) in it, as opposed to the bus's own.
        self.count = count


class Outbox:
    """Items waiting for the log, in order, and the entry in flight.

    * ``limit`` — chat items kept (beyond it :meth:`put` drops and counts);
    * ``batch_items``, ``batch_bytes`` — bounds of one entry (items, rough encoded bytes).

    Use: :meth:`put` / :meth:`put_control` to queue; :meth:`batch` for the entry to publish
    (the same one until :meth:`sent`); :meth:`sent` once the log has it. Not thread-safe.
    """

    def __init__(self, *, limit: int, batch_items: int = 500, batch_bytes: int = 256 * 1024):
        if min(limit, batch_items) < 1:
            raise ValueError("limit and batch_items must be >= 1")
        self.limit = limit
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self._queue: deque[Item] = deque()
        self._queued = 0  # chat items in the queue (the bus's own are not counted)
        self._batch: Batch | None = None
        self._nseq = 0
        self._dropped_rooms: dict[str, int] = {}
        #: Chat items dropped since the last :meth:`overflow` (the buffer was full).
        self.dropped = 0

    def __len__(self) -> int:
        """Items queued (not counting the entry in flight)."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._queue and self._batch is None

    @property
    def pending(self) -> int:
        """Chat items not yet in the log: queued or in flight."""
        return self._queued + (self._batch.count if self._batch is not None else 0)

    def put(self, item: Item) -> bool:
        """Queue a chat item (one of :data:`~twoway.sansio.bus.items.USER_KINDS`; the bus's
        own go through :meth:`put_control`). False if the buffer is full: then the item is
        dropped and counted (a :class:`Said` per room, for :meth:`overflow`)."""
        if self._queued < self.limit:
            self._queued += 1
            self._queue.append(item)
            return True
        self.dropped += 1
        if type(item) is Said:
            rooms = self._dropped_rooms
            rooms[item.room] = rooms.get(item.room, 0) + 1
        return False

    def put_control(self, item: Item) -> None:
        """Queue one of the bus's own items: never dropped, not counted against the limit."""
        self._queue.append(item)

    def batch(self) -> Batch | None:
        """The entry to publish: the one in flight, else the next one cut from the queue
        (at most ``batch_items`` items and about ``batch_bytes``); None if nothing waits."""
        if self._batch is not None:
            return self._batch
        queue = self._queue
        if not queue:
            return None
        items: list[Item] = []
        size = count = 0
        while queue and len(items) < self.batch_items and size < self.batch_bytes:
            item = queue.popleft()
            items.append(item)
            kind = type(item)
            if kind is Said:  # the common case, inline
                size += len(item.text) + 32  # type: ignore[union-attr]
                count += 1
            else:
                size += item_size(item)
                count += kind in USER_KINDS
        self._nseq += 1
        self._queued -= count
        self._batch = Batch(self._nseq, items, count)
        return self._batch

    def sent(self) -> int:
        """The entry in flight is in the log: forget it; how many chat items it held."""
        batch, self._batch = self._batch, None
        return 0 if batch is None else batch.count

    def overflow(self) -> tuple[int, Lost | None] | None:
        """Once the buffer has room again (below half the limit) after dropping: the count
        of dropped items and the rooms that lost lines (None if no room line was lost).
        Counted from zero again afterwards. None while there is nothing to report."""
        if not self.dropped or 2 * self._queued >= self.limit:
            return None
        count, rooms = self.dropped, self._dropped_rooms
        self.dropped, self._dropped_rooms = 0, {}
        return count, Lost(tuple(rooms.items())) if rooms else None

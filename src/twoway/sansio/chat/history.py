"""Room history under one memory budget.

Each room replays its last lines to people who join it (``--history`` lines per room). That
alone bounds a room, not the server: a client per room filling it with long lines pinned
about 1.3 MB a room. :class:`HistoryStore` keeps every room's history under one budget
(``--history-bytes``): when a new line would pass it, the **oldest lines of the largest
histories go first**, so a few rooms flooded with long lines lose their past before a quiet
room loses its last word, and nothing is refused.

A line costs what it holds in memory, :func:`line_cost` (its ``sys.getsizeof``: the text
plus the string's header), so the budget is close to the memory really used. The store
never raises and does no I/O.

The largest history is found through a max-heap whose entries are upper bounds: a history
is pushed again only when it grows past the cost it was last pushed with (a room at its
``per_room`` lines mostly swaps a line for a similar one, and pushes nothing). An entry
popped for eviction is exact, or is pushed back with the true cost and the next one looked
at; since every other entry bounds its history from above, an exact top is the largest.
The heap is rebuilt when it grows past twice the live histories.

Every line appended gets the next *sequence number* of its history (``last`` is the newest
line's; lines only ever leave from the oldest end, so the kept lines are numbered
``last - len + 1 .. last`` with no gap) and every history carries an ``epoch``: the name of
this numbering, changed when a room's history is lost (see :mod:`.sequence`).
"""

from __future__ import annotations

import heapq
import itertools
import sys
from collections import deque
from collections.abc import Iterable, Iterator

__all__ = ["HistoryStore", "RoomHistory", "line_cost"]


_sizeof = sys.getsizeof


def line_cost(text: str) -> int:
    """The bytes one history line counts for against the budget."""
    return _sizeof(text)


class RoomHistory:
    """The last lines of one room, oldest first; changed only through its store.

    ``last`` is the sequence number of the newest line ever appended (0: none yet), in the
    numbering called ``epoch``."""

    __slots__ = ("cost", "epoch", "last", "lines", "pushed")

    def __init__(self, per_room: int, epoch: str = "", last: int = 0) -> None:
        self.lines: deque[str] = deque(maxlen=per_room)
        self.epoch = epoch
        self.last = last
        #: What these lines count for against the store's budget.
        self.cost = 0
        #: The cost of this history's newest heap entry (an upper bound of ``cost``).
        self.pushed = 0

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    @property
    def first(self) -> int:
        """The sequence number of the oldest line kept (``last + 1`` when none is)."""
        return self.last - len(self.lines) + 1


class HistoryStore:
    """Every room's history: at most ``per_room`` lines each, ``budget`` bytes in all
    (``None``: no global budget). ``used`` is what the kept lines cost."""

    __slots__ = ("_heap", "_live", "_seq", "budget", "per_room", "used")

    def __init__(self, per_room: int, budget: int | None) -> None:
        if per_room < 0:
            raise ValueError(f"history must be >= 0 (got {per_room})")
        if budget is not None and budget < 0:
            raise ValueError(f"history_bytes must be >= 0 or None (got {budget})")
        self.per_room = per_room
        self.budget = budget
        self.used = 0
        self._live: set[RoomHistory] = set()
        # (-cost, tie-break, history): a max-heap on cost, entries possibly stale.
        self._heap: list[tuple[int, int, RoomHistory]] = []
        self._seq = itertools.count()

    def new(self, epoch: str = "", last: int = 0) -> RoomHistory | None:
        """A new, empty history numbered ``epoch`` whose next line is ``last + 1``; None if
        history is off (``per_room`` 0)."""
        if not self.per_room:
            return None
        h = RoomHistory(self.per_room, epoch, last)
        self._live.add(h)
        return h

    def drop(self, h: RoomHistory | None) -> None:
        """``h`` is gone (its room was removed): its lines no longer count."""
        if h is None or h not in self._live:
            return
        self._live.discard(h)
        self.used -= h.cost
        h.cost = h.pushed = 0
        h.lines.clear()

    def append(self, h: RoomHistory, text: str) -> None:
        """Keep ``text`` as the newest line of ``h`` (its oldest may go, or other rooms'
        oldest lines if the budget is passed)."""
        lines = h.lines
        cost = _sizeof(text)
        if len(lines) == lines.maxlen:
            cost -= _sizeof(lines[0])
        lines.append(text)
        h.last += 1
        h.cost += cost
        self.used += cost
        if self.budget is not None and (h.cost > h.pushed or self.used > self.budget):
            self._grew(h)

    def prepend(self, h: RoomHistory, texts: Iterable[str]) -> None:
        """Put ``texts`` (oldest first) before the lines of ``h``, keeping the newest
        ``per_room`` lines in all. They take the numbers before the oldest kept line's
        (``last`` does not change)."""
        lines = deque([*texts, *h.lines], maxlen=self.per_room)
        cost = sum(map(_sizeof, lines))
        self.used += cost - h.cost
        h.lines, h.cost = lines, cost
        self._grew(h)

    def _grew(self, h: RoomHistory) -> None:
        """``h`` grew past its heap entry, or the budget is passed: push it, then evict."""
        budget = self.budget
        if budget is None:
            return
        heap = self._heap
        if h.cost > h.pushed:
            h.pushed = h.cost
            heapq.heappush(heap, (-h.cost, next(self._seq), h))
            if len(heap) > 2 * len(self._live) + 64:
                self._heap = heap = []
                for x in self._live:
                    x.pushed = x.cost
                    if x.cost:
                        heap.append((-x.cost, next(self._seq), x))
                heapq.heapify(heap)
        while self.used > budget and heap:
            neg, _, largest = heap[0]
            if largest not in self._live or -neg != largest.pushed:
                heapq.heappop(heap)  # superseded by a newer entry, or the room is gone
                continue
            if largest.cost != largest.pushed:  # smaller than it was: push the true cost
                largest.pushed = largest.cost
                if largest.cost:
                    heapq.heapreplace(heap, (-largest.cost, next(self._seq), largest))
                else:
                    heapq.heappop(heap)
                continue
            cost = _sizeof(largest.lines.popleft())  # the largest: its oldest line goes
            largest.cost -= cost
            largest.pushed = largest.cost
            self.used -= cost
            if largest.cost:
                heapq.heapreplace(heap, (-largest.cost, next(self._seq), largest))
            else:
                heapq.heappop(heap)

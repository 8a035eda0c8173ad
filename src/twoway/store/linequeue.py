"""What the event loop hands the store's writer thread: one list, appended to without a lock.

The chat says thousands of lines a second; each must reach the writer without the event loop
waiting, and without costing it (or the writer) a Python object per line. So the two threads
share one list. The event loop appends (:meth:`LineQueue.journal`, :meth:`LineQueue.record`);
the writer takes everything appended so far (:meth:`LineQueue.take`): a copy of the list,
then ``del`` of that many items from its front. Each of these is one list operation, atomic
under the GIL as CPython's list operations are (a free-threaded build locks the list for
each), so no lock is needed, the writer never sees half of what was appended, and nothing is
lost between a copy and its ``del``: the event loop only ever appends at the end.

**What is in the list.** A line that follows the last one appended — same room, same
numbering, the next number — is its text alone, a ``str`` already alive (the room's history
in memory holds it). Any other line is a header ``(room, epoch, seq)`` and then its text,
appended together. A record is ``(None, kind, key, JSON)`` (``""``: delete it). A busy room
therefore costs the event loop one ``append`` per line and keeps no object per line alive
(even the line's number is not kept: a new ``int`` per line, kept until the writer takes it,
costs more in the allocator than the rest of the append), and the writer gets the lines of a
batch with one ``"\\n".join`` when they continue the run of the batch before: it finds out
by trying (the join refuses anything but text).

**Waking the writer.** The list was empty before an append exactly when the writer took
everything since the last one: the event loop wakes the writer then, and only then (one
``SimpleQueue.put`` per commit, not per line).

**The backlog.** Every 16 lines the event loop adds up the characters appended since it last
looked; past ``max_backlog`` it stops appending lines (they are counted in ``lines_dropped``,
``on_behind`` is told once) until the writer took the list, and the next line it appends
carries a header (the numbers have a gap there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twoway.sansio.text import escape_controls

__all__ = ["LineQueue", "Run"]

#: Lines of one room in one numbering with consecutive numbers: ``(room, epoch, first seq,
#: count, texts joined by newlines)``.
Run = tuple[str, str, int, int, str]


class LineQueue:
    """The list the event loop appends to and the writer takes from (see the module
    docstring). ``wake`` wakes the writer; ``on_behind`` is called (by the event loop) the
    first time lines are not appended because the writer is ``max_backlog`` characters
    behind. The writer sets ``closed`` when it stops writing for good: lines are then no
    longer kept (nor counted)."""

    __slots__ = (
        "_backlog",
        "_counted",
        "_epoch",
        "_last",
        "_pending",
        "_refused_at",
        "_room",
        "_run",
        "_shared",
        "_takes",
        "closed",
        "lines_dropped",
        "max_backlog",
        "on_behind",
        "wake",
    )

    def __init__(
        self, wake: Callable[[], None], on_behind: Callable[[], None], max_backlog: int
    ) -> None:
        self.wake = wake
        self.on_behind = on_behind
        self.max_backlog = max_backlog
        #: Lines not appended because the writer was too far behind.
        self.lines_dropped = 0
        #: Set by the writer when it stops writing (a failure): read by the event loop.
        self.closed = False
        self._shared: list[Any] = []
        # Where the event loop appends lines: the shared list, or (while not appending) a
        # list nobody takes, emptied as its lines are counted.
        self._pending = self._shared
        # The last line appended (event loop): a line that follows it needs no header.
        self._room: str | None = None
        self._epoch: str | None = None
        self._last = 0
        # Characters appended since the writer last took the list, and items counted.
        self._backlog = 0
        self._counted = 0
        # How many times the writer took the list (the writer writes it), and that count
        # when the event loop stopped appending lines.
        self._takes = 0
        self._refused_at = 0
        # The run the writer's last batch ended with (the writer's): (room, epoch, next seq).
        self._run: tuple[str, str, int] | None = None

    # -- the event loop --------------------------------------------------------------------

    def journal(self, room: str, epoch: str, seq: int, text: str) -> None:
        """Line ``seq`` of ``room`` in numbering ``epoch`` (a ``Journal``)."""
        pending = self._pending
        if seq - 1 == self._last and room is self._room and epoch is self._epoch:
            pending.append(text)
            self._last = seq
            if len(pending) & 15 == 1:
                self._check(pending, 1)
            return
        pending += ((room, epoch, seq), text)
        self._room = room
        self._epoch = epoch
        self._last = seq
        self._check(pending, 2)

    def record(self, kind: str, key: str, value: str) -> None:
        """Create or replace (``value``: JSON) or delete (``""``) a record. Appended even
        while lines are not: records are few and small."""
        shared = self._shared
        shared.append((None, kind, key, value))
        if len(shared) == 1:
            self._woken()

    def _woken(self) -> None:
        # The shared list was empty: the writer took everything, and may be asleep.
        self._backlog = 0
        self._counted = 0
        self.wake()

    def _check(self, pending: list[Any], appended: int) -> None:
        """After a header, and every 16 lines: wake the writer if the list was empty before
        these ``appended`` items, and measure the backlog."""
        n = len(pending)
        if pending is not self._shared:  # not appending: count what was not written
            if not self.closed:
                self.lines_dropped += sum(type(item) is str for item in pending)
            pending.clear()
            if not self.closed and self._takes != self._refused_at:
                self._pending = self._shared  # the writer took the backlog: append again
                self._room = None  # the next line appended says where it is
            return
        if n == appended:
            self._woken()
        # Texts, and the header tuples' and records' lengths (3 or 4): close enough.
        self._backlog += sum(map(len, pending[self._counted :]))
        self._counted = n
        if not self.closed and self._backlog <= self.max_backlog:
            return
        self._pending = []
        self._room = None
        self._refused_at = self._takes
        if not self.closed and not self.lines_dropped:
            self.on_behind()

    # -- the writer ------------------------------------------------------------------------

    def take(self) -> tuple[list[Run], list[tuple[str, str, str]]]:
        """Everything appended since the last take: the lines as runs (in the order said
        within each room) and the records ``(kind, key, JSON or "")`` in order. Called by
        one thread only (the writer, or at close the thread that stops it)."""
        shared = self._shared
        batch = shared[:]
        del shared[: len(batch)]
        self._takes += 1
        if not batch:
            return [], []
        run = self._run
        if run is not None:
            try:
                texts = "\n".join(batch)  # only texts: they go on with the last run
            except TypeError:
                pass
            else:
                room, epoch, first = run
                self._run = (room, epoch, first + len(batch))
                return [(room, epoch, first, len(batch), _checked(texts, batch))], []
        return self._walk(batch)

    def _walk(self, batch: list[Any]) -> tuple[list[Run], list[tuple[str, str, str]]]:
        """:meth:`take` item by item: a batch with headers or records."""
        records: list[tuple[str, str, str]] = []
        # Runs by room while they can go on: [room, epoch, first seq, texts].
        runs: list[list[Any]] = []
        open_runs: dict[str, list[Any]] = {}
        current: list[Any] | None = None
        if self._run is not None:
            room, epoch, first = self._run
            current = open_runs[room] = [room, epoch, first, []]
            runs.append(current)
        for item in batch:
            if type(item) is str:
                assert current is not None, "a line without a header"
                current[3].append(item)
            elif item[0] is None:
                records.append(item[1:])
            else:
                room, epoch, seq = item
                current = open_runs.get(room)
                if current is None or current[1] != epoch or current[2] + len(current[3]) != seq:
                    current = open_runs[room] = [room, epoch, seq, []]
                    runs.append(current)
        if current is not None:
            self._run = (current[0], current[1], current[2] + len(current[3]))
        out = [
            (room, epoch, first, len(texts), _checked("\n".join(texts), texts))
            for room, epoch, first, texts in runs
            if texts
        ]
        return out, records


def _checked(joined: str, texts: list[str]) -> str:
    """``joined`` (``texts`` joined by newlines), unless a text holds a newline: then the
    texts escaped as the chat escapes what it shows (no chat line ever holds one)."""
    if joined.count("\n") == len(texts) - 1:
        return joined
    return "\n".join(map(escape_controls, texts))

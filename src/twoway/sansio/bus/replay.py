"""What a client missed, read from the shared log: resume on another server.

A client's session left server *A* (node ``node``, its connection ``cid``) while A had read
the log up to entry ``P``. What the client had then is exactly:

* every room line in the log up to ``P`` (A delivered them as it read them), and
* A's own room lines published after ``P`` but before A's :class:`~twoway.sansio.chat.Gone`
  for ``cid`` (said on A, so delivered at once, before the departure that A publishes after
  them: A's items reach the log in the order A made them).

So what it missed in its room is every line of that room after ``P`` except A's lines before
that ``Gone``, in log order — the one order every server agrees on. :class:`StreamReplay`
is fed the log's entries after ``P`` (page by page) and keeps those lines, at most
``limit``. The log's room numbers (``q``) tell how many lines are no longer in the log when
it was trimmed past ``P``.

Pure: entries in, lines out.
"""

from __future__ import annotations

from collections.abc import Iterable

from twoway.errors import BusProtocolError
from twoway.sansio.bus.codec import decode_entry
from twoway.sansio.bus.inbox import RawEntry
from twoway.sansio.chat import NOTICE, Gone, Said
from twoway.sansio.text import escape_controls

__all__ = ["StreamReplay"]


class StreamReplay:
    """The lines of ``room`` a client of ``node`` (connection ``cid``) missed after it left,
    from the log entries after the position its server had read (see the module docstring).

    ``limit``: lines kept at most (the rest are counted in :attr:`more`). ``seq``: the
    room's number of the last line the server had read when the client left (None:
    unknown), and ``trimmed``: the log no longer starts before that position; together
    they give :attr:`not_kept`.
    """

    __slots__ = (
        "_departed",
        "_first_seen",
        "cid",
        "last_id",
        "limit",
        "lines",
        "more",
        "node",
        "not_kept",
        "room",
        "seq",
        "skipped",
        "trimmed",
    )

    def __init__(
        self,
        node: int,
        cid: int,
        room: str,
        *,
        limit: int,
        seq: int | None = None,
        trimmed: bool = False,
    ) -> None:
        self.node = node
        self.cid = cid
        self.room = room
        self.limit = limit
        self.seq = seq
        self.trimmed = trimmed
        #: The missed lines, oldest first (at most ``limit``).
        self.lines: list[str] = []
        #: Missed lines past ``limit``.
        self.more = 0
        #: Lines of the room that the log no longer holds (it was trimmed past the position).
        self.not_kept = 0
        #: Entries that are not bus data (skipped).
        self.skipped = 0
        #: The id of the last entry fed (where to read on from).
        self.last_id: bytes | None = None
        self._departed = False  # the node's Gone for cid was seen
        self._first_seen = False

    def feed(self, entries: Iterable[RawEntry]) -> None:
        """Take the next entries of the log, in log order."""
        room, node, cid = self.room, self.node, self.cid
        for entry_id, fields in entries:
            self.last_id = entry_id
            try:
                entry = decode_entry(fields)
            except BusProtocolError:
                self.skipped += 1
                continue
            if not self._first_seen:
                for r, first, _ in entry.runs:
                    if r == room:
                        self._first_seen = True
                        if self.trimmed and self.seq is not None:
                            self.not_kept = max(first - self.seq - 1, 0)
                        break
            mine = entry.node == node
            for item in entry.items:
                kind = type(item)
                if kind is Said:
                    if item.room != room or (mine and not self._departed):  # type: ignore[union-attr]
                        continue
                    text = item.text  # type: ignore[union-attr]
                    if text.startswith(NOTICE):  # never a server notice (as on the bus)
                        continue
                    if len(self.lines) < self.limit:
                        self.lines.append(escape_controls(text))
                    else:
                        self.more += 1
                elif mine and kind is Gone and item.cid == cid:  # type: ignore[union-attr]
                    self._departed = True

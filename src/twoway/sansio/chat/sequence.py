"""Replay accounting: which kept lines answer a request, and how many are no longer kept.

Every room line has a *sequence number* (1, 2, 3... per room) within an *epoch* (the name of
that numbering; it changes when the room's history is lost: a server restarted with
``--ephemeral``, a room that emptied and went). A client that knows the number of the last
line it saw asks for the lines after it (``/since SEQ``, a resume); the server keeps the
lines ``first .. last`` (:class:`~twoway.sansio.chat.history.RoomHistory`) and answers with
:func:`select`: the lines it still has, and a count of those it no longer has, so a reply
never says "0 missed" when lines were dropped. Pure arithmetic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_REPLAY", "Selection", "select", "summary"]

#: Lines replayed by one request (``/since``, ``/history``, a resume): enough for two minutes
#: of a busy room, small enough that one reply cannot flood a client's queue (1000 lines of
#: 200 bytes are 200 KB, under the default ``--max-queued`` of 256 KiB).
MAX_REPLAY = 1000


@dataclass(frozen=True, slots=True)
class Selection:
    """The answer to "the lines after ``after``", over kept lines numbered ``first..last``.

    ``start`` is the sequence number of the first line to replay and ``count`` how many
    (consecutive); ``not_kept`` the lines after ``after`` that are no longer kept (older
    than ``first``); ``more`` the kept lines left for another request (past the limit).
    ``not_kept + count + more`` is always every line after ``after`` up to ``last``.
    """

    start: int
    count: int
    not_kept: int
    more: int


def select(first: int, last: int, after: int, limit: int = MAX_REPLAY) -> Selection:
    """The lines after sequence number ``after`` when lines ``first..last`` are kept
    (``first == last + 1``: none is), at most ``limit`` of them, oldest first.

    ``after`` below 0 counts as 0 (every line ever said); at or past ``last``, nothing is
    missing. Raises :class:`ValueError` if ``first`` is not in ``1..last + 1`` or ``limit``
    is negative (a bug in the caller).
    """
    if not 1 <= first <= last + 1:
        raise ValueError(f"kept lines must be numbered 1..{last} (got first {first})")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (got {limit})")
    after = max(after, 0)
    if after >= last:
        return Selection(last + 1, 0, 0, 0)
    start = max(after + 1, first)
    not_kept = start - (after + 1)
    available = last - start + 1
    count = min(available, limit)
    return Selection(start, count, not_kept, available - count)


def summary(replayed: int, not_kept: int) -> str:
    """The line that ends every replay: ``replayed 37 lines; 0 missed`` or ``replayed 1000
    lines; 212 no longer kept`` (without the ``*** `` notice prefix)."""
    if not_kept:
        return f"replayed {replayed} lines; {not_kept} no longer kept"
    return f"replayed {replayed} lines; 0 missed"

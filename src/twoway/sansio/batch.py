"""The lines of one loop iteration sent to a group of members (a chat room), and who gets
which of them.

A chat server does not write each room line to each member as it is said: it gathers a
room's lines of one event-loop iteration in a :class:`RoomBatch` (the net layer's
:class:`~twoway.net.groups.Group` does) and writes each member all of its lines at once,
at the end of the iteration (a hundred lines to a hundred members cost a hundred writes,
not ten thousand). Membership changes inside the batch, and the batch
itself keeps each member's lines exact, so nothing needs to be flushed early:

* a member who joins during the batch gets only the lines queued after it joined
  (:meth:`RoomBatch.joined`);
* a member who leaves, or is written to directly (an answer to a command, a private
  message, a notice before a disconnection), first takes what was queued for it so far
  (:meth:`RoomBatch.take`), so its lines keep their order;
* a line is never sent back to the member it excludes (its author).

Each line is encoded once per line ending in use (LF, or CRLF for the clients that send it);
a member's share is joined from those pieces, and the members who get the whole batch share
one ``bytes`` object. A burst of N joins in one iteration therefore costs N small joins of
the later join lines, not N flushes of the room to every member.
"""

from __future__ import annotations

__all__ = ["RoomBatch"]


class RoomBatch:
    """The lines queued for one room during one loop iteration; see the module docstring.

    Members are client ids. Only :meth:`take` and :meth:`joined` change who gets what; the
    caller decides who is a member when it delivers (:meth:`share`).
    """

    __slots__ = ("_full", "_lf", "_other", "_own", "chars", "excludes", "start", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        #: For each line, the member it is not sent to (its author), or None.
        self.excludes: list[int | None] = []
        #: Members that get the lines from an index on (joined or took lines meanwhile).
        self.start: dict[int, int] = {}
        #: Characters queued: what bounds the memory of the batch.
        self.chars = 0
        self._lf: list[bytes] = []
        self._other: dict[bytes, list[bytes]] = {}  # the lines with another ending (CRLF)
        self._full: dict[bytes, bytes] = {}
        self._own: dict[int, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, exclude: int | None) -> None:
        """Queue ``text`` for every member but ``exclude``."""
        self.texts.append(text)
        self.excludes.append(exclude)
        self._lf.append((text + "\n").encode())
        self.chars += len(text)
        if self._full:
            self._full.clear()
        self._own = None

    def joined(self, cid: int) -> None:
        """``cid`` entered the room: none of the lines queued so far are for it."""
        self.start[cid] = len(self.texts)

    def take(self, cid: int, newline: bytes) -> tuple[bytes, int]:
        """The lines queued for ``cid`` that it has not had yet, encoded with ``newline``,
        and how many; from now on it gets only later lines. Called before ``cid`` leaves
        the room or is written to directly."""
        n = len(self.texts)
        start = self.start.get(cid, 0)
        if start >= n:
            return b"", 0
        self.start[cid] = n
        own = [i for i in range(start, n) if self.excludes[i] == cid]
        return self._join(start, own, newline)

    def plain(self) -> tuple[bytes, frozenset[int]]:
        """The whole batch with LF endings, and the members who get something else (they
        joined or took lines during the batch, or authored a line): for the fan-out loop,
        so that every other LF member costs a set lookup instead of a :meth:`share`."""
        own_lines = self._own_lines()
        full = self._full.get(b"\n")
        if full is None:
            full = self._full[b"\n"] = b"".join(self._lf)
        return full, frozenset(self.start).union(own_lines)

    def share(self, cid: int, newline: bytes) -> tuple[bytes, int]:
        """What member ``cid`` gets when the batch is delivered, encoded with ``newline``,
        and how many lines that is."""
        start = self.start.get(cid, 0)
        own = self._own_lines().get(cid)
        if start == 0 and own is None:
            full = self._full.get(newline)
            if full is None:
                full = self._full[newline] = b"".join(self._pieces(newline))
            return full, len(self.texts)
        if start >= len(self.texts):
            return b"", 0
        return self._join(start, [i for i in own if i >= start] if own else [], newline)

    def _own_lines(self) -> dict[int, list[int]]:
        """Each author's line indexes (built once per batch, when first delivered)."""
        own_lines = self._own
        if own_lines is None:
            own_lines = self._own = {}
            for i, ex in enumerate(self.excludes):
                if ex is not None:
                    own_lines.setdefault(ex, []).append(i)
        return own_lines

    def _join(self, start: int, own: list[int], newline: bytes) -> tuple[bytes, int]:
        """Lines ``start`` to the end but those at the indexes ``own`` (sorted), joined."""
        pieces = self._pieces(newline)
        if not own:
            return b"".join(pieces[start:]), len(pieces) - start
        parts: list[bytes] = []
        at = start
        for i in own:
            parts += pieces[at:i]
            at = i + 1
        parts += pieces[at:]
        return b"".join(parts), len(parts)

    def _pieces(self, newline: bytes) -> list[bytes]:
        if newline == b"\n":
            return self._lf
        pieces = self._other.get(newline)
        if pieces is None:
            pieces = self._other[newline] = []
        if len(pieces) < len(self.texts):  # encoded on demand: few clients send CRLF
            end = newline.decode()
            pieces += [(t + end).encode() for t in self.texts[len(pieces) :]]
        return pieces

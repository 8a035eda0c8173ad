"""Write groups: connections that share their writes (a chat room).

A line sent to a :class:`Group` is not written to each member as it is sent: the group
gathers its lines of the loop iteration in a :class:`~twoway.sansio.batch.RoomBatch`, and
the process's coalescer (:mod:`twoway.net.coalesce`) has each member get its share in one
write at the end of the iteration, in the same flush as the members' own replies. The order
each member sees is the order of the calls, by construction, with nothing flushed early:

* a member written to directly takes first what its group queued for it: the connection's
  ``write`` does that, since it knows its group (:attr:`Member.group`);
* a member that leaves takes what was queued for it before it goes (:meth:`Group.remove`);
* a member that joins gets only the lines sent after it joined (:meth:`Group.add`);
* a line is never sent to the member it excludes (its author).

A connection is in at most one group at a time. Members are keyed by an ``int`` the owner
chooses (the chat's client id), so a line can exclude its author without a look-up. This is
the chat's hot path: each line costs one :meth:`Group.send`, each iteration one write per
member; a member that is already lost gets nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from twoway.net.coalesce import BATCH_LIMIT, coalescer
from twoway.sansio.batch import RoomBatch

__all__ = ["Group", "Member", "Tally"]

_co = coalescer


class Member(Protocol):
    """What a group needs of a connection (:class:`~twoway.net.conn.Conn` has it all)."""

    #: The group the connection is in (set by :meth:`Group.add`, cleared by
    #: :meth:`Group.remove`); its ``write`` takes the group's lines for it first.
    group: Group | None
    #: Its key in that group.
    group_key: int
    transport: asyncio.Transport | None

    @property
    def newline(self) -> bytes:
        """The line ending the peer uses."""
        ...

    @property
    def is_closing(self) -> bool:
        """True once closing or gone."""
        ...

    def write(self, data: bytes) -> Awaitable[None]:
        """Queue ``data`` for the peer."""
        ...


class Tally(Protocol):
    """Where a group counts the lines it delivered (the chat's counters)."""

    lines_out: int


class Group:
    """Connections that share their writes; see the module docstring.

    ``tally.lines_out``, if a tally is given, counts the lines delivered to members. ``name``
    is for the logs. A broadcast service in a few lines::

        class Broadcast(twoway.LineService):
            def __init__(self) -> None:
                self.everyone = twoway.Group("everyone")
                self.ids = itertools.count()

            def on_connect(self, conn: twoway.Connection) -> None:
                self.everyone.add(next(self.ids), conn)

            def on_line(self, conn: twoway.Connection, line: str) -> None:
                self.everyone.send(f"{conn.peer}: {line}", exclude=conn.group_key)

            def on_close(self, conn: twoway.Connection, exc: BaseException | None) -> None:
                self.everyone.remove(conn.group_key)
    """

    __slots__ = ("batch", "delivering", "members", "name", "tally")

    def __init__(self, name: str, tally: Tally | None = None) -> None:
        self.name = name
        self.tally = tally
        #: The members by key.
        self.members: dict[int, Member] = {}
        #: The lines of this loop iteration, or None when nothing is queued: what a
        #: member's ``write`` tests before taking its share.
        self.batch: RoomBatch | None = None
        #: True while :meth:`deliver` iterates :attr:`members`: a change meanwhile (a write
        #: may find a member too slow, and a service take it out there and then) goes to a
        #: copy, so the delivery goes on over the members of the moment the lines were sent.
        self.delivering = False

    def __len__(self) -> int:
        return len(self.members)

    def add(self, key: int, conn: Member) -> None:
        """``conn`` joins as ``key`` (leaving its group, if any, first): it gets the lines
        sent from now on."""
        if conn.group is not None:
            conn.group.remove(conn.group_key)
        if self.delivering:
            self._copy_members()
        self.members[key] = conn
        conn.group = self
        conn.group_key = key
        if self.batch is not None:
            self.batch.joined(key)

    def remove(self, key: int) -> None:
        """Member ``key`` leaves: it gets what was queued for it before it goes."""
        if self.delivering:
            self._copy_members()
        conn = self.members.pop(key, None)
        if conn is None:
            return
        conn.group = None  # before writing: its write must not come back here
        if self.batch is not None:
            data = self.take(key, conn.newline)
            if data and not _gone(conn):
                conn.write(data)

    def send(self, text: str, exclude: int | None = None, *, soon: bool = True) -> None:
        """Queue the line ``text`` (without its ending) for every member but ``exclude``.
        It goes out at the end of the loop iteration; with ``soon=False`` (a join or a
        departure) a little later, unless another line goes out first (see
        :mod:`twoway.net.coalesce`)."""
        batch = self.batch
        co = _co
        if batch is None:
            batch = self.batch = RoomBatch()
            co.group_queued(self, soon)
        elif soon and not co.groups_due:
            co.wake_groups(soon)
        batch.add(text, exclude)
        size = co.group_chars = co.group_chars + len(text)
        if size > BATCH_LIMIT:
            co.deliver_groups()  # uvloop may read a lot in one iteration: bound the batch

    def take(self, key: int, newline: bytes) -> bytes:
        """The lines queued for member ``key`` that it has not had, encoded with
        ``newline``; from now on it gets only later lines. A connection's ``write`` calls
        this before writing anything else, so the member's lines keep their order."""
        batch = self.batch
        if batch is None:
            return b""
        data, count = batch.take(key, newline)
        if self.tally is not None:
            self.tally.lines_out += count
        return data

    def discard(self) -> None:
        """Forget the queued lines: the coalescer's event loop was closed before they went
        out (see :meth:`Coalescer.adopt <twoway.net.coalesce.Coalescer.adopt>`)."""
        self.batch = None

    def deliver(self) -> None:
        """Write each member its share of the queued lines, one write each (called by the
        coalescer)."""
        batch = self.batch
        if batch is None:
            return
        self.batch = None  # first: the members' writes below must not take from it
        members = self.members
        if not members:
            return
        full, special = batch.plain()
        lines = len(batch)
        sent = 0
        self.delivering = True
        for key, conn in members.items():
            transport = conn.transport
            if transport is None or transport.is_closing():
                # Lost (reset, say) but not yet told: a write would only fail, and on
                # asyncio log a warning. A burst of resets would make that n squared.
                continue
            newline = conn.newline
            if newline == b"\n" and key not in special:
                conn.write(full)  # the common case: the whole batch, one shared object
                sent += lines
                continue
            data, count = batch.share(key, newline)
            if count:
                conn.write(data)
                sent += count
        self.delivering = False
        if self.tally is not None:
            self.tally.lines_out += sent

    def _copy_members(self) -> None:
        self.members = dict(self.members)  # deliver() goes on over the one it holds
        self.delivering = False


def _gone(conn: Member) -> bool:
    transport = conn.transport
    return transport is None or transport.is_closing() or conn.is_closing

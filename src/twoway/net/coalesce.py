"""The write coalescer: one per process, for a peer's replies and for group fan-out alike.

Two kinds of writes wait for the end of the loop iteration, and the coalescer delivers both:

* **replies**: while a service callback runs (:attr:`Coalescer.batching`), a connection's
  first reply to its own peer (:attr:`Coalescer.owner`) goes straight to the transport and
  every other write is queued on its connection. The callback's own peer is flushed at the
  end of the callback, so its write backpressure pauses its reading before more is read;
  every other connection written to is flushed once, at the end of the loop iteration: a
  peer written to by ten chat senders in one iteration gets one system call.
* **group lines** (:class:`~twoway.net.groups.Group`, a chat room): a line sent to a group
  waits in the group's batch; at the end of the iteration each member gets its share in one
  write. Lines of joins and departures alone (``soon=False``) wait a few milliseconds more to
  be gathered, since uvloop admits one connection per iteration.

:meth:`Coalescer.flush` delivers the groups first, then the queued replies: a group's share
written to a connection with queued replies joins that queue, so the connection still gets one
write. The order each peer sees is the order of the calls by construction: a connection's
``write`` first takes what its group queued for it (see :mod:`twoway.net.groups`).

One event loop per process is assumed: the state is one module-level object, since a
thread-local would cost on every write. It is a slotted object, not module globals: the
framed connection classes read and write it from another module, and a slot of an object
the module holds is cheaper to reach than another module's global.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any, Protocol

__all__ = ["BATCH_LIMIT", "READY", "Coalescer", "Flushable", "Queued", "coalescer"]

#: Characters of group lines gathered before they are delivered early: a bound on the memory
#: one loop iteration can queue (uvloop may read many times per iteration).
BATCH_LIMIT = 64 * 1024
# Lines of joins and departures alone are delivered after a short delay rather than at the
# end of the loop iteration: uvloop admits one connection per iteration, so a burst of N joins
# delivered per iteration would write N times to every member. The delay is three times what
# the last delivery took (so delivering presence costs at most a quarter of the loop), within
# these bounds in seconds; any other group line delivers at once, with what waited before it.
_PRESENCE_DELAY_MIN = 0.005
_PRESENCE_DELAY_MAX = 0.25


class Queued(Protocol):
    """What the coalescer needs of a connection: its queued writes and how to flush them."""

    queued: list[bytes] | None

    def flush_queued(self) -> None:
        """Hand the queued writes to the transport as one write."""


class Flushable(Protocol):
    """What the coalescer needs of a group: delivering its batch."""

    def deliver(self) -> None:
        """Write each member its share of the lines queued, and empty the batch."""

    def discard(self) -> None:
        """Forget the lines queued (their event loop is gone)."""


class Coalescer:
    """The process's write coalescer; see the module docstring."""

    __slots__ = (
        "batching",
        "dirty",
        "group_chars",
        "groups",
        "groups_due",
        "loop",
        "owner",
        "presence_delay",
        "presence_timer",
        "scheduled",
    )

    def __init__(self) -> None:
        #: True while a service callback runs.
        self.batching = False
        #: The connection whose callback runs, until its first reply was written.
        self.owner: object | None = None
        #: Connections with queued writes, flushed at the end of the loop iteration.
        self.dirty: list[Queued] = []
        #: Whether :meth:`flush` is scheduled on :attr:`loop`.
        self.scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Groups with lines queued, delivered by :meth:`deliver_groups`.
        self.groups: list[Flushable] = []
        #: Characters of the lines queued in :attr:`groups`.
        self.group_chars = 0
        #: Whether the next :meth:`flush` delivers the groups (a line that is not presence).
        self.groups_due = False
        self.presence_timer: asyncio.TimerHandle | None = None
        self.presence_delay = _PRESENCE_DELAY_MIN

    def end(self, conn: Queued) -> None:
        """The end of a service callback (the epilogue of every ``data_received`` path):
        ``conn``'s replies go out now, the others' at the end of the loop iteration."""
        self.batching = False
        self.owner = None
        if conn.queued is not None:
            conn.flush_queued()
        if self.dirty:
            self.schedule()

    def schedule(self) -> None:
        """Have :meth:`flush` run at the end of this loop iteration (once)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.adopt(loop)
        elif self.scheduled:
            return
        self.scheduled = True
        # Runs after every other callback of this loop iteration.
        loop.call_soon(self.flush)

    def adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Work on ``loop`` from now on. What was scheduled on an earlier loop, since
        closed (tests run one loop after another), never ran: forget it, or it would stop
        this loop's flushes from being scheduled."""
        self.loop = loop
        self.scheduled = False
        self.groups_due = False
        self.presence_timer = None
        for group in self.groups:
            group.discard()  # or the group would never be queued again
        self.groups = []
        self.group_chars = 0

    def group_queued(self, group: Flushable, soon: bool) -> None:
        """``group`` has its first line of the iteration queued: deliver it at the end of
        the iteration (``soon``), or after the presence delay."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.adopt(loop)
        self.groups.append(group)
        self.wake_groups(soon)

    def wake_groups(self, soon: bool) -> None:
        """A group line was queued: make sure the groups are delivered (see the module
        docstring); ``soon`` is False for lines of joins and departures alone."""
        if soon:
            if not self.groups_due:
                self.schedule()
                self.groups_due = True
        elif self.presence_timer is None and not self.groups_due:
            loop = self.loop if self.loop is not None else asyncio.get_running_loop()
            self.presence_timer = loop.call_later(self.presence_delay, self.deliver_groups)

    def flush(self) -> None:
        """Deliver the groups' lines (if due) and every connection's queued writes."""
        self.scheduled = False
        if self.groups_due:
            self.deliver_groups()
        dirty = self.dirty
        for conn in dirty:
            if conn.queued is not None:
                conn.flush_queued()
        dirty.clear()

    def deliver_groups(self) -> None:
        """Deliver every group's queued lines now: at the end of the iteration, after the
        presence delay, or early when the batch passes :data:`BATCH_LIMIT`."""
        self.groups_due = False
        if self.presence_timer is not None:
            self.presence_timer.cancel()
            self.presence_timer = None
        groups = self.groups
        if not groups:
            return
        self.groups = []
        self.group_chars = 0
        loop = self.loop if self.loop is not None else asyncio.get_running_loop()
        started = loop.time()
        for group in groups:
            group.deliver()
        took = 3 * (loop.time() - started)
        self.presence_delay = min(max(took, _PRESENCE_DELAY_MIN), _PRESENCE_DELAY_MAX)


#: The one coalescer of the process.
coalescer = Coalescer()


class _Ready:
    """An awaitable that is already done: what ``write()`` returns when no drain is needed."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


#: What a write returns when the caller need not wait for the peer to read.
READY = _Ready()

"""Whose line a shared ``--lines`` file is writing: lines from different connections never
land inside one another, and no connection keeps the file for long."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["LineTurn", "Writer"]


class Writer(Protocol):
    """What a turn needs of a connection's upload (a :class:`~twoway.services.dump.sink.
    Sink`)."""

    @property
    def wants_turn(self) -> bool:
        """Still has something to write."""
        ...

    def resume(self) -> None:
        """The file is free: write what waited."""
        ...

    def end_line(self) -> None:
        """The turn's time is up: end the open line with a newline at the next write."""
        ...


class LineTurn:
    """Whose line is being written to a shared file with ``--lines``.

    A line longer than ``buffer_high`` goes to the file in pieces; from its first piece to
    its end the file is that connection's turn, and the others' writes wait (their buffers
    bounded: reading pauses above ``buffer_high``), so no line ever lands inside another.
    A turn lasts at most ``hold`` seconds: then the line is ended with a newline where it
    stands (the rest of it follows as a line of its own), so one stalled client cannot
    hold every other upload forever.
    """

    __slots__ = ("hold", "owner", "timer", "waiters")

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.owner: Writer | None = None
        self.waiters: list[Writer] = []
        self.timer: asyncio.TimerHandle | None = None

    def blocks(self, sink: Writer) -> bool:
        """True if it is another sink's turn: ``sink`` is queued and woken afterwards."""
        if self.owner is None or self.owner is sink:
            return False
        if sink not in self.waiters:
            self.waiters.append(sink)
        return True

    def take(self, sink: Writer) -> None:
        """``sink`` wrote a piece of a line: the file is its turn until :meth:`release`."""
        if self.owner is None:
            self.owner = sink
            self.timer = asyncio.get_running_loop().call_later(self.hold, sink.end_line)

    def release(self, sink: Writer) -> None:
        """``sink``'s line ended (or the sink is gone): wake the others in order."""
        if self.owner is not sink:
            return
        self.owner = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        waiters, self.waiters = self.waiters, []
        for i, waiter in enumerate(waiters):
            if self.owner is not None:  # a waiter's own long line took the turn
                self.waiters.extend(w for w in waiters[i:] if w.wants_turn)
                return
            waiter.resume()

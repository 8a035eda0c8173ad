"""The write coalescer: replies written during service callbacks go out once per peer.

While a service callback runs (:attr:`Coalescer.batching`), a connection's first reply to
its own peer (:attr:`Coalescer.owner`) goes straight to the transport and every other write
is queued on its connection. The callback's own peer is flushed at the end of the callback,
so its write backpressure pauses its reading before more is read; every other connection
written to is flushed once, by one ``call_soon`` at the end of the loop iteration: a peer
written to by ten chat senders in one iteration gets one system call.

One event loop per process is assumed: the state is one module-level object, since a
thread-local would cost on every write. It is a slotted object, not module globals: the
framed connection classes read and write it from another module, and a slot of an object
the module holds is cheaper to reach than another module's global.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any, Protocol

__all__ = ["READY", "Coalescer", "Queued", "coalescer"]


class Queued(Protocol):
    """What the coalescer needs of a connection: its queued writes and how to flush them."""

    queued: list[bytes] | None

    def flush_queued(self) -> None:
        """Hand the queued writes to the transport as one write."""


class Coalescer:
    """The process's write coalescer; see the module docstring."""

    __slots__ = ("batching", "dirty", "owner", "scheduled")

    def __init__(self) -> None:
        #: True while a service callback runs.
        self.batching = False
        #: The connection whose callback runs, until its first reply was written.
        self.owner: object | None = None
        #: Connections with queued writes, flushed at the end of the loop iteration.
        self.dirty: list[Queued] = []
        self.scheduled = False

    def end(self, conn: Queued) -> None:
        """The end of a service callback (the epilogue of every ``data_received`` path):
        ``conn``'s replies go out now, the others' at the end of the loop iteration."""
        self.batching = False
        self.owner = None
        if conn.queued is not None:
            conn.flush_queued()
        if self.dirty and not self.scheduled:
            self.scheduled = True
            # Runs after every other callback of this loop iteration.
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Flush every connection written to during this loop iteration."""
        self.scheduled = False
        dirty = self.dirty
        for conn in dirty:
            if conn.queued is not None:
                conn.flush_queued()
        dirty.clear()


#: The one coalescer of the process.
coalescer = Coalescer()


class _Ready:
    """An awaitable that is already done: what ``write()`` returns when no drain is needed."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


#: What a write returns when the caller need not wait for the peer to read.
READY = _Ready()

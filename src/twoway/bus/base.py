"""The contract between a chat server and its bus (:class:`Bus`, :class:`BusListener`) and
the bus of a single process (:class:`LocalBus`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twoway.sansio.bus import BusEvent, Hello, Item

__all__ = ["Bus", "BusListener", "LocalBus"]


class BusListener(Protocol):
    """What a bus calls back, always from the event loop and never from inside
    :meth:`Bus.publish`. Exceptions escaping these methods are logged by the bus, which keeps
    running."""

    def bus_events(self, events: Sequence[BusEvent]) -> None:
        """Things other nodes published (deduplicated, in each node's order), and gaps."""

    def bus_snapshot(self) -> Hello:
        """The complete state of this node, for the others (asked on (re)connection)."""


class Bus(Protocol):
    """Fan-out to the other nodes.

    ``node`` is this node's number, fixed once :meth:`start` returned (0 for a local bus).
    ``cluster`` says whether there can be other nodes at all (the chat core then returns the
    effects to publish).
    """

    node: int
    cluster: bool

    async def start(self, listener: BusListener) -> None:
        """Attach and start delivering to ``listener``. Never fails because the transport is
        unreachable: it keeps retrying in the background. Call once."""

    def publish(self, item: Item) -> None:
        """Queue ``item`` for the other nodes. Never blocks, never raises; order is kept."""

    async def reserve(self, name: str, count: int) -> int | None:
        """Reserve ``count`` numbers of the counter ``name`` shared by every node; the first
        of them (the others follow it), or None if the bus cannot now (unreachable, stopped,
        or no other node to share with). Bounded in time; never raises."""

    async def stop(self) -> None:
        """Flush what is queued (bounded in time), say goodbye and detach. Idempotent."""


class LocalBus:
    """The bus of a single process: there is nobody else to tell, so it does nothing."""

    node = 0
    cluster = False

    async def start(self, listener: BusListener) -> None:
        """Nothing to start."""

    def publish(self, item: Item) -> None:
        """Nothing to publish to."""

    async def reserve(self, name: str, count: int) -> int | None:
        """Nobody to share a counter with: None."""
        return None

    async def stop(self) -> None:
        """Nothing to stop."""

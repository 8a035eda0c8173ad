"""Fan-out between chat servers: the :class:`Bus` interface and its two implementations.

A chat server (a *node*) delivers to its own clients itself, at once; the bus only tells the
*other* nodes what they must know (see :mod:`twoway.sansio.busproto` for the items). Local chat
never waits for the bus: :meth:`Bus.publish` queues and returns.

* :class:`LocalBus` — one process, nobody to tell: every call is a no-op (the default).
* :class:`~twoway.bus.redis.RedisBus` — every node attached to one Redis, through one stream
  (``--bus redis://HOST:PORT/DB``); ``redis`` is imported only then.

What comes back from the other nodes is handed to a :class:`BusListener` (the chat service)
as a list of events, in order: :class:`~twoway.sansio.busproto.Received` items,
:class:`~twoway.sansio.busproto.RoomGap`, and the events defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twoway.errors import ConfigError
from twoway.sansio.busproto import Hello, Item, Received, RoomGap

if TYPE_CHECKING:
    from twoway.bus.redis import RedisBus

__all__ = [
    "Backfill",
    "Bus",
    "BusEvent",
    "BusListener",
    "LocalBus",
    "Missed",
    "NodeLost",
    "Overflow",
    "make_bus",
]


@dataclass(frozen=True, slots=True)
class Missed:
    """Lines from other nodes may have been missed, rooms unknown (the log came back empty,
    or was trimmed past this reader); ``count`` when known."""

    count: int | None = None


@dataclass(frozen=True, slots=True)
class NodeLost:
    """Node ``node`` is gone (``reason``: ``server lost`` after its silence, ``server
    stopped`` after its goodbye): its clients are gone too."""

    node: int
    reason: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """``count`` of this node's lines could not be published (the buffer was full while the
    log was unreachable); the other nodes were told which rooms lost lines."""

    count: int


@dataclass(frozen=True, slots=True)
class Backfill:
    """What other nodes said before this one joined, oldest first, as ``(room, text)``: for
    the rooms' history, delivered to nobody. Sent once, when a node first reaches the log."""

    lines: tuple[tuple[str, str], ...]


BusEvent = Received | RoomGap | Missed | NodeLost | Overflow | Backfill


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

    async def stop(self) -> None:
        """Nothing to stop."""


def make_bus(url: str, **options: Any) -> LocalBus | RedisBus:
    """The bus ``url`` names: ``local``, or ``redis://``, ``rediss://``, ``unix://`` (a
    :class:`~twoway.bus.redis.RedisBus`; ``options`` go to it). Creating it connects to
    nothing. Raises :class:`ConfigError` for another scheme, or if the ``redis`` package is
    missing."""
    if url == "local":
        return LocalBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from twoway.bus.redis import RedisBus

        return RedisBus(url, **options)
    raise ConfigError(f"bus = {url!r}: use local or redis://HOST:PORT/DB")

"""Fan-out between chat servers: the :class:`Bus` contract and its two implementations.

A chat server (a *node*) delivers to its own clients itself, at once; the bus only tells the
*other* nodes what they must know (the items of :mod:`twoway.sansio.bus.items`). Local chat
never waits for the bus: :meth:`Bus.publish` queues and returns.

* :class:`LocalBus` — one process, nobody to tell: every call is a no-op (the default).
* :class:`~twoway.bus.redis.RedisBus` — every node attached to one Redis, through one stream
  (``--bus redis://HOST:PORT/DB``); ``redis`` is imported only then.

What comes back from the other nodes is handed to a :class:`BusListener` (the chat service)
as a list of :data:`BusEvent`, in order: :class:`Received` items, :class:`RoomGap`,
:class:`Missed`, :class:`NodeLost`, :class:`Overflow` and :class:`Backfill` (defined in
:mod:`twoway.sansio.bus.events`, the pure protocol, and exported here for listeners).

Modules: :mod:`~twoway.bus.base` (the contract, :class:`LocalBus`),
:mod:`~twoway.bus.redis` (supervision of the Redis connection), :mod:`~twoway.bus.uplink`
(keeping it up: retries, the outage's log lines), :mod:`~twoway.bus.options`,
:mod:`~twoway.bus.scripts` (keys and Lua), :mod:`~twoway.bus.handshake` (joining the log).
"""

from __future__ import annotations

from twoway.bus.base import Bus, BusListener, LocalBus
from twoway.bus.options import RedisBusOptions
from twoway.errors import ConfigError
from twoway.sansio.bus import (
    Backfill,
    BusEvent,
    Missed,
    NodeLost,
    Overflow,
    Received,
    RoomGap,
)

__all__ = [
    "Backfill",
    "Bus",
    "BusEvent",
    "BusListener",
    "LocalBus",
    "Missed",
    "NodeLost",
    "Overflow",
    "Received",
    "RedisBusOptions",
    "RoomGap",
    "make_bus",
]


def make_bus(url: str, options: RedisBusOptions | None = None) -> Bus:
    """The bus ``url`` names: ``local`` (a :class:`LocalBus`), or ``redis://``,
    ``rediss://``, ``unix://`` (a :class:`~twoway.bus.redis.RedisBus` with ``options``).
    Creating it connects to nothing. Raises :class:`ConfigError` for another scheme, or if
    the ``redis`` package is missing."""
    if url == "local":
        return LocalBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from twoway.bus.redis import RedisBus

        return RedisBus(url, options)
    raise ConfigError(f"bus = {url!r}: use local or redis://HOST:PORT/DB")

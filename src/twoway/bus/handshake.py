"""Joining the log on each (re)connection: a node number, the epoch check, the position to
read from. What it finds decides what the local rooms are told (see :class:`Joined`)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from twoway.bus.scripts import RAISE_COUNTER, Keys
from twoway.sansio.bus import RawEntry

__all__ = ["RANDOM_NODES", "Joined", "join", "take_node"]

log = logging.getLogger("twoway.bus")

#: Numbers from the Redis counter stay below this; a node that must start while Redis is
#: unreachable draws a random number at or above it, so the two never collide.
RANDOM_NODES = 1 << 30


@dataclass(frozen=True, slots=True)
class Joined:
    """What (re)connecting found."""

    #: The log's epoch token (it changes when Redis lost its data).
    epoch: bytes
    #: The stream id to read after.
    last_id: bytes
    #: Redis lost its data: the room numbers start again.
    reset: bool = False
    #: Messages from other nodes may have been missed (the data was lost, or the stream was
    #: trimmed past this node's position): tell the local rooms, ask every node.
    missed: bool = False
    #: The first connection: the log's last entries, oldest first (for the rooms' history),
    #: and every node is asked for its state. None on a reconnection.
    recent: list[RawEntry] | None = None

    @property
    def ask(self) -> bool:
        """Every node should be asked for its Hello."""
        return self.missed or self.recent is not None


async def take_node(client: Any, keys: Keys) -> int:
    """A node number from the counter in Redis (below :data:`RANDOM_NODES`)."""
    return int(await client.incr(keys.nodes))


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


async def join(
    client: Any, keys: Keys, *, node: int, epoch: bytes | None, last_id: bytes, backfill: int
) -> Joined:
    """Check the epoch and the position of node ``node`` (``epoch``: the token it knew,
    None the first time; ``last_id``: where it was reading) through the redis.asyncio
    ``client``; read ``backfill`` recent entries the first time. Changes nothing in this
    node's state; raises whatever the client raises."""
    # A fresh token each time (never one copied into forked workers): if Redis lost its
    # data, whoever connects first sets a value nobody has seen before.
    token = secrets.token_hex(16).encode()
    created = await client.set(keys.epoch, token, nx=True)
    now = token if created else await client.get(keys.epoch)
    if now is None:  # deleted between the two commands
        await client.set(keys.epoch, token)
        now = token
    if epoch is None:  # the first time: start reading from now on
        recent = await client.xrevrange(keys.log, count=max(1, backfill))
        start = recent[0][0] if recent else b"0-0"
        return Joined(now, start, recent=list(reversed(recent)) if backfill else [])
    if now != epoch:
        log.warning("bus: redis lost its data: messages from other servers may be missing")
        if node < RANDOM_NODES:
            await client.eval(RAISE_COUNTER, 1, keys.nodes, node)
        return Joined(now, b"0-0", reset=True, missed=True)
    if last_id != b"0-0":
        oldest = await client.xrange(keys.log, count=1)
        if not oldest or _stream_id(oldest[0][0]) > _stream_id(last_id):
            log.warning("bus: the stream was trimmed past this server's position")
            return Joined(now, last_id, missed=True)
    return Joined(now, last_id)

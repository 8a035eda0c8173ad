"""The settings of a :class:`~twoway.bus.redis.RedisBus`, declared once with their defaults
and the reason for each."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RedisBusOptions"]


@dataclass(frozen=True, slots=True)
class RedisBusOptions:
    """How a :class:`~twoway.bus.redis.RedisBus` behaves (seconds unless said otherwise).
    Raises :class:`ValueError` for a count below 1."""

    #: The keys' prefix: nodes sharing it form one chat.
    prefix: str = "twoway:chat:"
    #: Chat items kept while Redis is unreachable: a few minutes of a busy server's chat,
    #: about 1-2 MB. Beyond it, lines are dropped, counted and announced.
    buffer_limit: int = 10_000
    #: Approximate length of the stream in entries: an outage of a reader that long can be
    #: caught up from the stream.
    maxlen: int = 100_000
    #: At least one entry per node this often (a heartbeat when there is nothing to say).
    heartbeat: float = 1.0
    #: A node silent this long is dropped: three heartbeats and a half.
    silence: float = 3.5
    #: Connecting to Redis gives up after this long.
    connect_timeout: float = 1.0
    #: Every command's timeout: a stalled Redis is noticed within it.
    timeout: float = 2.0
    #: How long one blocking read waits for entries.
    block: float = 1.0
    #: Entries per read: bounds the work of one loop iteration.
    read_count: int = 100
    #: Items per entry: bounds one entry (and one script call).
    batch_items: int = 500
    #: Rough bytes per entry, likewise.
    batch_bytes: int = 256 * 1024
    #: The reconnection backoff: first delay, and the cap of the doubling.
    retry_initial: float = 0.5
    retry_max: float = 4.0
    #: How long :meth:`~twoway.bus.redis.RedisBus.stop` tries to flush.
    stop_timeout: float = 2.0
    #: The per-node and per-room counter keys expire after this long unused (7 days): what
    #: departed nodes and abandoned rooms leave in Redis goes away.
    key_ttl: int = 7 * 24 * 3600
    #: Entries read back from the log when the node first connects, for the rooms' history
    #: (0: none): a server that joins late still shows recent lines.
    backfill: int = 500

    def __post_init__(self) -> None:
        if min(self.buffer_limit, self.maxlen, self.read_count, self.batch_items, self.key_ttl) < 1:
            raise ValueError(
                "buffer_limit, maxlen, read_count, batch_items and key_ttl must be >= 1"
            )
        if self.backfill < 0:
            raise ValueError("backfill must be >= 0")

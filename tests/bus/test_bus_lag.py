"""The cross-server lag histogram: every entry another node published (with its wall-clock
time) is observed once by each reader, its own entries never; gap notices are counted."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from twoway.sansio.chat import Said

from .buskit import RedisServer
from .test_redis_bus import started_buses


async def _log(redis: RedisServer) -> list[Mapping[bytes, bytes]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url)
    try:
        return [fields for _, fields in await client.xrange("twoway:chat:log")]
    finally:
        await client.aclose()


async def test_each_entry_of_another_node_is_observed_once(redis: RedisServer) -> None:
    async with started_buses(redis) as [(a, _), (b, lb)]:
        for i in range(5):
            a.publish(Said("#lobby", f"line {i}"))
            await asyncio.sleep(0.02)  # its own entry each (one per loop iteration)
        # b observes an entry before it delivers what it holds: line 4's entry is counted.
        await lb.wait(lambda: Said("#lobby", "line 4") in lb.items())
        seen_by_a, seen_by_b = a.lag.count, b.lag.count
        log = await _log(redis)  # read after the counts: it holds every entry they saw
        node_a, node_b = str(a.node).encode(), str(b.node).encode()
        from_a = [f for f in log if f[b"n"] == node_a]
        from_b = [f for f in log if f[b"n"] == node_b]
        assert all(b"t" in f for f in from_a)
        # b reads the log from where it joined (before its Hello) on: a's entries after b's
        # Hello up to line 4 are surely read, a's entries in the log at most.
        joined = log.index(from_b[0])
        line4 = next(i for i, f in enumerate(log) if b"line 4" in f.get(b"d", b""))
        surely = sum(1 for f in log[joined : line4 + 1] if f[b"n"] == node_a)
        assert surely >= 5  # the five lines
        # Each entry of a once, none of b's own.
        assert surely <= seen_by_b <= len(from_a)
        assert b.lag.counts[-1] == 0 and 0 <= b.lag.sum < seen_by_b  # one machine: < 1 s each
        assert 1 <= seen_by_a <= len(from_b)  # a saw b's Hello, and never counts its own
        assert b.stats["gap_notices"] == 0

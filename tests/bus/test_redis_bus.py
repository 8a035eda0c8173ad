"""RedisBus in-process against a real redis-server: delivery, idempotent publishing, starting
without Redis, the bounded buffer and its overflow notice, configuration errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import pytest

from twoway.bus import BusEvent, LocalBus, Missed, Overflow, RedisBusOptions, make_bus
from twoway.bus.redis import RedisBus
from twoway.bus.scripts import PUBLISH
from twoway.errors import ConfigError
from twoway.sansio.bus import Hello, Lost, Received, encode_items
from twoway.sansio.chat import Presence, Said

from .buskit import UNIT, RedisServer

FAST = RedisBusOptions(retry_initial=0.1, retry_max=0.5, timeout=1.0)


class Listener:
    """Records what a bus delivers; ``wait`` for an event matching a predicate."""

    def __init__(self, members: Sequence[tuple[int, str, str]] = ()) -> None:
        self.events: list[BusEvent] = []
        self.members = tuple(members)
        self._changed = asyncio.Event()

    def bus_events(self, events: Sequence[BusEvent]) -> None:
        self.events += events
        self._changed.set()

    def bus_snapshot(self) -> Hello:
        return Hello(self.members)

    def items(self) -> list[object]:
        return [e.item for e in self.events if isinstance(e, Received)]

    async def wait(self, pred: Callable[[], bool], within: float = 5 * UNIT) -> None:
        async with asyncio.timeout(within):
            while not pred():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def started_buses(
    redis: RedisServer, options: RedisBusOptions = FAST
) -> AsyncIterator[list[tuple[RedisBus, Listener]]]:
    """Two buses on ``redis``, started, each with one member in its snapshot."""
    started: list[tuple[RedisBus, Listener]] = []
    try:
        for i in range(2):
            bus = RedisBus(redis.url, options)
            listener = Listener([((i + 1) << 32 | 1, f"user{i}", "#lobby")])
            await bus.start(listener)
            started.append((bus, listener))
        yield started
    finally:
        for bus, _ in started:
            await bus.stop()


@pytest.fixture
async def buses(redis: RedisServer) -> AsyncIterator[list[tuple[RedisBus, Listener]]]:
    async with started_buses(redis) as started:
        yield started


async def test_delivery_between_two_nodes(buses: list[tuple[RedisBus, Listener]]) -> None:
    (a, la), (b, lb) = buses
    assert (a.node, b.node) == (1, 2)  # from the counter in Redis
    # Each learns the other's state (the Hello it published when it joined).
    await la.wait(lambda: Hello(lb.members) in la.items())
    await lb.wait(lambda: Hello(la.members) in lb.items())
    for i in range(100):
        a.publish(Said("#lobby", f"line {i}"))
    a.publish(Presence(1 << 32 | 1, "renamed", "#lobby"))
    expected = [Said("#lobby", f"line {i}") for i in range(100)]
    expected.append(Presence(1 << 32 | 1, "renamed", "#lobby"))
    await lb.wait(lambda: expected[-1] in lb.items())
    got = [x for x in lb.items() if isinstance(x, Said | Presence)]
    assert got == expected  # once each, in order
    assert not any(isinstance(x, Said) for x in la.items())  # never to itself


async def test_a_repeated_publish_lands_once(
    redis: RedisServer, buses: list[tuple[RedisBus, Listener]]
) -> None:
    """What a publisher does after a lost reply: the same entry number again."""
    _, (_, lb) = buses
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis.url)
    try:
        keys = ["twoway:chat:log", "twoway:chat:pub:77"]
        seq, ttl = "twoway:chat:seq:", 3600
        data = encode_items([Said("#x", "only once")])
        for _ in range(3):
            await client.eval(PUBLISH, 2, *keys, 1, 1000, data, seq, ttl, 77, "0", "#x", 1)
        data = encode_items([Said("#x", "next")])
        await client.eval(PUBLISH, 2, *keys, 2, 1000, data, seq, ttl, 77, "0", "#x", 1)
    finally:
        await client.aclose()
    await lb.wait(lambda: Said("#x", "next") in lb.items())
    assert lb.items().count(Said("#x", "only once")) == 1


async def test_counter_keys_expire_when_unused(redis: RedisServer) -> None:
    """The per-node and per-room counters are keys with a TTL, refreshed on use: a node that
    is gone and a room nobody speaks in leave nothing behind in Redis."""
    import redis.asyncio as aioredis

    bus = RedisBus(redis.url, replace(FAST, key_ttl=2))
    other = RedisBus(redis.url, FAST)
    await bus.start(Listener())
    seen = Listener()
    await other.start(seen)
    client = aioredis.Redis.from_url(redis.url)
    # Redis announces each key it expires: the test waits for those events, not for a time.
    await client.config_set("notify-keyspace-events", "Ex")
    expired = client.pubsub()
    await expired.subscribe("__keyevent@0__:expired")
    try:
        node_key, room_key = f"twoway:chat:pub:{bus.node}", "twoway:chat:seq:#expiring"
        bus.publish(Said("#expiring", "hello"))
        await seen.wait(lambda: Said("#expiring", "hello") in seen.items())
        assert int(await client.get(room_key)) == 1
        assert 0 < await client.ttl(room_key) <= 2
        assert 0 < await client.ttl(node_key) <= 2
        assert await client.type("twoway:chat:seq") == b"none"  # no ever-growing hash
        assert await client.type("twoway:chat:pub") == b"none"
        await bus.stop()
        gone: set[str] = set()
        async with asyncio.timeout(10 * UNIT):  # the TTL is 2 s
            while not {room_key, node_key} <= gone:
                message = await expired.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None:
                    gone.add(message["data"].decode())
        assert await client.exists(room_key, node_key) == 0
    finally:
        await bus.stop()
        await other.stop()
        await expired.aclose()
        await client.aclose()


async def test_start_without_redis_then_it_comes(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="twoway.bus")
    redis.terminate()
    bus = RedisBus(redis.url, FAST)
    listener = Listener()
    async with asyncio.timeout(3 * UNIT):
        await bus.start(listener)  # does not wait for Redis
    try:
        assert bus.node >= 1 << 30  # a random node number
        bus.publish(Said("#lobby", "sent while down"))
        redis.start()
        other = RedisBus(redis.url, FAST)
        lo = Listener()
        await other.start(lo)
        try:
            # The first bus had no position in the stream yet: it starts from now on, and
            # what it queued while Redis was away is sent when it connects.
            await lo.wait(lambda: Said("#lobby", "sent while down") in lo.items(), 10 * UNIT)
        finally:
            await other.stop()
    finally:
        await bus.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("redis unreachable (connection refused)" in x for x in lines) == 1, lines
    assert sum("bus: redis back, 1 messages sent" in x for x in lines) == 1, lines


@pytest.fixture
async def small_buses(redis: RedisServer) -> AsyncIterator[list[tuple[RedisBus, Listener]]]:
    """Like ``buses``, with room for 5 chat items in each buffer."""
    async with started_buses(redis, replace(FAST, buffer_limit=5)) as started:
        yield started


async def test_overflow_is_counted_announced_and_reported_to_others(
    redis: RedisServer,
    small_buses: list[tuple[RedisBus, Listener]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="twoway.bus")
    (a, la), (_, lb) = small_buses
    await lb.wait(lambda: bool(lb.items()))
    redis.signal(signal.SIGSTOP)
    try:
        for i in range(8):  # at once: the buffer keeps 5 whatever Redis does
            a.publish(Said("#busy", f"m{i}"))
        await asyncio.sleep(2.5 * UNIT)  # the scenario: paused past the 1 s command timeout
    finally:
        redis.signal(signal.SIGCONT)
    await la.wait(lambda: Overflow(3) in la.events, 15 * UNIT)
    await lb.wait(lambda: Lost((("#busy", 3),)) in lb.items(), 10 * UNIT)
    said = [x for x in lb.items() if isinstance(x, Said) and x.room == "#busy"]
    assert said == [Said("#busy", f"m{i}") for i in range(5)]
    lines = [r.getMessage() for r in caplog.records if r.name == "twoway.bus"]
    assert sum("messages to other servers are dropped" in x for x in lines) == 1, lines
    assert sum("3 message(s) could not be sent" in x for x in lines) == 1, lines
    # One line per bus (two here) for each change of state, however long it lasted.
    assert sum("redis unreachable (timed out)" in x for x in lines) == 2, lines
    assert sum("redis back" in x for x in lines) == 2, lines


def test_options_defaults_and_limits() -> None:
    o = RedisBusOptions()
    assert (o.prefix, o.buffer_limit, o.maxlen, o.heartbeat, o.silence) == (
        "twoway:chat:",
        10_000,
        100_000,
        1.0,
        3.5,
    )
    assert (o.connect_timeout, o.timeout, o.block, o.retry_initial, o.retry_max) == (
        1.0,
        2.0,
        1.0,
        0.5,
        4.0,
    )
    assert (o.read_count, o.batch_items, o.batch_bytes, o.stop_timeout) == (100, 500, 262144, 2.0)
    assert (o.key_ttl, o.backfill) == (7 * 24 * 3600, 500)
    for bad in ("buffer_limit", "maxlen", "read_count", "batch_items", "key_ttl"):
        with pytest.raises(ValueError, match="must be >= 1"):
            RedisBusOptions(**{bad: 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backfill must be >= 0"):
        RedisBusOptions(backfill=-1)


def test_make_bus() -> None:
    assert isinstance(make_bus("local"), LocalBus)
    assert isinstance(make_bus("redis://127.0.0.1:1/0"), RedisBus)  # connects to nothing yet
    with pytest.raises(ConfigError, match="use local or redis://"):
        make_bus("kafka://x")


def test_missing_redis_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError) as info:
        make_bus("redis://127.0.0.1:6379/0")
    assert str(info.value) == "bus redis needs the redis package: pip install 'twoway[redis]'"


async def test_stream_trimmed_past_a_reader_is_announced(
    redis: RedisServer, buses: list[tuple[RedisBus, Listener]]
) -> None:
    (a, la), (_, lb) = buses
    await lb.wait(lambda: bool(lb.items()))
    a.publish(Said("#lobby", "seen"))
    await lb.wait(lambda: Said("#lobby", "seen") in lb.items())
    # Everything after our position is gone, then the connections drop: on reconnection
    # each bus finds the stream does not reach back to where it was.
    assert redis.command("XTRIM", "twoway:chat:log", "MAXLEN", "0").startswith(b":")
    assert redis.command("CLIENT", "KILL", "TYPE", "normal").startswith(b":")
    await la.wait(lambda: Missed() in la.events, 10 * UNIT)
    await lb.wait(lambda: Missed() in lb.events, 10 * UNIT)
    # Both asked everybody for their state again, and still talk to each other.
    a.publish(Said("#lobby", "after"))
    await lb.wait(lambda: Said("#lobby", "after") in lb.items(), 10 * UNIT)

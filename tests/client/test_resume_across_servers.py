"""``twoway connect --reconnect`` comes back on the OTHER server of a cluster (two chat
servers on one ``redis-server``): after an RST (the fault proxy, whose upstream is switched
to the second server meanwhile), it resumes there — its nick, held on every server while it
was away, and every line said on both servers while it was away, once each and in order —
and says so on one stderr line."""

from __future__ import annotations

import asyncio
import re

import pytest

from bus.buskit import REDIS_SERVER, RedisServer

from .clientkit import UNIT
from .conftest import Procs
from .faultproxy import FaultProxy
from .test_chat_resume import Talker

pytestmark = [
    pytest.mark.asyncio(loop_factories=["asyncio"]),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]


async def test_reconnect_resumes_on_the_other_server(procs: Procs) -> None:
    redis = RedisServer()
    redis.start()
    try:
        await _across(procs, redis.url)
    finally:
        await procs.close()  # the servers first (their goodbye goes through redis)
        redis.close()


async def _across(procs: Procs, url: str) -> None:
    common = ("--flood-rate", "0", "--bus", url)
    a = await procs.server("chat", *common)
    b = await procs.server("chat", *common)
    async with await FaultProxy.start(a.port) as proxy:
        client = await procs.client(
            "127.0.0.1", str(proxy.port), "--reconnect", "--retry-delay", "1", "--retry-max", "1",
            stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await client.stdout.wait_for(r"^\*\*\* resume token: ")
        await client.write(b"/nick alice\n")
        await client.stdout.wait_for(r"^\*\*\* guest\d+ is now known as alice$")
        on_a = await Talker.connect(a.port)
        on_b = await Talker.connect(b.port)
        try:
            await on_b.say("/nick bob")
            await on_a.expect("is now known as bob")
            await on_a.say("/nick carol")
            await on_b.expect("is now known as carol")
            await client.stdout.wait_for(r"is now known as carol$")
            await on_a.say("a 0", "a 1")
            await on_b.say("b 0", "b 1")
            await client.stdout.wait_for(r"carol: a 1$")
            await client.stdout.wait_for(r"bob: b 1$")
            # Alice's connection is lost; she will come back through the proxy to B.
            proxy.upstream = ("127.0.0.1", b.port)
            proxy.reset_peer()
            await on_b.expect("*** alice left #lobby")
            await on_a.expect("*** alice left #lobby")
            # Her nick is held on both servers meanwhile.
            await on_b.say("/nick alice")
            assert await on_b.expect("error:") == 'error: nick "alice" is already taken'
            await on_a.say("/nick alice")
            assert await on_a.expect("error:") == 'error: nick "alice" is already taken'
            # Both servers go on talking while she is away (she retries after 1 s).
            for i in range(2, 6):
                await on_a.say(f"a {i}")
                await on_b.expect(f"carol: a {i}")
                await on_b.say(f"b {i}")
                await on_a.expect(f"bob: b {i}")
            await client.stderr.wait_for(
                r"^resumed as alice in #lobby: 8 replayed, 0 missed$", 10 * UNIT
            )
            await on_a.expect("is now known as alice")  # A hears of her on B
            await on_a.say("a 6")
            await on_b.say("b 6")
            await client.stdout.wait_for(r"bob: b 6$")
            await client.stdout.wait_for(r"carol: a 6$")
        finally:
            await on_a.close()
            await on_b.close()
    out = client.stdout.text
    seen = re.findall(r"^(?:\[history\] )?(?:bob|carol): ([ab] \d)$", out, re.M)
    said_away = [x for i in range(2, 6) for x in (f"a {i}", f"b {i}")]
    # Every line once; what she missed in the order both servers agree on (the log's).
    assert sorted(seen) == sorted([f"a {i}" for i in range(7)] + [f"b {i}" for i in range(7)])
    assert len(seen) == len(set(seen)), out
    replayed = re.findall(r"^\[history\] (?:bob|carol): ([ab] \d)$", out, re.M)
    assert replayed == said_away, out
    assert len(re.findall(r"^\*\*\* welcome to ", out, re.M)) == 1, out
    assert "Traceback" not in client.stderr.text
    for srv in (a, b):
        assert "Traceback" not in srv.stderr

"""A silent partition: the path to the server holds every byte and answers nothing, and
nothing is closed. The client's idle timeout (nothing received) must notice, drop the
connection and reconnect; keep-alive cannot help here, because the proxy's kernel keeps
acknowledging segments (as a middlebox that lost its state upstream would)."""

from __future__ import annotations

import re

import pytest

from .clientkit import UNIT
from .conftest import Procs
from .faultproxy import FaultProxy

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


async def test_silent_partition_is_detected_by_the_idle_timeout_then_reconnects(
    procs: Procs,
) -> None:
    server = await procs.server("upper")
    async with await FaultProxy.start(server.port) as proxy:
        client = await procs.client(
            "127.0.0.1", str(proxy.port),
            "--send", "ping {seq}", "--every", "0.1",
            "--reconnect", "--timeout", "0.5", "--retry-delay", "0.1", "--retry-max", "0.1",
            "--keepalive", "1", "-v",
        )  # fmt: skip
        await client.stdout.wait_for('You said "PING 3"')
        proxy.timeout()
        # Pings keep going out (into the kernel's buffers) but nothing comes back: the
        # timeout counts only what is received.
        timeout = await client.stderr.wait_for(r"^timeout: nothing received for 0\.5 s$", 5 * UNIT)
        await client.stderr.wait_for(
            r"^disconnected: nothing received for 0\.5 s$", start=timeout.end()
        )
        held_at = len(client.stdout.text)
        reconnecting = await client.stderr.wait_for(r"reconnecting in 0\.1 s \(attempt \d+\)")
        proxy.heal()
        await client.stderr.wait_for(
            f"^connected to 127.0.0.1:{proxy.port}$", start=reconnecting.end()
        )
        # and carries on: new pings answered through the healed path
        m = await client.stdout.wait_for(r'You said "PING (\d+)"', start=held_at)
        await client.stdout.wait_for(rf'You said "PING {int(m.group(1)) + 3}"', start=held_at)
    assert proxy.accepted >= 2
    seqs = [int(n) for n in re.findall(r'PING (\d+)"', client.stdout.text)]
    assert seqs == sorted(seqs)
    assert "Traceback" not in client.stderr.text

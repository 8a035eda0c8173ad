"""Memory stays bounded for clients that send a lot and never read (issue 11, defect 1).

One read can hold a quarter of a million empty lines; a line service that answered all of
them before looking at its write queue pinned ~3.5 MiB per non-reading client. Answering now
stops at the write queue's high-water mark, and the rest of the read waits as bytes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from helpers import UNIT, CliServer, loop_name, serve_args

FLOOD = 1024 * 1024  # bytes of bare newlines per client
# slow-grace off: this is about memory while the clients stay, not about dropping them.
SLOW_OFF = ("--slow-grace", "0")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def _settle(pid: int, limit: float) -> None:
    """Wait until the server stops using CPU (it has answered all it will answer)."""
    deadline = time.monotonic() + limit
    last, still = _cpu_ticks(pid), 0
    while still < 4:  # 4 x 0.25 s without a tick of CPU
        await asyncio.sleep(0.25)
        now = _cpu_ticks(pid)
        still = still + 1 if now == last else 0
        last = now
        assert time.monotonic() < deadline, "the server never settled"


@pytest.mark.slow
# What one such client may hold: the rest of one read (the loop reads up to 256 KiB at once),
# the write queue up to its high-water mark (64 KiB) plus one batch handed over (64 KiB), and
# the allocator's slack: half a MiB. Before the fix each held 3.5 MiB (the replies to a whole
# read), so 100 of them grew the server by 292 MiB. 100 clients for upper, 30 for the others,
# to keep the suite's time: each makes the server answer the ~3 MiB the kernel absorbs first.
@pytest.mark.parametrize(
    ("service", "clients"), [("upper", 100), ("stamp", 30), ("peers", 30), ("echo", 30)]
)
async def test_non_reading_clients_cost_bounded_memory(service: str, clients: int) -> None:
    bound_mib = clients / 2
    loop = loop_name()  # the server runs the loop this test runs on
    slow_off = SLOW_OFF if service != "echo" else ()  # echo has no slow-grace: it stops reading
    server = CliServer(serve_args(service, *slow_off, loop=loop)).wait_ready()
    writers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        before = server.status_kib("VmRSS")
        for _ in range(clients):
            sock = socket.socket()
            # A small window before connecting: the kernel then absorbs less of the replies.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"\n" * FLOOD)
            writers.append((reader, writer))
        await _settle(server.pid, 120 * UNIT)
        grown_mib = (server.status_kib("VmRSS") - before) / 1024
        # A normal client is still answered.
        reader, writer = await asyncio.open_connection(server.host, server.port)
        if service == "stamp":
            await asyncio.wait_for(reader.readline(), 5 * UNIT)  # the greeting
        writer.write(b"hello\n")
        answer = await asyncio.wait_for(reader.readline(), 5 * UNIT)
        assert b"hello" in answer.lower() or b"peer" in answer, answer
        writer.close()
        assert grown_mib < bound_mib, (
            f"{service} on {loop}: +{grown_mib:.1f} MiB, {clients} clients"
        )
    finally:
        for _, w in writers:
            w.transport.abort()
        await asyncio.sleep(0)  # let the aborted transports close before the loop does
        server.stop()

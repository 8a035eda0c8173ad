#!/usr/bin/env python3
"""Server memory with N clients that send 1 MiB of empty lines each and never read.

    python bench/nonreaders.py SERVICE [LOOP] [CLIENTS]     # e.g. upper uvloop 100

Starts ``twoway serve SERVICE`` (slow-grace off for line services, so the clients stay),
connects the clients with a 4 KiB receive buffer, waits until the server stops using CPU
and prints its RSS growth. Issue 11's figure; tests/services/test_memory_bounds.py checks
the bound.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def _flood(pid: int, port: int, clients: int) -> float:
    before = _rss_kib(pid)
    writers = []
    loop = asyncio.get_running_loop()
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"\n" * (1 << 20))
        writers.append(writer)
    last, still = _cpu_ticks(pid), 0
    while still < 4:  # a second without a tick of CPU: it answered all it will
        await asyncio.sleep(0.25)
        now = _cpu_ticks(pid)
        still = still + 1 if now == last else 0
        last = now
    grown = (_rss_kib(pid) - before) / 1024
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0.1)
    return grown


def main(argv: list[str]) -> int:
    service = argv[0] if argv else "upper"
    loop = argv[1] if len(argv) > 1 else "uvloop"
    clients = int(argv[2]) if len(argv) > 2 else 100
    extra = [] if service in ("echo", "dump", "file") else ["--slow-grace", "0"]
    if service == "chat":
        extra.append("--ephemeral")  # memory is the point here, not the store
    cmd = [sys.executable, "-m", "twoway", "serve", service, "--port", "0", "--loop", loop]
    proc = subprocess.Popen([*cmd, *extra], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    port = 0
    while not port:
        line = proc.stderr.readline()
        if not line:
            print("the server did not start", file=sys.stderr)
            return 1
        if m := re.search(r"listening on \S*:(\d+)", line):
            port = int(m.group(1))
    try:
        grown = asyncio.run(_flood(proc.pid, port, clients))
    finally:
        proc.terminate()
        proc.wait()
    print(f"{service} on {loop}, {clients} non-reading clients: +{grown:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

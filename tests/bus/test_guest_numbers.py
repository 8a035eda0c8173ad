"""Guest numbers are reserved across servers before the welcome: clients that connect to two
chat servers on one Redis at the same instant are never told the same ``you are guestN``
(and so are never renamed by a collision a moment later)."""

from __future__ import annotations

import re
import socket
import time

from helpers import CliServer

from .buskit import UNIT, Cluster, RedisServer

YOU_ARE = re.compile(rb"\*\*\* you are (guest\d+)\r?\n")


def _welcomes(socks: list[socket.socket], timeout: float = 10 * UNIT) -> list[str]:
    """Read each socket until its ``*** you are guestN`` line; the nicks, in order."""
    deadline = time.monotonic() + timeout
    nicks = []
    for s in socks:
        buf = b""
        while (m := YOU_ARE.search(buf)) is None:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            data = s.recv(65536)
            assert data, f"closed before the welcome; read {buf!r}"
            buf += data
        nicks.append(m.group(1).decode())
    return nicks


def _storm(servers: list[CliServer], per_server: int) -> list[str]:
    """``per_server`` connections to each server, opened as fast as possible, interleaved."""
    socks = []
    try:
        for _ in range(per_server):
            for srv in servers:
                socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        return _welcomes(socks)
    finally:
        for s in socks:
            s.close()


def test_simultaneous_connects_to_two_servers_get_distinct_guest_numbers(
    cluster: Cluster,
) -> None:
    a = cluster.server()
    b = cluster.server()
    # More connections than one block of reserved numbers, so some wait for the next one.
    nicks = _storm([a, b], 300)
    dupes = sorted({n for n in nicks if nicks.count(n) > 1})
    assert not dupes, f"{len(dupes)} guest nicks given twice: {dupes[:10]}"
    for srv in (a, b):
        assert "nick collision" not in srv.stderr


def test_a_second_wave_reuses_numbers_and_stays_distinct(cluster: Cluster) -> None:
    """Numbers come back when their clients leave, without ever being shared."""
    a = cluster.server()
    b = cluster.server()
    first = _storm([a, b], 20)
    assert len(set(first)) == len(first)
    second = _storm([a, b], 20)
    assert len(set(second)) == len(second), second


def test_one_server_keeps_the_smallest_free_numbers(redis: RedisServer) -> None:
    """Alone on its Redis, a server still starts at guest1 and reuses freed numbers."""
    cluster = Cluster(redis)
    try:
        a = cluster.server()
        with cluster.client(a) as c1:
            assert c1.nick == "guest1"
        with cluster.client(a) as c2:
            assert c2.nick in {"guest1", "guest2"}
    finally:
        assert not cluster.close()

"""``--workers 2 --metrics``: the supervisor's endpoint adds up both workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from helpers import UNIT, connect, recv_line

from .metricskit import get, scrape, start_metrics, wait_metric


def _worker_of(sock: socket.socket, supervisor: int) -> int:
    """The worker (a child of ``supervisor``) holding the server side of ``sock``: the
    socket whose remote port is ``sock``'s own, in /proc/net/tcp, and whose inode is
    among that worker's descriptors."""
    port = f":{sock.getsockname()[1]:04X}"
    inodes = {
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[2].endswith(port)
    }
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for pid in children:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
    raise AssertionError(f"no worker of {supervisor} holds {sock.getsockname()}")


def test_two_workers_add_up(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "upper", "--workers", "2", "--max-line", "1KiB")
    server.wait_for("listening on", count=2)
    wait_metric(mport, "twoway_workers", lambda v: v == 2)
    socks: list[socket.socket] = []
    try:
        pids: set[int] = set()
        # SO_REUSEPORT spreads connections by hash: connect until both workers hold some.
        deadline = time.monotonic() + 10 * UNIT
        while len(pids) < 2 or len(socks) < 6:
            assert time.monotonic() < deadline, "the kernel never picked the second worker"
            s = connect(server.port)
            s.sendall(b"x" * 2000 + b"\nhi\n")
            assert recv_line(s).startswith(b"error: line too long")
            assert recv_line(s) == b'You said "HI"\n'
            socks.append(s)
            pids.add(_worker_of(s, server.pid))
        samples = scrape(mport)
        assert samples["twoway_workers"] == 2
        assert samples["twoway_connections_open"] == len(socks)
        assert samples["twoway_connections_accepted_total"] == len(socks)
        assert samples["twoway_line_too_long_total"] == len(socks)
        assert samples["twoway_connections_peak"] >= len(socks) / 2
        status, _, body = get(mport, "/healthz")
        assert (status, body) == (200, b"ok (2 workers)\n")
        assert get(mport, "/readyz")[0] == 200
        # A stopped worker does not answer: health says which one, the sum has one less.
        victim = next(iter(pids))
        os.kill(victim, signal.SIGSTOP)
        try:
            status, _, body = get(mport, "/healthz")
            assert status == 503
            assert b"no answer within 1 s" in body
            assert scrape(mport)["twoway_workers"] == 1
        finally:
            os.kill(victim, signal.SIGCONT)
    finally:
        for s in socks:
            s.close()
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert samples['twoway_connections_closed_total{reason="normal"}'] == len(socks)
    assert samples['twoway_connection_duration_seconds_bucket{le="+Inf"}'] == len(socks)
    assert server.stop() == 0
    assert server.count(r"stopped: .* served") == 2  # one summary per worker
    # ... and one for the whole server: their sum.
    whole = server.wait_for(r"stopped \(all 2 workers\): .*").group(0)
    assert whole.startswith(f"stopped (all 2 workers): {len(socks)} connection(s) served, in ")
    assert whole.endswith(f"; dropped: {len(socks)} line too long; refused: none")

"""``twoway serve dump`` on a disk slower than the network: reading pauses, memory stays
bounded, and nothing is lost once the disk comes back.

The slow disk is real and as slow as a disk gets: an ext4 image on a loop device, frozen
with ``fsfreeze`` so every write blocks in the kernel until it is thawed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import signal
import socket
from pathlib import Path

import pytest

from .conftest import LOOPS, FreezableDisk, StartServer
from .streamkit import MIB, UNIT, connect, read_to_eof, seeded_blocks, sha256_file, wait_until

#: The service's read-pause threshold (DumpService ``buffer_high``, not a CLI option): one
#: connection holds at most about twice this (a buffer and a write in flight).
BUFFER_HIGH = 4 * MIB


def _kernel_buffers() -> int:
    """The most a connection's socket buffers can hold on this machine (both sides)."""
    rmem = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return rmem + wmem + MIB


class Pusher:
    """Sends a seeded stream and can stop when the peer stops taking it."""

    def __init__(self, sock: socket.socket, seed: int, size: int) -> None:
        self.sock = sock
        self.size = size
        self.sent = 0
        self.sha = hashlib.sha256()
        self._blocks = seeded_blocks(seed, size)
        self._pending = memoryview(b"")

    def run(self, stall: float | None = None) -> bool:
        """Send until done (True) or, with ``stall``, until ``send()`` has made no progress
        for ``stall`` seconds (False): the peer has stopped reading."""
        self.sock.settimeout(stall if stall is not None else 30 * UNIT)
        while True:
            if not self._pending:
                block = next(self._blocks, None)
                if block is None:
                    return True
                self.sha.update(block)
                self._pending = memoryview(block)
            try:
                n = self.sock.send(self._pending)
            except TimeoutError:
                if stall is None:
                    raise
                return False
            self._pending = self._pending[n:]
            self.sent += n


@pytest.mark.parametrize("loop", LOOPS)
def test_stopped_disk_pauses_reading_and_bounds_memory(
    serve: StartServer, freezable_disk: FreezableDisk, loop: str
) -> None:
    conns, size = 4, 96 * MIB  # more than the kernel buffers of one connection can hold
    directory = freezable_disk.mountpoint / "dumps"
    server = serve("dump", "--dir", str(directory), "--fsync", "never", "--loop", loop)
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(server.port)) for _ in range(conns)]
        ports = [s.getsockname()[1] for s in socks]
        # Files are created at connect time: let that happen before the disk stops.
        wait_until(lambda: len(list(directory.iterdir())) == conns, 5 * UNIT, "the files")
        rss_before = server.status_kib("VmRSS")
        pushers = [Pusher(s, 300 + i, size) for i, s in enumerate(socks)]
        freezable_disk.freeze()
        with concurrent.futures.ThreadPoolExecutor(conns) as pool:
            finished = list(pool.map(lambda p: p.run(stall=1.0 * UNIT), pushers))
        rss_frozen = server.status_kib("VmRSS")
        accepted = [p.sent for p in pushers]
        # The server stopped reading: each client got no further than the server's buffer,
        # its write in flight and the kernel's socket buffers on both sides (the server's
        # receive buffer grows by autotuning while it reads fast, up to tcp_rmem's maximum).
        assert not any(finished), accepted
        assert max(accepted) <= 2 * BUFFER_HIGH + _kernel_buffers(), accepted
        grown = (rss_frozen - rss_before) * 1024
        assert grown < conns * 2 * BUFFER_HIGH + 32 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"

        freezable_disk.thaw()
        with concurrent.futures.ThreadPoolExecutor(conns) as pool:
            assert all(pool.map(lambda p: p.run(), pushers))
        for sock in socks:
            sock.shutdown(socket.SHUT_WR)
        for sock in socks:
            assert read_to_eof(sock) == b""
    for port, pusher in zip(ports, pushers, strict=True):
        [path] = directory.glob(f"*_{port}.dump")
        assert sha256_file(path) == pusher.sha.hexdigest()
    peak = server.status_kib("VmHWM") - rss_before
    print(
        f"[{loop}: {[round(a / MIB, 1) for a in accepted]} MiB taken before the stall, RSS +"
        f"{(rss_frozen - rss_before) / 1024:.0f} MiB frozen, peak +{peak / 1024:.0f} MiB]"
    )


def test_stopped_disk_does_not_stall_the_event_loop(
    serve: StartServer, freezable_disk: FreezableDisk
) -> None:
    """While writes block on a stopped disk, the server still accepts connections and
    answers signals; once the disk is back, everything read is stored."""
    directory = freezable_disk.mountpoint / "dumps"
    server = serve("dump", "--dir", str(directory), "--grace", "1")
    with connect(server.port) as first:
        first_port = first.getsockname()[1]
        wait_until(lambda: len(list(directory.iterdir())) == 1, 5 * UNIT, "the first file")
        first.sendall(b"x" * 65536)
        freezable_disk.freeze()
        with connect(server.port) as second:  # its file cannot be created now
            second_port = second.getsockname()[1]
            second.sendall(b"y" * 65536)
            server.wait_for(rf"connection from 127\.0\.0\.1:{second_port}")
            with connect(server.port) as third:
                server.wait_for(rf"connection from 127\.0\.0\.1:{third.getsockname()[1]}")
            server.signal(signal.SIGTERM)
            server.wait_for("SIGTERM received: shutting down", timeout=3 * UNIT)
            freezable_disk.thaw()
    assert server.wait() == 0
    [one] = directory.glob(f"*_{first_port}.dump")
    [two] = directory.glob(f"*_{second_port}.dump")
    assert one.read_bytes() == b"x" * 65536
    assert two.read_bytes() == b"y" * 65536

"""Helpers for the stream tests: a ``twoway serve`` subprocess, seeded data, blocking clients.

Everything here is the real thing: the server is the CLI in its own process, the clients are
plain blocking sockets (one thread each when they run in parallel), and data is generated
deterministically from a seed in blocks, hashed as it is sent, never held whole in memory.

Tests synchronise on log lines, EOFs and socket timeouts, each with a deadline; the few
states nothing reports (a file that grew, a descriptor count that fell) are polled with
:func:`wait_until`. Every timeout is a multiple of :data:`UNIT`
(``TWOWAY_TEST_TIMEOUT_FACTOR`` stretches them all).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from helpers import CliServer

__all__ = [
    "BLOCK",
    "HOST",
    "MIB",
    "UNIT",
    "ServerProcess",
    "connect",
    "expect_reset",
    "hash_to_eof",
    "push_seeded",
    "read_to_eof",
    "seeded_blocks",
    "seeded_bytes",
    "sha256_file",
    "wait_until",
]

#: One time unit, in seconds: every timeout is a multiple of it.
UNIT = float(os.environ.get("TWOWAY_TEST_TIMEOUT_FACTOR", "1"))
HOST = "127.0.0.1"
MIB = 1024 * 1024
#: Seeded data is generated (and must be regenerated) in blocks of this size.
BLOCK = MIB


# ---------------------------------------------------------------------------- seeded data


def seeded_blocks(seed: int, size: int, block: int = BLOCK) -> Iterator[bytes]:
    """``size`` pseudo-random bytes from ``seed``, in blocks; the same seed and size always
    give the same bytes, so a prefix can be regenerated to compare with a file."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(block, left)
        yield rng.randbytes(n)
        left -= n


def seeded_bytes(seed: int, size: int) -> bytes:
    """The whole seeded stream at once (only for small sizes)."""
    return b"".join(seeded_blocks(seed, size))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- clients


def connect(port: int, *, rcvbuf: int | None = None, timeout: float = 10 * UNIT) -> socket.socket:
    """A blocking TCP connection to the server; every operation times out after ``timeout``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connect(), so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def push_seeded(
    sock: socket.socket,
    seed: int,
    size: int,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Send the seeded stream; return the sha256 of what was sent (hashed as it goes)."""
    h = hashlib.sha256()
    sent = 0
    for block in seeded_blocks(seed, size):
        sock.sendall(block)
        h.update(block)
        sent += len(block)
        if progress is not None:
            progress(sent)
    return h.hexdigest()


def read_to_eof(sock: socket.socket, limit: int = 64 * MIB) -> bytes:
    """Everything the peer sends until its FIN (raises on a reset or a timeout)."""
    parts: list[bytes] = []
    total = 0
    while chunk := sock.recv(256 * 1024):
        parts.append(chunk)
        total += len(chunk)
        assert total <= limit, f"more than {limit} bytes received"
    return b"".join(parts)


def hash_to_eof(sock: socket.socket) -> tuple[int, str]:
    """Byte count and sha256 of everything until the peer's FIN."""
    h = hashlib.sha256()
    buf = bytearray(1 * MIB)
    view = memoryview(buf)
    total = 0
    while n := sock.recv_into(buf):
        h.update(view[:n])
        total += n
    return total, h.hexdigest()


def expect_reset(sock: socket.socket) -> bytes:
    """Read until the connection is reset; fail on a clean EOF. Returns what was read."""
    parts: list[bytes] = []
    try:
        while chunk := sock.recv(65536):
            parts.append(chunk)
    except ConnectionResetError:
        return b"".join(parts)
    raise AssertionError(
        f"clean EOF where a reset was expected (after {sum(map(len, parts))} bytes)"
    )


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10 * UNIT, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout``. Only for states that
    nothing reports (a file that grew, descriptors released)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------------- the server


class ServerProcess(CliServer):
    """``python -m twoway serve ARGS --port 0``: a :class:`helpers.CliServer` (readiness with
    :meth:`~helpers.CliServer.wait_ready`, log lines with :meth:`~helpers.CliServer.wait_for`,
    signals, ``wrapper`` such as ``strace``) with what this suite adds: 20 units to exit,
    a failure (after a kill) if the server does not, no second signal during a shutdown,
    and the server's descriptors.
    """

    def __init__(self, args: Sequence[str], *, wrapper: Sequence[str] = ()) -> None:
        super().__init__(["serve", *args, "--port", "0"], wrapper=wrapper)
        #: Whether teardown checks the exit code (a test that kills -9 turns it off).
        self.expect_clean_exit = True

    def wait(self, timeout: float = 20 * UNIT) -> int:
        """Wait for the exit code; at the deadline kill the server and fail."""
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.kill()
            self.wait_exit(5 * UNIT)
            raise AssertionError(
                f"the server did not exit within {timeout:g} s:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = 20 * UNIT, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` (unless the server exited or is already shutting down: a second
        signal would cut that shutdown short) and :meth:`wait` for the exit code."""
        if not self.count(r"received: shutting down"):
            self.signal(signum)
        return self.wait(timeout)

    # -- /proc -------------------------------------------------------------------------

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fds(self) -> dict[int, str]:
        """Open descriptors and what they point to (``socket:[...]``, a path, ...)."""
        result: dict[int, str] = {}
        base = f"/proc/{self.pid}/fd"
        for name in os.listdir(base):
            try:
                result[int(name)] = os.readlink(f"{base}/{name}")
            except FileNotFoundError:  # closed while listing
                pass
        return result

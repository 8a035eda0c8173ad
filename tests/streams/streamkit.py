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
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

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
    "run_cli",
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

_LISTENING = re.compile(r"listening on (\S+):(\d+)$")


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


def run_cli(*args: str, timeout: float = 20 * UNIT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m twoway ARGS`` to completion (for commands that must exit on their own)."""
    return subprocess.run(
        [sys.executable, "-m", "twoway", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServerProcess:
    """``python -m twoway serve ARGS --port 0`` in a subprocess, its stderr read by a thread.

    :meth:`start` waits for ``listening on HOST:PORT`` and records the real port;
    :meth:`wait_line` waits for a later log line; :meth:`stop` sends a signal and returns
    the exit code. ``wrapper`` runs the server under another program (``strace``); then
    :attr:`pid` is the server's own process id, found as the wrapper's child.
    """

    def __init__(self, args: Sequence[str], *, wrapper: Sequence[str] = ()) -> None:
        self.args = list(args)
        cmd = [*wrapper, sys.executable, "-m", "twoway", "serve", *args, "--port", "0"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.wrapped = bool(wrapper)
        self.pid = self.proc.pid
        self.port = 0
        #: Whether teardown checks the exit code (a test that kills -9 turns it off).
        self.expect_clean_exit = True
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="stderr-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- log lines ---------------------------------------------------------------------

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def mark(self) -> int:
        """The number of lines logged so far: pass it to :meth:`wait_line` as ``since``."""
        with self._cond:
            return len(self._lines)

    def wait_line(self, pattern: str, timeout: float = 10 * UNIT, since: int = 0) -> re.Match[str]:
        """The first log line (from index ``since``) matching ``pattern``; fail after
        ``timeout`` or if the server exits without logging it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = regex.search(self._lines[i])
                    if m:
                        return m
                    i += 1
                if self._eof:
                    raise AssertionError(
                        f"the server ended without logging /{pattern}/:\n{self._tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no log line /{pattern}/ within {timeout:g} s:\n{self._tail()}"
                    )
                self._cond.wait(left)

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.lines if regex.search(line)]

    def _tail(self, n: int = 30) -> str:
        return "\n".join(self._lines[-n:])

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 15 * UNIT) -> ServerProcess:
        m = self.wait_line(_LISTENING.pattern, timeout)
        self.port = int(m.group(2))
        if self.wrapped:
            self.pid = self._child_pid()
        return self

    def _child_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        assert len(pids) == 1, f"expected one child of the wrapper, found {pids}"
        return pids[0]

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.pid, sig)

    def wait(self, timeout: float = 20 * UNIT) -> int:
        """Wait for the process to exit; collect the rest of its stderr; return the code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the server did not exit within {timeout:g} s:\n{self._tail()}"
            ) from None
        finally:
            self._reader.join(5 * UNIT)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20 * UNIT) -> int:
        """Send ``sig`` (unless the server exited or is already shutting down: a second
        signal would cut that shutdown short) and wait for the exit code."""
        if not self.matching(r"received: shutting down"):
            self.send_signal(sig)
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

    def status_kib(self, field: str) -> int:
        """A ``/proc/PID/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

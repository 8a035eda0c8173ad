"""The server side of long transfers: ``serve file`` and ``serve dump`` draw a tqdm bar per
transfer (peer, bytes, rate; the size and ETA for a file) while stderr is a terminal, with
the log lines above the bars; nothing of the kind when stderr is not a terminal (issue 13)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from helpers import TWOWAY, UNIT, CliServer, cli_env, serve_args

MIB = 1024 * 1024
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class PtyServer:
    """``twoway serve ARGS`` with stderr on a pseudo-terminal; ``screen`` is what it drew."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.proc = subprocess.Popen(
            [*TWOWAY, *serve_args(*args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=cli_env(),
        )
        os.close(slave)
        self._out = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed its side
                    return
                if not chunk:
                    return
                with self._lock:
                    self._out += chunk
            elif self.proc.poll() is not None:
                return

    @property
    def screen(self) -> str:
        with self._lock:
            return self._out.decode("utf-8", "replace")

    def wait(self, pattern: str, timeout: float = 15 * UNIT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.screen):
                return m
            time.sleep(0.05)  # polling a terminal's output: nothing to wait on
        raise AssertionError(f"{pattern!r} not drawn; the screen:\n{self.screen}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10 * UNIT)
        finally:
            self._reader.join(5)
            os.close(self.master)


def _slow_reader(port: int, into: bytearray) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT)
    while chunk := sock.recv(65536):
        into += chunk
    return sock


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(2 * MIB))
    return path


def test_serve_file_draws_a_bar_per_transfer_on_a_terminal(big: Path) -> None:
    pytest.importorskip("tqdm")
    srv = PtyServer("file", str(big), "--rate", str(MIB))  # 2 MiB at 1 MiB/s: about 2 s
    try:
        port = int(srv.wait(LISTENING.pattern).group(1))
        got = bytearray()
        _slow_reader(port, got).close()
        assert bytes(got) == big.read_bytes()
        # The peer, a percentage of the known size (hence an ETA), the rate.
        srv.wait(r"127\.0\.0\.1:\d+: +\d+%\|.*\| [\d.]+M/2\.00M \[")
        srv.wait(r"closed.*127\.0\.0\.1")  # the access log line, written above the bars
    finally:
        code = srv.stop()
    assert code == 0, srv.screen
    assert "Traceback" not in srv.screen


def test_serve_dump_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    srv = PtyServer("dump", "--dir", str(tmp_path))
    try:
        port = int(srv.wait(LISTENING.pattern).group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10 * UNIT) as sock:
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:  # a slow sender: 64 KiB every 50 ms
                sock.sendall(b"d" * 65536)
                time.sleep(0.05)
            # The size is unknown: bytes and rate, no percentage.
            srv.wait(r"127\.0\.0\.1:\d+: [\d.]+[kM]B \[[\d:]+, +[\d.]+[kM]?B/s\]")
    finally:
        code = srv.stop()
    assert code == 0, srv.screen


def test_no_bar_when_stderr_is_not_a_terminal(big: Path) -> None:
    srv = CliServer(serve_args("file", str(big), "--rate", str(MIB)))
    try:
        srv.wait_ready()
        got = bytearray()
        _slow_reader(srv.port, got).close()
        assert bytes(got) == big.read_bytes()
        srv.wait_for(r"closed")
    finally:
        srv.stop()
    assert "%|" not in srv.stderr and "B/s]" not in srv.stderr, srv.stderr
    assert "\r" not in srv.stderr

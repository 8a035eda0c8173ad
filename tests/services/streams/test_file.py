"""``twoway serve file PATH``: the file to every client, zero copy, on both event loops.

Readers that read, that stop reading, that vanish: each gets the file or is dropped, and
the server gives back every descriptor the connection used (the socket, its duplicate for
sendfile and the file), which ``/proc/PID/fd`` shows.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import signal
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import run_cli

from .conftest import LOOPS, StartServer
from .streamkit import (
    MIB,
    UNIT,
    ServerProcess,
    connect,
    expect_reset,
    hash_to_eof,
    read_to_eof,
    seeded_blocks,
    wait_until,
)
from .syscalls import strace_works, strace_wrapper


@dataclass(frozen=True, slots=True)
class Served:
    path: Path
    size: int
    sha: str


def _make(path: Path, seed: int, size: int) -> Served:
    h = hashlib.sha256()
    with path.open("wb") as f:
        for block in seeded_blocks(seed, size, 4 * MIB):
            f.write(block)
            h.update(block)
    return Served(path, size, h.hexdigest())


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """256 MiB of seeded random data, written once for the module."""
    return _make(tmp_path_factory.mktemp("served") / "big.bin", 81, 256 * MIB)


@pytest.fixture
def small_file(tmp_path: Path) -> Served:
    return _make(tmp_path / "small.bin", 82, 1 * MIB)


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _serve_file(serve: StartServer, served: Served, loop: str, *flags: str) -> ServerProcess:
    return serve("file", str(served.path), "--loop", loop, *flags)


def _fds_settle(server: ServerProcess, baseline: int) -> None:
    wait_until(lambda: server.fd_count() == baseline, 5 * UNIT, "the descriptors released")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def _abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), like a reader that crashed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ---------------------------------------------------------------------------- readers


def _read_all(port: int) -> tuple[int, str]:
    with connect(port, timeout=30 * UNIT) as sock:
        return hash_to_eof(sock)


def _read_all_from(port: int) -> tuple[int, int, str]:
    """(local port, bytes, sha256) of one whole read."""
    with connect(port, timeout=30 * UNIT) as sock:
        return (sock.getsockname()[1], *hash_to_eof(sock))


def test_four_parallel_readers_get_identical_bytes(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    server = _serve_file(serve, big_file, loop)
    baseline = server.fd_count()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_read_all_from, [server.port] * 4))
    assert [(n, sha) for _, n, sha in results] == [(big_file.size, big_file.sha)] * 4
    for port, _, _ in results:
        server.wait_for(rf"file: sent {big_file.size} bytes to 127\.0\.0\.1:{port}$")
    _fds_settle(server, baseline)


def test_keep_open_leaves_the_connection_open(
    serve: StartServer, small_file: Served, loop: str
) -> None:
    server = _serve_file(serve, small_file, loop, "--keep-open")
    with connect(server.port) as sock:
        data = _recv_exactly(sock, small_file.size)
        assert hashlib.sha256(data).hexdigest() == small_file.sha
        server.wait_for(rf"file: sent {small_file.size} bytes to ")
        sock.settimeout(0.5 * UNIT)
        with pytest.raises(TimeoutError):  # no EOF: the connection stays open
            sock.recv(1)
        sock.settimeout(5 * UNIT)
        sock.shutdown(socket.SHUT_WR)  # the client ends it when it wants
        assert read_to_eof(sock) == b""


def test_keep_open_a_reader_that_half_closed_early_still_gets_the_end(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    """With --keep-open the server waits for the reader to end the connection; a reader
    that half-closed before the file was sent has done so, and gets the file, then EOF."""
    server = _serve_file(serve, big_file, loop, "--keep-open")
    with connect(server.port) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert hash_to_eof(sock) == (big_file.size, big_file.sha)


def test_without_keep_open_the_server_ends_the_connection(
    serve: StartServer, small_file: Served, loop: str
) -> None:
    server = _serve_file(serve, small_file, loop)
    with connect(server.port) as sock:
        data = read_to_eof(sock)  # EOF without the client sending or closing anything
    assert hashlib.sha256(data).hexdigest() == small_file.sha


def test_rate_caps_throughput(serve: StartServer, small_file: Served, loop: str) -> None:
    server = _serve_file(serve, small_file, loop, "--rate", "2MiB")
    with connect(server.port) as sock:
        started = time.monotonic()
        n, sha = hash_to_eof(sock)
        elapsed = time.monotonic() - started
    assert (n, sha) == (small_file.size, small_file.sha)
    # 1 MiB at 2 MiB/s: half a second, the first slice going out at once.
    assert 0.4 <= elapsed < 2.0 * UNIT, elapsed


# ---------------------------------------------------------------------------- the file


def test_missing_file_at_startup_is_one_line(tmp_path: Path, loop: str) -> None:
    missing = tmp_path / "nope.bin"
    done = run_cli("serve", "file", str(missing), "--port", "0", "--loop", loop)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [f"twoway: file: {missing}: no such file or directory"]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("replacement", "why"),
    [(None, "no such file or directory"), ("directory", "not a regular file")],
)
def test_file_unavailable_after_startup_is_an_error_line(
    serve: StartServer, small_file: Served, loop: str, replacement: str | None, why: str
) -> None:
    """Removed (root reads any file, so no chmod), or replaced by a directory: the client
    reads why, the server logs it and goes on serving."""
    server = _serve_file(serve, small_file, loop)
    away = small_file.path.with_name("moved.bin")
    small_file.path.rename(away)
    if replacement == "directory":
        small_file.path.mkdir()
    with connect(server.port) as sock:
        assert read_to_eof(sock) == f"error: cannot read small.bin: {why}\n".encode()
    server.wait_for(rf"ERROR +file: {re.escape(str(small_file.path))}: {why} \(for ")
    if replacement == "directory":
        small_file.path.rmdir()
    away.rename(small_file.path)  # back again: served again, the server never stopped
    assert _read_all(server.port) == (small_file.size, small_file.sha)


# ---------------------------------------------------------------------------- bad readers


def test_reader_reset_mid_transfer_releases_everything(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    server = _serve_file(serve, big_file, loop)
    baseline = server.fd_count()
    sock = connect(server.port)
    port = sock.getsockname()[1]
    try:
        _recv_exactly(sock, 4 * MIB)
        assert server.fd_count() == baseline + 3  # socket, its duplicate, the file
    finally:
        _abort(sock)
    server.wait_for(rf"closed 127\.0\.0\.1:{port} ")
    _fds_settle(server, baseline)
    assert _read_all(server.port) == (big_file.size, big_file.sha)  # still serving
    _fds_settle(server, baseline)
    assert server.stop() == 0
    assert server.count(r"WARNING|ERROR") == 0, server.stderr


def test_reader_that_never_reads_is_dropped(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    server = _serve_file(serve, big_file, loop, "--write-timeout", "1")
    baseline = server.fd_count()
    started = time.monotonic()
    with connect(server.port, rcvbuf=4096) as sock:
        port = sock.getsockname()[1]
        server.wait_for(
            rf"file: 127\.0\.0\.1:{port}: no progress for 1 s, dropping the reader",
            timeout=5 * UNIT,
        )
        dropped = time.monotonic() - started
        _fds_settle(server, baseline)
        received = len(expect_reset(sock))
    assert 1.0 <= dropped < 4.0 * UNIT, dropped
    assert received < 16 * MIB  # what the kernel buffers took, not the file
    server.wait_for(rf"closed 127\.0\.0\.1:{port} \(.*write timeout")


# ---------------------------------------------------------------------------- zero copy


@pytest.fixture
def strace_log(tmp_path: Path) -> Iterator[Path]:
    why = strace_works()
    if why is not None:
        pytest.skip(why)
    yield tmp_path / "strace.log"


def test_file_is_sent_with_sendfile(
    serve: StartServer, big_file: Served, loop: str, strace_log: Path
) -> None:
    """The bytes never enter the process: sendfile from the file to the socket, and no
    read of the file at all."""
    wrapper = strace_wrapper(strace_log, "sendfile,read,pread64,readv,preadv,mmap")
    server = serve("file", str(big_file.path), "--loop", loop, wrapper=wrapper)
    with connect(server.port, timeout=30 * UNIT) as sock:
        port = sock.getsockname()[1]
        assert hash_to_eof(sock) == (big_file.size, big_file.sha)
    server.wait_for(rf"closed 127\.0\.0\.1:{port} ")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    log = strace_log.read_text()
    path = re.escape(str(big_file.path))
    sends = re.findall(rf"sendfile\(\d+<TCP:\[[^\]]*:{port}\]>, \d+<{path}>, .*= (\d+)", log)
    assert sum(map(int, sends)) == big_file.size
    assert not re.search(rf"(read|pread64|readv|preadv|mmap)\(\d+<{path}>", log)


# ---------------------------------------------------------------------------- shutdown


def _read_outcome(sock: socket.socket) -> tuple[int, str, str]:
    """(bytes, sha256, "eof" or "reset"): how a transfer ended for the reader."""
    h = hashlib.sha256()
    total = 0
    try:
        while chunk := sock.recv(1 * MIB):
            h.update(chunk)
            total += len(chunk)
    except ConnectionResetError:
        return total, h.hexdigest(), "reset"
    return total, h.hexdigest(), "eof"


def test_sigterm_lets_a_transfer_finish_within_grace(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    """A reader mid-transfer when SIGTERM comes gets the whole file (it reads on, well
    within the grace period), never a clean EOF after part of it."""
    server = _serve_file(serve, big_file, loop, "--grace", "10")
    with connect(server.port, rcvbuf=65536) as sock:
        head = _recv_exactly(sock, 1 * MIB)
        server.signal(signal.SIGTERM)
        server.wait_for("SIGTERM received: shutting down")
        n, _, how = _read_outcome(sock)
    assert (len(head) + n, how) == (big_file.size, "eof")
    assert server.wait() == 0


def test_sigterm_past_grace_resets_an_unfinished_transfer(
    serve: StartServer, big_file: Served, loop: str
) -> None:
    """A reader that is not reading when the grace period ends is reset: a partial file
    must never end with a clean EOF, or the reader would take it for the whole file."""
    server = _serve_file(serve, big_file, loop, "--grace", "1")
    with connect(server.port, rcvbuf=65536) as sock:
        head = _recv_exactly(sock, 1 * MIB)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0  # the grace period is over, the server is gone
        n, _, how = _read_outcome(sock)
    assert len(head) + n < big_file.size
    assert how == "reset", f"a clean EOF after {len(head) + n} of {big_file.size} bytes"


def test_a_file_that_shrinks_mid_transfer_resets_the_reader(
    serve: StartServer, tmp_path: Path, loop: str
) -> None:
    """Truncated while being sent: a FIN would tell the reader it has the whole file, so
    the server resets the connection and logs why; it keeps serving."""
    served = _make(tmp_path / "shrinking.bin", 83, 64 * MIB)
    server = _serve_file(serve, served, loop)
    with connect(server.port, timeout=30 * UNIT) as sock:
        port = sock.getsockname()[1]
        _recv_exactly(sock, 1 * MIB)  # the transfer has begun; the rest waits for us
        with served.path.open("r+b") as f:
            f.truncate(8 * MIB)
        assert 1 * MIB + len(expect_reset(sock)) < served.size
    server.wait_for(rf"file: .*shrank to \d+ bytes while being sent to 127\.0\.0\.1:{port}")
    server.wait_for(rf"closed 127\.0\.0\.1:{port} .*file shrank")
    assert _read_all(server.port)[0] == 8 * MIB  # the next reader gets the file as it is now
    assert server.stop() == 0

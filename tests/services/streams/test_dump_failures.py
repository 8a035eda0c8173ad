"""``twoway serve dump`` when things go wrong: a quota, a full disk, SIGTERM, ``kill -9``.

The rule every test checks: bytes the server read are in the file, in order, with no gap,
and the client is told "stored" (a FIN after its half-close) only when they are.
"""

from __future__ import annotations

import concurrent.futures
import errno
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from .conftest import StartServer
from .streamkit import (
    MIB,
    UNIT,
    connect,
    expect_reset,
    push_seeded,
    read_to_eof,
    seeded_blocks,
    seeded_bytes,
    sha256_file,
    wait_until,
)


def _only_file(directory: Path) -> Path:
    files = list(directory.iterdir())
    assert len(files) == 1, files
    return files[0]


def _assert_prefix(path: Path, seed: int, total: int) -> int:
    """The file is an exact prefix of the seeded stream of ``total`` bytes; returns its size."""
    size = path.stat().st_size
    assert size <= total
    with path.open("rb") as f:
        offset = 0
        for block in seeded_blocks(seed, total):
            if offset >= size:
                break
            got = f.read(len(block))
            want = block[: len(got)]
            assert got == want, f"the file differs from the stream near offset {offset}"
            offset += len(got)
    return size


# ---------------------------------------------------------------------------- quota


@pytest.mark.parametrize("sent", [1_000_001, 3 * MIB])
def test_max_bytes_cuts_at_exactly_n(serve: StartServer, tmp_path: Path, sent: int) -> None:
    limit = 1_000_000
    server = serve("dump", "--dir", str(tmp_path), "--max-bytes", str(limit))
    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        push_seeded(sock, 11, sent)  # the server reads and discards what is over the quota
        reply = read_to_eof(sock)  # no half-close: the server ends the connection itself
    assert reply == f"error: quota exceeded ({limit} bytes)\n".encode()
    path = _only_file(tmp_path)
    assert path.name.endswith(f"_{port}.dump")
    assert path.read_bytes() == seeded_bytes(11, sent)[:limit]
    server.wait_for(rf"dump: {re.escape(str(path))}: stored {limit} bytes from ")
    server.wait_for(rf"closed 127\.0\.0\.1:{port} \(.*quota exceeded")


@pytest.mark.parametrize("sent", [999_999, 1_000_000])
def test_max_bytes_not_exceeded_is_stored(serve: StartServer, tmp_path: Path, sent: int) -> None:
    """Sending exactly the quota is not exceeding it: a normal upload with a clean FIN."""
    limit = 1_000_000
    server = serve("dump", "--dir", str(tmp_path), "--max-bytes", str(limit))
    with connect(server.port) as sock:
        push_seeded(sock, 12, sent)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert _only_file(tmp_path).read_bytes() == seeded_bytes(12, sent)
    server.wait_for(rf"stored {sent} bytes from ")


# ---------------------------------------------------------------------------- disk full


def _upload_expecting_reset(port: int, seed: int, size: int) -> None:
    """Push, half-close, and require a reset (while sending, or instead of the FIN); a
    clean EOF would tell the client its data is stored."""
    with connect(port) as sock:
        try:
            push_seeded(sock, seed, size)
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # already reset: the error is reported by the next recv
                if exc.errno != errno.ENOTCONN:
                    raise
            expect_reset(sock)
        except (ConnectionResetError, BrokenPipeError):
            pass


@pytest.mark.parametrize(
    "filler",
    [0, MIB - 10_000],
    ids=["empty-disk", "8KiB-left"],  # 8 KiB left: the write that fills the disk is partial
)
def test_disk_full_aborts_without_fin_and_keeps_serving(
    serve: StartServer, tiny_tmpfs: Path, filler: int
) -> None:
    """4 MiB into a 1 MiB tmpfs: one log line with what the file holds, a reset for the
    client, and the next upload is stored once there is room again."""
    directory = tiny_tmpfs / "dumps"
    directory.mkdir()
    if filler:
        (tiny_tmpfs / "filler").write_bytes(b"\0" * filler)
    server = serve("dump", "--dir", str(directory))
    _upload_expecting_reset(server.port, 21, 4 * MIB)
    pattern = r"ERROR +dump: (\S+): No space left on device \(wrote (\d+) bytes\)$"
    m = server.wait_for(pattern)
    path, wrote = Path(m.group(1)), int(m.group(2))
    assert path.parent == directory
    # What the log says is what the file holds, and it is what was sent, without a gap.
    assert _assert_prefix(path, 21, 4 * MIB) == wrote
    assert 0 < wrote <= MIB - filler
    server.wait_for(r"closed 127\.0\.0\.1:\d+ \(.*disk error")

    # The server keeps serving: once there is room again, the next upload is stored.
    path.unlink()
    (tiny_tmpfs / "filler").unlink(missing_ok=True)
    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        digest = push_seeded(sock, 22, 256 * 1024)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    [second] = directory.glob(f"*_{port}.dump")
    assert sha256_file(second) == digest
    assert server.stop() == 0
    assert server.count(r"No space left on device") == 1, server.stderr
    assert "Traceback" not in server.stderr


@pytest.mark.parametrize("policy", ["close", "always"])
def test_fsync_failure_aborts_without_fin(serve: StartServer, thin_disk: Path, policy: str) -> None:
    """Every write succeeds, the fsync fails: the client must not be told "stored"."""
    directory = thin_disk / "dumps"
    server = serve("dump", "--dir", str(directory), "--fsync", policy)
    _upload_expecting_reset(server.port, 23, 16 * MIB)
    m = server.wait_for(
        r"ERROR +dump: (\S+): (No space left on device|Input/output error) \(wrote \d+ bytes\)$"
    )
    server.wait_for(r"closed 127\.0\.0\.1:\d+ \(.*disk error")
    assert server.stop() == 0  # still running after the error; every line logged now
    assert server.count(rf"{re.escape(m.group(1))}: stored ") == 0, server.stderr
    assert server.count(r"ERROR") == 1, server.stderr


# ---------------------------------------------------------------------------- SIGTERM


def test_sigterm_keeps_what_was_read_then_aborts(serve: StartServer, tmp_path: Path) -> None:
    """10 MB sent, no half-close: the grace period runs out, the connection is aborted
    (no FIN: the upload never finished), and all 10 MB are in the file."""
    size = 10_000_000
    server = serve("dump", "--dir", str(tmp_path), "--grace", "1")
    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        digest = push_seeded(sock, 31, size)
        server.signal(signal.SIGTERM)
        server.wait_for("SIGTERM received: shutting down")
        expect_reset(sock)  # after the grace period
    assert server.wait() == 0
    path = _only_file(tmp_path)
    assert path.stat().st_size == size
    assert sha256_file(path) == digest
    server.wait_for(rf"connection from 127\.0\.0\.1:{port} ended early after {size} bytes")
    server.wait_for(rf"stored {size} bytes from 127\.0\.0\.1:{port}")
    server.wait_for(r"grace period over: aborting 1 connection")
    server.wait_for(rf"closed 127\.0\.0\.1:{port} \(in 9765\.6 KiB, .*shutdown")


def test_sigterm_lets_an_upload_finish_within_grace(serve: StartServer, tmp_path: Path) -> None:
    """An upload that half-closes during the grace period completes normally (a FIN)."""
    size = 10_000_000
    server = serve("dump", "--dir", str(tmp_path), "--grace", "10")
    with connect(server.port) as sock:
        digest = push_seeded(sock, 32, size)
        server.signal(signal.SIGTERM)
        server.wait_for("SIGTERM received: shutting down")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert server.wait() == 0  # well before the 10 s grace: nothing left to wait for
    assert sha256_file(_only_file(tmp_path)) == digest
    assert server.count("grace period over") == 0


# ---------------------------------------------------------------------------- kill -9


def test_kill_9_leaves_an_exact_prefix(serve: StartServer, tmp_path: Path) -> None:
    total = 512 * MIB  # far more than gets through before the kill
    server = serve("dump", "--dir", str(tmp_path), "--fsync", "never")
    server.expect_clean_exit = False
    with connect(server.port) as sock, concurrent.futures.ThreadPoolExecutor(1) as pool:
        pushing = pool.submit(push_seeded, sock, 41, total)
        wait_until(
            lambda: any(p.stat().st_size >= 32 * MIB for p in tmp_path.iterdir()),
            15 * UNIT,
            "32 MiB in the file",
        )
        server.signal(signal.SIGKILL)
        assert server.wait() == -signal.SIGKILL
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            pushing.result(timeout=30 * UNIT)
    size = _assert_prefix(_only_file(tmp_path), 41, total)
    assert 32 * MIB <= size < total


# ---------------------------------------------------------------------------- no file


def test_file_cannot_be_created_is_an_error_line(serve: StartServer, tmp_path: Path) -> None:
    """The directory vanished after start-up: the client reads why, the server goes on."""
    directory = tmp_path / "dumps"
    server = serve("dump", "--dir", str(directory))
    directory.rmdir()
    with connect(server.port) as sock:
        sock.sendall(b"lost\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b"error: cannot store data (no such file or directory)\n"
    server.wait_for(rf"ERROR +dump: cannot create a file in {re.escape(str(directory))}: No such")
    directory.mkdir()
    with connect(server.port) as sock:
        sock.sendall(b"kept\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert _only_file(directory).read_bytes() == b"kept\n"


# ---------------------------------------------------------------------------- idle


def test_idle_timeout_resets_rather_than_acknowledges(serve: StartServer, tmp_path: Path) -> None:
    """An upload idle past --idle-timeout is kept (what was read is stored) and ended with
    a reset. Not with a FIN: a client that half-closes after it would read that FIN as
    "stored", for bytes sent after the timeout too, which the server discards."""
    server = serve("dump", "--dir", str(tmp_path), "--idle-timeout", "1")
    with connect(server.port, timeout=5 * UNIT) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"a" * 1000)
        with pytest.raises(ConnectionResetError):
            sock.recv(1)  # what the server does at the idle timeout: b"" would be a FIN
    server.wait_for(rf"stored 1000 bytes from 127\.0\.0\.1:{port}")
    server.wait_for(rf"closed 127\.0\.0\.1:{port} \(.*idle")
    assert _only_file(tmp_path).read_bytes() == b"a" * 1000


def test_a_slow_upload_that_keeps_sending_is_not_idle(serve: StartServer, tmp_path: Path) -> None:
    """Bytes keep arriving, more slowly than --idle-timeout: the upload is not cut (read by
    a splice pump, the bytes are counted from its thread, where the idle sweep sees them)."""
    server = serve("dump", "--dir", str(tmp_path), "--idle-timeout", "1")
    with connect(server.port, timeout=5 * UNIT) as sock:
        for _ in range(10):  # 3 s in all, three times the idle timeout
            sock.sendall(b"b" * 1000)
            time.sleep(0.3)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""  # the FIN that says "stored"
    assert _only_file(tmp_path).read_bytes() == b"b" * 10_000
    assert server.count(r"idle") == 0, server.stderr

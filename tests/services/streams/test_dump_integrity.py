"""``twoway serve dump``: every byte sent is stored, and the FIN means "stored".

Seeded random data over parallel connections: each client half-closes, waits for the
server's FIN and then checks, at once, that its file holds exactly what it sent. The file
must already be complete when the FIN arrives: that is the promise.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import LOOPS, StartServer
from .streamkit import MIB, UNIT, connect, push_seeded, sha256_file

_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)_(127\.0\.0\.1)_(\d+)\.dump$")


@dataclass(frozen=True, slots=True)
class Upload:
    port: int
    size: int
    sent_sha: str
    stored_sha: str
    path: Path
    seconds: float


def _upload(port: int, directory: Path, seed: int, size: int) -> Upload:
    """One client: push, half-close, wait for the server's FIN, then check the file."""
    started = time.monotonic()
    with connect(port, timeout=30 * UNIT) as sock:
        local_port = sock.getsockname()[1]
        sent = push_seeded(sock, seed, size)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"", "the server sent data instead of its FIN"
    # The FIN came: the file must be complete now, not eventually.
    [path] = directory.glob(f"*_{local_port}.dump")
    assert path.stat().st_size == size
    return Upload(local_port, size, sent, sha256_file(path), path, time.monotonic() - started)


def _parallel_uploads(
    port: int, directory: Path, conns: int, size: int, seed: int
) -> tuple[list[Upload], float]:
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        futures = [pool.submit(_upload, port, directory, seed + i, size) for i in range(conns)]
        uploads = [f.result() for f in futures]
    return uploads, time.monotonic() - started


def _check(uploads: list[Upload], directory: Path, before: datetime.datetime) -> None:
    after = datetime.datetime.now(datetime.UTC)
    files = sorted(p.name for p in directory.iterdir())
    assert len(files) == len(uploads), files
    assert len({u.port for u in uploads}) == len(uploads)
    for up in uploads:
        assert up.stored_sha == up.sent_sha, f"{up.path.name}: content differs"
        m = _NAME.match(up.path.name)
        assert m, f"unexpected file name {up.path.name}"
        assert int(m.group(3)) == up.port
        stamp = datetime.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S.%fZ").replace(
            tzinfo=datetime.UTC
        )
        assert before <= stamp <= after, f"{stamp} is not the UTC time of the upload"


@pytest.mark.parametrize("loop", LOOPS)
def test_dump_8x4mib_smoke(serve: StartServer, tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "dumps"  # created by the server
    before = datetime.datetime.now(datetime.UTC)
    server = serve("dump", "--dir", str(directory), "--loop", loop)
    uploads, _ = _parallel_uploads(server.port, directory, 8, 4 * MIB, seed=1000)
    _check(uploads, directory, before)
    for up in uploads:
        server.wait_for(rf"dump: \S+_{up.port}\.dump: stored {4 * MIB} bytes from ")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dump_1gib_over_8_connections(
    serve: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "dumps"
    before = datetime.datetime.now(datetime.UTC)
    server = serve("dump", "--dir", str(directory))  # default loop, default fsync (close)
    uploads, seconds = _parallel_uploads(server.port, directory, 8, 128 * MIB, seed=2000)
    _check(uploads, directory, before)
    hwm = server.status_kib("VmHWM")
    with capsys.disabled():
        print(
            f"\n[dump 1 GiB / 8 conns: {seconds:.1f} s, {1024 / seconds:.0f} MiB/s "
            f"including client hashing and server fsync; server peak RSS {hwm // 1024} MiB]"
        )
    assert seconds < 60 * UNIT
    # Bounded memory: at most a buffer and a write in flight per connection (4 MiB each),
    # over the interpreter's own ~30 MiB; 1 GiB went through.
    assert hwm < (8 * 2 * 4 + 64) * 1024, f"peak RSS {hwm // 1024} MiB"

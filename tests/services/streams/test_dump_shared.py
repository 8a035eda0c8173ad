"""``twoway serve dump --file PATH``: every connection appends to one file.

Connections interleave by whole received chunks, so each client's bytes appear in the file
in order and complete, mixed with the others'; with ``--lines`` they interleave by whole
lines only. The clients write concurrently, cutting lines at random places (TCP_NODELAY),
so that chunks ending mid-line are certain.
"""

from __future__ import annotations

import concurrent.futures
import random
import socket
import threading
from pathlib import Path

from .conftest import StartServer
from .streamkit import MIB, connect, read_to_eof, seeded_blocks

_HIGH = bytes(range(128, 256))
_LOW = bytes(range(128))
_TO_HIGH = bytes((b | 0x80) for b in range(256))
_TO_LOW = bytes((b & 0x7F) for b in range(256))


def _send_and_finish(port: int, chunks: list[bytes], start: threading.Barrier) -> None:
    with connect(port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start.wait()
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""  # the FIN: this client's part is stored


def _runs(data: bytes, is_a: bytes) -> int:
    """How many times the file switches between the two clients."""
    flags = data.translate(is_a)
    return flags.count(b"\x00\x01") + flags.count(b"\x01\x00") + 1


def test_shared_file_interleaves_whole_chunks(serve: StartServer, tmp_path: Path) -> None:
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target))
    size = 16 * MIB
    # Client A sends only bytes below 128, client B only bytes from 128: each one's part
    # of the file can be picked out and compared.
    a = [block.translate(_TO_LOW) for block in seeded_blocks(51, size, 64 * 1024)]
    b = [block.translate(_TO_HIGH) for block in seeded_blocks(52, size, 64 * 1024)]
    start = threading.Barrier(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(_send_and_finish, server.port, c, start) for c in (a, b)]:
            f.result()
    data = target.read_bytes()
    assert len(data) == 2 * size
    assert data.translate(None, _HIGH) == b"".join(a)
    assert data.translate(None, _LOW) == b"".join(b)
    is_a = bytes(1 if i < 128 else 0 for i in range(256))
    assert _runs(data, is_a) > 2, "the uploads did not overlap: nothing was tested"
    server.wait_for(rf"{target}: stored {size} bytes", timeout=5)


def _lines_for(name: str, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        f"{name} {i:06d} ".encode() + rng.randbytes(rng.randint(0, 300)).hex().encode() + b"\n"
        for i in range(count)
    ]


def _cut(lines: list[bytes], seed: int) -> list[bytes]:
    """The same bytes, cut into pieces at random places (mostly mid-line)."""
    rng = random.Random(seed)
    data = b"".join(lines)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(1, 3000)
        pieces.append(data[i : i + n])
        i += n
    return pieces


def test_shared_file_lines_interleave_by_whole_lines(serve: StartServer, tmp_path: Path) -> None:
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines")
    sent = {name: _lines_for(name, seed, 20_000) for name, seed in (("A", 61), ("B", 62))}
    start = threading.Barrier(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(_send_and_finish, server.port, _cut(lines, i), start)
            for i, lines in enumerate(sent.values())
        ]
        for f in futures:
            f.result()
    stored = target.read_bytes().splitlines(keepends=True)
    by_client: dict[str, list[bytes]] = {"A": [], "B": []}
    switches = 0
    for i, line in enumerate(stored):
        owner = line[:1].decode()
        assert owner in by_client and line.endswith(b"\n"), f"line {i} is broken: {line[:60]!r}"
        by_client[owner].append(line)
        switches += i > 0 and stored[i - 1][:1] != line[:1]
    # Every line intact, from one client, in that client's order; nothing lost.
    assert by_client == sent
    assert switches > 1, "the uploads did not overlap: nothing was tested"


def test_shared_file_lines_a_line_longer_than_the_buffer(
    serve: StartServer, tmp_path: Path
) -> None:
    """A "line" longer than the read buffer cannot be held back whole without holding
    the client forever: it is written in pieces and the upload completes."""
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines")
    line = b"".join(block.hex().encode() for block in seeded_blocks(71, 3 * MIB)) + b"\n"
    with connect(server.port) as sock:
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert target.read_bytes() == line

"""``twoway serve dump --file PATH --lines``: lines from different connections never glue.

The clients are real ``nc -N`` processes (OpenBSD netcat: half-close when stdin ends, exit
when the server closes), so a connection's last line can end without a newline exactly as
a shell pipeline sends it. A connection's unterminated last line is closed with a newline,
and a quota cut keeps lines whole.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from helpers import wait_until as async_wait_until
from twoway.net.server import serve
from twoway.services.dump import DumpService

from .conftest import LOOPS, StartServer
from .streamkit import HOST, MIB, UNIT, connect, read_to_eof, seeded_blocks, wait_until

pytestmark = pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")


def _nc(port: int, data: bytes) -> bytes:
    """``printf DATA | nc -N HOST PORT``: what the server sent back before its FIN."""
    done = subprocess.run(
        ["nc", "-N", HOST, str(port)],
        input=data,
        capture_output=True,
        timeout=20 * UNIT,
        check=True,
    )
    return done.stdout


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_unterminated_last_line_is_closed(serve: StartServer, tmp_path: Path, loop: str) -> None:
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines", "--loop", loop)
    assert _nc(server.port, b"one\nunterminated") == b""
    assert _nc(server.port, b"two\n") == b""
    assert target.read_bytes() == b"one\nunterminated\ntwo\n"
    server.wait_for(rf"{target}: stored 17 bytes")  # what is in the file, newline included


def test_quota_cut_keeps_lines_whole(serve: StartServer, tmp_path: Path, loop: str) -> None:
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines", "--max-bytes", "10", "--loop", loop)
    quota = b"error: quota exceeded (10 bytes)\n"
    assert _nc(server.port, b"12345678901\n") == quota  # its only line is over the quota
    assert _nc(server.port, b"zzzz\n") == b""
    assert _nc(server.port, b"abc\ndefghij\nkl\n") == quota  # 10 bytes end inside line 2
    assert _nc(server.port, b"0123456789") == b""  # exactly the quota, closed at its end
    assert target.read_bytes() == b"zzzz\nabc\n0123456789\n"


def test_concurrent_connections_never_glue(serve: StartServer, tmp_path: Path, loop: str) -> None:
    """Ten ``nc`` at once, each with a whole line and a last line sent in two parts, the
    second part only once every connection has sent its first; they end in random order.
    Every line of the file is one whole line of one client, in that client's order."""
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines", "--loop", loop)
    replies = [tmp_path / f"reply{i}" for i in range(10)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for reply in replies:
            with reply.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        ["nc", "-N", HOST, str(server.port)], stdin=subprocess.PIPE, stdout=out
                    )
                )
        for i, proc in enumerate(procs):
            assert proc.stdin is not None
            proc.stdin.write(f"c{i} first\nc{i} last".encode())
            proc.stdin.flush()
        # Every first line stored: each connection now holds an unfinished line.
        wait_until(lambda: target.read_bytes().count(b" first\n") == len(procs), what="firsts")
        order = list(range(len(procs)))
        random.Random(7).shuffle(order)
        for i in order:
            stdin = procs[i].stdin
            assert stdin is not None
            stdin.write(b" part")
            stdin.close()
        for proc, reply in zip(procs, replies, strict=True):
            assert proc.wait(20 * UNIT) == 0
            assert reply.read_bytes() == b""
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = target.read_bytes().split(b"\n")
    assert lines.pop() == b"", "the file does not end with a newline"
    mine: dict[str, list[bytes]] = {f"c{i}": [] for i in range(len(procs))}
    for line in lines:
        owner = line.split(b" ", 1)[0].decode()
        assert owner in mine, f"a line glued from two connections: {line!r}"
        mine[owner].append(line)
    assert mine == {f"c{i}": [f"c{i} first".encode(), f"c{i} last part".encode()] for i in order}


def test_reset_connection_last_line_is_closed(serve: StartServer, tmp_path: Path) -> None:
    """A client that resets mid-line: what was read is stored, and its line is ended."""
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines")
    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"whole\nhalf a li")  # one segment: read at once, the line held back
        wait_until(lambda: target.read_bytes() == b"whole\n", what="the first line")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.wait_for(rf"{target}: stored \d+ bytes from 127\.0\.0\.1:{port}")
    assert _nc(server.port, b"after\n") == b""
    assert target.read_bytes() == b"whole\nhalf a li\nafter\n"


def _unread(server_port: int, client_port: int) -> int:
    """Bytes the server has not yet read from the connection from ``client_port`` (the
    receive queue of its socket, from /proc/net/tcp)."""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == server_port and (
            int(remote.rsplit(":", 1)[1], 16) == client_port
        ):
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no connection from port {client_port}")


def test_a_line_in_pieces_keeps_the_file_until_its_end(serve: StartServer, tmp_path: Path) -> None:
    """A line longer than the buffer goes to the file in pieces; a line another client sends
    meanwhile waits for its end instead of landing inside it."""
    target = tmp_path / "all.log"
    server = serve("dump", "--file", str(target), "--lines")
    head = b"".join(block.hex().encode() for block in seeded_blocks(81, 3 * MIB))  # 6 MiB
    with connect(server.port) as a:
        a.sendall(head)
        wait_until(lambda: target.stat().st_size > 0, what="the first piece of the long line")
        with connect(server.port) as b:
            b.sendall(b"a line from b\n")
            b.shutdown(socket.SHUT_WR)
            wait_until(lambda: _unread(server.port, b.getsockname()[1]) == 0, what="b read")
            a.sendall(b" and its end\n")
            a.shutdown(socket.SHUT_WR)
            assert read_to_eof(a) == b""
            assert read_to_eof(b) == b""  # stored, after a's line
    got = target.read_bytes()
    assert got == head + b" and its end\na line from b\n", "b's line is not after a's"


async def test_a_stalled_line_keeps_the_file_for_line_hold_at_most(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends most of a long line and stalls: after ``line_hold`` its line is
    ended where it stands, the line waiting behind it is stored, and the rest of the long
    line follows as a line of its own. (In-process, for a short ``line_hold``.)"""
    target = tmp_path / "all.log"
    hold = 0.5 * UNIT
    service = DumpService(file=target, lines=True, line_hold=hold)
    server = await serve(service, "127.0.0.1", 0)
    port = server.addresses[0][1]
    head = b"x" * (5 * MIB)
    ra, wa = await asyncio.open_connection("127.0.0.1", port)
    rb, wb = await asyncio.open_connection("127.0.0.1", port)
    try:
        wa.write(head)
        await wa.drain()
        await async_wait_until(lambda: target.stat().st_size > 0, what="a first piece")
        wb.write(b"a line from b\n")
        wb.write_eof()
        started = time.monotonic()
        assert await asyncio.wait_for(rb.read(), 10 * UNIT) == b""  # stored
        assert time.monotonic() - started < hold + 3 * UNIT
        wa.write(b"and the rest\n")
        wa.write_eof()
        assert await asyncio.wait_for(ra.read(), 10 * UNIT) == b""
    finally:
        for w in (wa, wb):
            w.close()
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(service.on_stopped(), 10 * UNIT)
    got = target.read_bytes()
    cut = got.index(b"\n")
    assert got == head[:cut] + b"\na line from b\n" + head[cut:] + b"and the rest\n"
    assert "held the file for" in caplog.text

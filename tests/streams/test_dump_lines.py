"""``twoway serve dump --file PATH --lines``: lines from different connections never glue.

The clients are real ``nc -N`` processes (OpenBSD netcat: half-close when stdin ends, exit
when the server closes), so a connection's last line can end without a newline exactly as
a shell pipeline sends it. A connection's unterminated last line is closed with a newline,
and a quota cut keeps lines whole.
"""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from .conftest import LOOPS, StartServer
from .streamkit import HOST, UNIT, connect, wait_until

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

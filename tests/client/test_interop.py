"""``twoway connect`` against servers that are not twoway: ``ncat --chat`` and a classic
Node.js ``net`` server (replies without newlines, ends when the client ends)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from .clientkit import UNIT, Proc, free_port
from .conftest import Procs

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

NODE_SERVER = r"""
// The classic Node.js TCP server: answers each chunk, without a newline.
const net = require('net');
const server = net.createServer((socket) => {
  socket.setEncoding('utf8');
  socket.on('data', (data) => socket.write('Server says: ' + data.trim()));
  socket.on('end', () => socket.end());
});
server.listen(0, '127.0.0.1', () => {
  console.error('listening on 127.0.0.1:' + server.address().port);
});
"""


async def read_until(reader: asyncio.StreamReader, pattern: bytes) -> re.Match[bytes]:
    """Read lines until one matches ``pattern`` (ncat also announces joins and leaves)."""
    seen = []
    async with asyncio.timeout(5 * UNIT):
        while line := await reader.readline():
            if m := re.fullmatch(pattern, line):
                return m
            seen.append(line)
    raise AssertionError(f"EOF before {pattern!r}; got {seen}")


@pytest.fixture
async def node_server(procs: Procs, tmp_path: Path) -> Proc:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    script = tmp_path / "server.js"
    script.write_text(NODE_SERVER)
    proc = await procs.start("node", str(script))
    await proc.wait_ready()
    return proc


@pytest.fixture
async def ncat_chat(procs: Procs) -> Proc:
    if shutil.which("ncat") is None:
        pytest.skip("ncat is not installed")
    port = free_port()
    proc = await procs.start("ncat", "-v", "-l", "-k", "--chat", "127.0.0.1", str(port))
    await proc.stderr.wait_for(r"Ncat: Listening on 127\.0\.0\.1:\d+")
    proc.port = port
    return proc


async def test_three_named_connections_to_a_node_server(procs: Procs, node_server: Proc) -> None:
    """Dwarves, Elves and Hobbits, like the classic three-connection client: each writes
    once, the (newline-less) answer is shown as a line prefixed with the name, and -v logs
    each connection's addresses, end and close with its byte counts."""
    client = await procs.client(
        "127.0.0.1", str(node_server.port), "--names", "Dwarves,Elves,Hobbits",
        "--send", "{name} are the best", "--count", "1", "-v",
    )  # fmt: skip
    assert await client.wait() == 0
    assert sorted(client.stdout.lines()) == [
        "[Dwarves] Server says: Dwarves are the best",
        "[Elves] Server says: Elves are the best",
        "[Hobbits] Server says: Hobbits are the best",
    ]
    log = client.stderr.text
    port = node_server.port
    for name in ("Dwarves", "Elves", "Hobbits"):
        sent = len(f"{name} are the best\n")
        answer = len(f"Server says: {name} are the best")
        assert re.search(
            rf"^\[{name}\] connected 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{port}$", log, re.M
        )
        assert f"[{name}] end: the server finished sending" in log
        assert re.search(
            rf"^\[{name}\] close: read {answer} B, wrote {sent} B in \d+\.\d s$", log, re.M
        ), log


async def test_pipe_mode_against_a_node_server(procs: Procs, node_server: Proc) -> None:
    client = await procs.client("127.0.0.1", str(node_server.port), stdin=asyncio.subprocess.PIPE)
    await client.write(b"I am Chuck Norris!")
    await client.stdout.wait_for("Server says: I am Chuck Norris!")
    client.close_stdin()
    assert await client.wait() == 0
    assert client.stdout.text == "Server says: I am Chuck Norris!"


async def test_ncat_chat_both_ways(procs: Procs, ncat_chat: Proc) -> None:
    """A plain socket and twoway in an ``ncat --chat`` room: each reads the other."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ncat_chat.port)
    try:
        # our own join: "connected as <userN>", then "already connected: nobody."
        await read_until(reader, rb"<announce> already connected: nobody\.\n")
        client = await procs.client(
            "127.0.0.1", str(ncat_chat.port), "-v", stdin=asyncio.subprocess.PIPE
        )
        await client.stderr.wait_for(r"^connected 127\.0\.0\.1:\d+ -> ")
        # ncat tells the room who joined: then it has registered the client.
        m = await read_until(reader, rb"<announce> 127\.0\.0\.1 is connected as (<user\d+>)\.\n")
        await client.write(b"hello from twoway\n")
        await read_until(reader, re.escape(m.group(1)) + rb" hello from twoway\n")
        writer.write(b"hi there\n")
        await writer.drain()
        await client.stdout.wait_for(r"^<user\d+> hi there$")
        client.close_stdin()  # half-close: ncat drops us, the client sees the end
        assert await client.wait() == 0
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass

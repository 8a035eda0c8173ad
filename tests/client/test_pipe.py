"""``twoway connect`` in pipe mode (stdin is not a terminal), as scripts use it: raw bytes
both ways, half-close at the end of stdin, exit 0 when the server closes, and exactly one
line on stderr (never a traceback) for every way a connection can fail."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import signal
import socket
import struct
from pathlib import Path

import pytest

from .clientkit import TWOWAY, UNIT, Proc, blackhole, free_port
from .conftest import Procs

# The client processes run on their own loop (``--loop``); the test's loop does not matter.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

CLIENT_LOOPS = ["uvloop", "asyncio"]


def one_line(stderr: str) -> str:
    """The only line of ``stderr``: fails on none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


async def test_printf_hello_quit_against_upper(procs: Procs) -> None:
    """The issue's example, through a real shell pipeline."""
    server = await procs.server("upper")
    cmd = f"printf 'hello\\nquit\\n' | {shlex.join(TWOWAY)} connect 127.0.0.1 {server.port}"
    shell = await asyncio.create_subprocess_shell(
        cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(shell.communicate(), 10 * UNIT)
    assert shell.returncode == 0, err
    assert out == b'You said "HELLO"\nBye Bye!\n'
    assert err == b""


@pytest.mark.parametrize("loop", CLIENT_LOOPS)
@pytest.mark.parametrize("stdin_kind", ["file", "pipe"])
async def test_binary_round_trip_through_echo(
    procs: Procs, tmp_path: Path, loop: str, stdin_kind: str
) -> None:
    """16 MiB of random bytes to ``echo`` and back, unchanged. Far more than the socket
    buffers hold, so the client must keep reading while it sends: a client that stopped
    reading while its writes waited (or asyncio's ``loop.sendfile``, which pauses reading)
    would stall here. A regular file on stdin goes by sendfile; a pipe by reads."""
    server = await procs.server("echo")
    payload = os.urandom(16 << 20)
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    dst = tmp_path / "out.bin"
    args = ["127.0.0.1", str(server.port), "--loop", loop, "--output", str(dst)]
    if stdin_kind == "file":
        with src.open("rb") as f:
            client = await procs.client(*args, stdin=f)
        code = await client.wait(30 * UNIT)
    else:
        client = await procs.client(*args, stdin=asyncio.subprocess.PIPE)
        await client.write(payload)
        client.close_stdin()
        code = await client.wait(30 * UNIT)
    assert code == 0, client.stderr.text
    assert client.stderr.text == ""
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(payload).digest()


async def test_stdout_pipe_gets_the_raw_bytes(procs: Procs) -> None:
    """Without --output, what arrives goes to stdout (a pipe here) byte for byte: CR, NUL,
    escape sequences and invalid UTF-8 included."""
    server = await procs.server("echo")
    payload = b"a\r\n\x00\x1b[31mred\xff\xfe\nno newline at the end"
    client = await procs.client("127.0.0.1", str(server.port), stdin=asyncio.subprocess.PIPE)
    await client.write(payload)
    client.close_stdin()
    assert await client.wait() == 0
    assert bytes(client.stdout.data) == payload


async def test_empty_stdin_half_closes_and_exits_0(procs: Procs) -> None:
    """stdin is /dev/null (which epoll refuses): the client sends FIN at once; echo closes
    only when it reads our FIN, so a clean exit proves the half-close. -v tells the story
    (a host name, so the lookup too)."""
    server = await procs.server("echo")
    client = await procs.client("localhost", str(server.port), "-v")
    assert await client.wait() == 0
    assert client.stdout.data == b""
    lines = client.stderr.lines()
    assert lines[0] == "looking up localhost"
    assert re.fullmatch(rf"connected 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{server.port}", lines[1])
    assert "end: the server finished sending" in lines
    assert re.fullmatch(r"close: read 0 B, wrote 0 B in \d+\.\d s", lines[-2])
    assert lines[-1] == "disconnected: closed"


async def test_sigterm_ends_the_client_quietly_with_143(procs: Procs) -> None:
    server = await procs.server("upper")
    client = await procs.client("127.0.0.1", str(server.port), "-v", stdin=asyncio.subprocess.PIPE)
    await client.stderr.wait_for("^connected ")
    client.kill(signal.SIGTERM)
    assert await client.wait() == 143
    assert "Traceback" not in client.stderr.text


async def test_server_close_ends_the_client_while_stdin_stays_open(procs: Procs) -> None:
    """Exit 0 when the server closes, even though stdin never ends."""
    server = await procs.server("upper")
    client = await procs.client("127.0.0.1", str(server.port), stdin=asyncio.subprocess.PIPE)
    await client.write(b"hi\nquit\n")
    assert await client.wait() == 0
    assert client.stdout.text == 'You said "HI"\nBye Bye!\n'
    assert client.stderr.text == ""


async def test_refused_is_one_line_and_exit_1(procs: Procs) -> None:
    port = free_port()
    client = await procs.client("127.0.0.1", str(port))
    assert await client.wait() == 1
    assert one_line(client.stderr.text) == (
        f"twoway: cannot connect to 127.0.0.1:{port}: connection refused"
    )


async def test_unknown_host_is_one_line_and_exit_1(procs: Procs) -> None:
    client = await procs.client("no-such-host.invalid", "4001")
    assert await client.wait() == 1
    line = one_line(client.stderr.text)
    assert line == "twoway: cannot connect to no-such-host.invalid:4001: unknown host"


async def test_unknown_host_is_fatal_even_with_reconnect(procs: Procs) -> None:
    """Retrying cannot make a name exist: no retry, the same one line."""
    client = await procs.client("no-such-host.invalid", "4001", "--reconnect")
    assert await client.wait() == 1
    assert one_line(client.stderr.text).endswith("unknown host")


async def test_connect_timeout_is_one_line_and_exit_1(procs: Procs) -> None:
    with blackhole() as (host, port):
        client = await procs.client(host, str(port), "--connect-timeout", "0.3")
        assert await client.wait() == 1
    assert one_line(client.stderr.text) == f"twoway: cannot connect to {host}:{port}: timed out"


@pytest.mark.parametrize("verbose", [False, True])
async def test_reset_by_the_server_is_one_line_and_exit_1(procs: Procs, verbose: bool) -> None:
    """What arrived before the reset is written out; then one line, exit 1 (with -v, the
    lifecycle lines come first: the error, the close with its counts)."""

    async def reset_after_a_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writer.write(b"partial\n")
        await writer.drain()
        await reader.readline()  # the client's line: then reset
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset_after_a_line, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        args = ["-v"] if verbose else []
        client = await procs.client("127.0.0.1", str(port), *args, stdin=asyncio.subprocess.PIPE)
        await client.stdout.wait_for("partial\n")
        await client.write(b"go\n")
        assert await client.wait() == 1
    assert client.stdout.text == "partial\n"
    last = f"twoway: connection to 127.0.0.1:{port} lost: connection reset by peer"
    if not verbose:
        assert one_line(client.stderr.text) == last
        return
    lines = client.stderr.lines()
    assert lines[-3] == "error: connection reset by peer"
    assert re.fullmatch(r"close: read 8 B, wrote 3 B in \d+\.\d s", lines[-2])
    assert lines[-1] == last


async def test_idle_timeout_gives_up_on_a_silent_server(procs: Procs) -> None:
    """A server that accepts and never says anything: --timeout ends it, one line, exit 1."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = await procs.client(
            "127.0.0.1", str(port), "--timeout", "0.3", stdin=asyncio.subprocess.PIPE
        )
        assert await client.wait() == 1
        for writer in held:
            writer.close()
    assert one_line(client.stderr.text) == (
        f"twoway: connection to 127.0.0.1:{port} lost: nothing received for 0.3 s"
    )


async def test_bad_output_file_is_one_line(procs: Procs, tmp_path: Path) -> None:
    server = await procs.server("echo")
    client = await procs.client(
        "127.0.0.1", str(server.port), "--output", str(tmp_path / "no" / "such" / "dir")
    )
    assert await client.wait() == 1
    assert "No such file" in one_line(client.stderr.text) or "no such file" in (
        client.stderr.text.lower()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--names", "a,a"], "a name appears twice"),
        (["--names", "a,,b"], "empty name"),
        (["--connections", "2", "--names", "a,b"], "either --connections or --names"),
        (["--send", "x {bogus}"], "unknown placeholder {bogus}"),
        (["--every", "0"], "--every"),
        # 0 is "off" now, as for serve (issue 13: one --keepalive convention).
        (["--keepalive", "soon"], "--keepalive"),
    ],
)
async def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = await Proc.start(*TWOWAY, "connect", "127.0.0.1", "4001", *args)
    try:
        assert await proc.wait() == 2
    finally:
        await proc.stop()
    assert message in one_line(proc.stderr.text)

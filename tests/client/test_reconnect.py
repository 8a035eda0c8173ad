"""``--reconnect``: a killed and restarted server, the bounded buffer of lines sent while
disconnected, no busy loop during an outage, no descriptor leaked over many cycles."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from .clientkit import UNIT, cpu_seconds, fd_count, free_port
from .conftest import Procs

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

# Every line the client may print on stderr in reconnect mode: one per state change.
STATE_LINE = re.compile(
    r"connected to \S+"
    r"|disconnected: .+"
    r"|reconnecting in \d+\.\d s \(attempt \d+\)"
    r"|cannot connect to \S+: .+"
    r"|buffer full \(\d+ lines\): dropping the oldest"
    r"|dropped \d+ line\(s\) while disconnected \(buffer \d+\)"
)


def assert_only_state_lines(stderr: str) -> None:
    assert "Traceback" not in stderr
    for line in stderr.splitlines():
        assert STATE_LINE.fullmatch(line), f"unexpected stderr line {line!r}"


def ticks(stdout: str) -> list[int]:
    return [int(n) for n in re.findall(r'You said "TICK (\d+)"', stdout)]


async def test_server_killed_and_restarted_during_a_periodic_send(procs: Procs) -> None:
    """The client notices, says so in one line per state change, retries with backoff
    using no CPU meanwhile, buffers what it sends, and carries on when the server is back
    on the same port: buffered ticks first, in order, then new ones."""
    port = free_port()
    server = await procs.server("upper", port=port)
    client = await procs.client(
        "127.0.0.1", str(port),
        "--send", "tick {seq}", "--every", "0.1",
        "--reconnect", "--retry-delay", "0.5", "--retry-max", "1", "--buffer", "5",
    )  # fmt: skip
    await client.stderr.wait_for(f"^connected to 127.0.0.1:{port}$")
    await client.stdout.wait_for('You said "TICK 3"')

    server.kill()
    assert await server.wait() == -9
    await client.stderr.wait_for(r"disconnected: (closed by the server|connection reset by peer)")
    await client.stderr.wait_for(r"reconnecting in 0\.\d s \(attempt 2\)")
    before = ticks(client.stdout.text)
    cpu0, t0 = cpu_seconds(client.pid), time.monotonic()
    # Three failed attempts later (0.5 s + 1 s + 1 s of backoff) the outage has lasted
    # over two seconds, during which the sender kept buffering a tick every 0.1 s.
    await client.stderr.wait_for(r"reconnecting in \d\.\d s \(attempt 5\)", 15 * UNIT)
    cpu, elapsed = cpu_seconds(client.pid) - cpu0, time.monotonic() - t0
    assert elapsed > 1.5
    # --retry-max 1 caps the backoff: 0.5 s doubles to 1 s by attempt 3 and stays there
    # (jitter only lowers a capped delay), where an ignored cap would wait 2 s, then 4 s.
    delays = {
        int(attempt): float(delay)
        for delay, attempt in re.findall(
            r"reconnecting in (\d+\.\d) s \(attempt (\d+)\)", client.stderr.text
        )
    }
    assert all(delay <= 1.0 for delay in delays.values()), delays
    assert all(delays[attempt] >= 0.9 for attempt in (3, 4, 5)), delays
    assert cpu / elapsed < 0.05, f"{cpu:.2f} s of CPU in {elapsed:.1f} s of outage"
    await client.stderr.wait_for(r"cannot connect to 127\.0\.0\.1:\d+: connection refused")
    await client.stderr.wait_for(r"buffer full \(5 lines\): dropping the oldest")

    await procs.server("upper", port=port)
    await client.stderr.wait_for(f"^connected to 127.0.0.1:{port}$", count=2)
    await client.stderr.wait_for(r"dropped \d+ line\(s\) while disconnected \(buffer 5\)")
    last = before[-1] if before else 0
    # carries on: the kept ticks are answered, then new ones
    m = await client.stdout.wait_for(r'You said "TICK (\d+)"', count=len(before) + 1)
    await client.stdout.wait_for(rf'You said "TICK {int(m.group(1)) + 10}"')
    after = ticks(client.stdout.text)[len(before) :]
    assert after == sorted(after), "replies out of order"
    assert len(set(after)) == len(after), "a tick was answered twice"
    # The five kept ticks come first and are the latest ones of the outage: a gap before.
    assert after[0] > last + 1
    assert after[:6] == list(range(after[0], after[0] + 6))
    assert_only_state_lines(client.stderr.text)


async def test_lines_read_while_disconnected_wait_in_a_bounded_buffer(procs: Procs) -> None:
    """Pipe mode with --reconnect: seven lines arrive while the server is down, five are
    kept (the latest), the overflow is counted and reported, the rest is delivered when the
    server comes up, and the end of stdin still ends the session cleanly."""
    port = free_port()
    client = await procs.client(
        "127.0.0.1", str(port),
        "--reconnect", "--buffer", "5", "--retry-delay", "0.2", "--retry-max", "0.2",
        stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await client.stderr.wait_for(rf"cannot connect to 127\.0\.0\.1:{port}: connection refused")
    await client.write(b"".join(b"line %d\n" % i for i in range(1, 8)))
    await client.stderr.wait_for(r"buffer full \(5 lines\): dropping the oldest")

    await procs.server("upper", port=port)
    await client.stdout.wait_for('You said "LINE 7"')
    assert client.stdout.lines() == [f'You said "LINE {i}"' for i in range(3, 8)]
    await client.stderr.wait_for(r"dropped 2 line\(s\) while disconnected \(buffer 5\)")
    client.close_stdin()
    assert await client.wait() == 0
    assert_only_state_lines(client.stderr.text)
    lines = client.stderr.lines()
    assert lines[0] == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert lines[1] == "reconnecting in 0.2 s (attempt 2)"
    assert lines[-3:] == [
        f"connected to 127.0.0.1:{port}",
        "dropped 2 line(s) while disconnected (buffer 5)",
        "disconnected: closed",  # our FIN first, then the server's: done
    ]


async def test_100_reconnect_cycles_leak_no_descriptor(procs: Procs) -> None:
    """A server that accepts and closes at once, 110 times. When it accepts the 10th and
    the 110th connection, the client holds exactly that one socket open (it closed the
    previous one before connecting again): its descriptor count must be the same."""
    accepted = 0
    counts: dict[int, int] = {}
    finished = asyncio.Event()
    pid = 0

    async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal accepted
        accepted += 1
        if accepted in (10, 110):
            counts[accepted] = fd_count(pid)
        writer.close()
        if accepted == 110:
            finished.set()
        await writer.wait_closed()

    server = await asyncio.start_server(accept_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = await procs.client(
            "127.0.0.1", str(port), "--reconnect", "--retry-delay", "0", "--retry-max", "0",
            stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        pid = client.pid
        await asyncio.wait_for(finished.wait(), 30 * UNIT)
        await client.stop()
    assert counts[10] == counts[110], counts
    assert client.stderr.text.count("disconnected: closed by the server") >= 109

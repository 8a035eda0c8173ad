"""Safe defaults for a server on the open internet (issue 11), as a user runs it.

Trickling peers are cut by the line deadline, dead peers by TCP keep-alive (on by default),
and per-IP limits count an IPv6 client by its /64. Black holes and IPv6 sources are made
honestly in a private network namespace (root only; skipped otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from helpers import TWOWAY, UNIT, CliServer, serve_args

needs_root_ip = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2's ip",
)


@contextlib.contextmanager
def netns() -> Iterator[list[str]]:
    """A private network namespace with loopback up; yields the ``ip netns exec NAME``
    prefix that runs a command inside it. Deleted at the end."""
    name = f"twoway-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def test_trickling_peers_are_cut_by_the_line_deadline() -> None:
    """200 peers sending one byte every 0.2 s are never idle; the deadline ends them all."""
    server = CliServer(
        serve_args("upper", "--line-timeout", "1", "--idle-timeout", "3")
    ).wait_ready()
    try:
        peers = [await asyncio.open_connection(server.host, server.port) for _ in range(200)]

        async def trickle(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"x")
                    await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(trickle(w)) for _, w in peers]
        try:
            for reader, _ in peers:
                line = await asyncio.wait_for(reader.readline(), 10 * UNIT)
                assert line == b"error: line not finished within 1 s, disconnecting\n"
                assert await asyncio.wait_for(reader.read(), 10 * UNIT) == b""
        finally:
            for task in tasks:
                task.cancel()
            for _, writer in peers:
                writer.close()
        server.wait_for(r"closed .*line timeout", count=200)
    finally:
        assert server.stop() == 0


def _keepalive_timers(netns_run: list[str], port: int) -> list[str]:
    out = subprocess.run(
        [*netns_run, "ss", "-tno", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if "timer:" in line]


@needs_root_ip
def test_keepalive_is_on_by_default_and_drops_a_black_holed_peer() -> None:
    if shutil.which("nc") is None or shutil.which("ss") is None:
        pytest.skip("needs nc and ss")
    with netns() as run:
        # Default options: `ss` shows the keep-alive timer on the accepted connection.
        server = CliServer(serve_args("upper"), program=[*run, *TWOWAY]).wait_ready()
        try:
            with subprocess.Popen(
                [*run, "nc", "127.0.0.1", str(server.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            ) as nc:
                server.wait_for(r"connection from")
                timers = _keepalive_timers(run, server.port)
                assert any("keepalive" in t for t in timers), timers
                nc.kill()
        finally:
            assert server.stop() == 0
        # A peer that vanishes (loopback down: every packet dropped) is found by the probes.
        server = CliServer(
            serve_args("upper", "--keepalive", "1,1,2"), program=[*run, *TWOWAY]
        ).wait_ready()
        try:
            with subprocess.Popen(
                [*run, "nc", "127.0.0.1", str(server.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            ) as nc:
                server.wait_for(r"connection from")
                subprocess.run([*run, "ip", "link", "set", "lo", "down"], check=True)
                # 1 s idle + 2 probes 1 s apart: gone within a few seconds, with the reason.
                server.wait_for(r"closed .*timed out", timeout=15 * UNIT)
                subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
                nc.kill()
        finally:
            server.stop()


@needs_root_ip
@pytest.mark.parametrize(("prefix", "second_refused"), [(None, True), ("128", False)])
def test_per_ip_limits_count_an_ipv6_client_by_its_network(
    prefix: str | None, second_refused: bool
) -> None:
    if shutil.which("nc") is None:
        pytest.skip("needs nc")
    with netns() as run:
        for addr in ("2001:db8:1::1", "2001:db8:1::2", "2001:db8:2::1"):
            subprocess.run(
                [*run, "ip", "-6", "addr", "add", f"{addr}/128", "dev", "lo", "nodad"],
                check=True,
            )
        args = ["--host", "2001:db8:1::1", "--max-conns-per-ip", "1"]
        if prefix is not None:
            args += ["--ipv6-prefix", prefix]
        server = CliServer(serve_args("upper", *args), program=[*run, *TWOWAY]).wait_ready()
        clients: list[subprocess.Popen[bytes]] = []
        try:

            def client(source: str) -> subprocess.Popen[bytes]:
                proc = subprocess.Popen(
                    [*run, "nc", "-s", source, "2001:db8:1::1", str(server.port)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                clients.append(proc)
                return proc

            first = client("2001:db8:1::1")
            server.wait_for(r"connection from \[2001:db8:1::1\]")
            second = client("2001:db8:1::2")  # same /64
            if second_refused:
                assert second.stdout is not None
                line = second.stdout.readline()
                assert line == b"error: too many connections from 2001:db8:1::/64 (max 1)\n"
            else:
                server.wait_for(r"connection from \[2001:db8:1::2\]")
            client("2001:db8:2::1")  # another /64: its own count
            server.wait_for(r"connection from \[2001:db8:2::1\]")
            assert first.poll() is None
        finally:
            for proc in clients:
                proc.kill()
                proc.communicate()  # waits and closes the pipes
            server.stop()

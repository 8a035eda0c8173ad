"""The PROXY protocol parser against the real sender: HAProxy (Debian package ``haproxy``).

HAProxy relays clients to a small asyncio listener in the test with ``send-proxy`` (v1) and
``send-proxy-v2`` (with CRC32C and unique-id TLVs); the listener captures the exact bytes
and feeds them to :class:`twoway.sansio.proxy.ProxyReader`, which must name the real
client: its source address (127.0.0.2, not the proxy's) and port. HAProxy's health checks
are captured too: v1 checks carry HAProxy's own addresses, v2 checks the LOCAL command.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import UNIT, wait_until
from twoway.errors import ProxyProtocolError
from twoway.sansio.proxy import Command, Family, ProxyHeader, ProxyReader, parse_header

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="needs haproxy (Debian package haproxy; test.sh installs it)"
)


@dataclass
class Captured:
    """One connection as the backend saw it."""

    raw: bytes
    header: ProxyHeader | None
    payload: bytes
    error: ProxyProtocolError | None = None


@contextlib.asynccontextmanager
async def capture() -> AsyncIterator[tuple[int, asyncio.Queue[Captured]]]:
    """A listener on 127.0.0.1 that reads each connection's PROXY header and first line."""
    got: asyncio.Queue[Captured] = asyncio.Queue()

    async def read(reader: asyncio.StreamReader) -> bytes:
        # HAProxy ends its health checks with a reset: that is an end of stream here.
        try:
            return await reader.read(4096)
        except ConnectionResetError:
            return b""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser, raw, header = ProxyReader(), b"", None
        try:
            while header is None:
                chunk = await read(reader)
                raw += chunk
                if not chunk:
                    parser.feed_eof()
                header = parser.feed(chunk)
            payload = parser.payload
            while b"\n" not in payload and (chunk := await read(reader)):
                raw += chunk
                payload += chunk
            got.put_nowait(Captured(raw, header, payload))
        except ProxyProtocolError as exc:
            got.put_nowait(Captured(raw, None, b"", exc))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], got
    finally:
        server.close()
        await server.wait_closed()


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on ``port`` (read from /proc: probing by connecting would
    send a connection through HAProxy to the capture)."""
    want = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1] + " ").endswith(want) and fields[3] == "0A":
                    return True
    return False


@contextlib.contextmanager
def haproxy(tmp_path: Path, config: str) -> Iterator[subprocess.Popen[bytes]]:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    maxconn 200\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n"
        "    timeout server 30s\n" + config
    )
    assert HAPROXY is not None
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5 * UNIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


async def through(
    front: tuple[str, int], source: str, got: asyncio.Queue[Captured]
) -> tuple[int, Captured]:
    """Connect to HAProxy's frontend from ``source``, send a line; what the backend got."""
    _, writer = await asyncio.open_connection(*front, local_addr=(source, 0))
    client_port = writer.get_extra_info("sockname")[1]
    writer.write(b"hello through the proxy\n")
    await writer.drain()
    seen = await asyncio.wait_for(got.get(), 10 * UNIT)
    writer.close()
    return client_port, seen


def v6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_send_proxy_v1_names_the_real_client(tmp_path: Path) -> None:
    p4, p6 = free_port(), free_port()
    async with capture() as (backend, got):
        binds = f"    bind 127.0.0.1:{p4}\n" + (f"    bind [::1]:{p6}\n" if v6_loopback() else "")
        config = (
            f"frontend f\n{binds}    default_backend b\n"
            f"backend b\n    server s 127.0.0.1:{backend} send-proxy\n"
        )
        with haproxy(tmp_path, config):
            await wait_until(lambda: listening(p4), 10 * UNIT, "haproxy to listen")
            port, seen = await through(("127.0.0.1", p4), "127.0.0.2", got)
            assert seen.raw.startswith(f"PROXY TCP4 127.0.0.2 127.0.0.1 {port} {p4}\r\n".encode())
            assert seen.header is not None and seen.header.version == 1
            assert seen.header.client == ("127.0.0.2", port)
            assert seen.header.destination == ("127.0.0.1", p4)
            assert seen.payload == b"hello through the proxy\n"
            assert parse_header(seen.raw) == seen.header
            if v6_loopback():
                await wait_until(lambda: listening(p6), 10 * UNIT, "haproxy on ::1")
                port, seen = await through(("::1", p6), "::1", got)
                assert seen.header is not None and seen.header.family is Family.INET6
                assert seen.header.client == ("::1", port)
                assert seen.raw.startswith(f"PROXY TCP6 ::1 ::1 {port} {p6}\r\n".encode())


async def test_send_proxy_v2_with_crc32c_and_unique_id(tmp_path: Path) -> None:
    p4, p6 = free_port(), free_port()
    async with capture() as (backend, got):
        binds = f"    bind 127.0.0.1:{p4}\n" + (f"    bind [::1]:{p6}\n" if v6_loopback() else "")
        config = (
            f"frontend f\n{binds}    unique-id-format conn-%ci-%cp\n    default_backend b\n"
            f"backend b\n    server s 127.0.0.1:{backend} send-proxy-v2 "
            "proxy-v2-options crc32c,unique-id\n"
        )
        with haproxy(tmp_path, config):
            await wait_until(lambda: listening(p4), 10 * UNIT, "haproxy to listen")
            port, seen = await through(("127.0.0.1", p4), "127.0.0.2", got)
            h = seen.header
            assert h is not None, seen.error
            assert (h.version, h.command, h.family) == (2, Command.PROXY, Family.INET)
            assert h.client == ("127.0.0.2", port) and h.destination == ("127.0.0.1", p4)
            assert h.tlv(0x03) is not None  # the checksum was there, and it verified
            assert h.tlv(0x05) == f"conn-127.0.0.2-{port}".encode()
            assert seen.raw[h.length :] == seen.payload == b"hello through the proxy\n"
            if v6_loopback():
                await wait_until(lambda: listening(p6), 10 * UNIT, "haproxy on ::1")
                port, seen = await through(("::1", p6), "::1", got)
                assert seen.header is not None and seen.header.family is Family.INET6
                assert seen.header.client == ("::1", port)


async def test_health_checks_v1_own_addresses_v2_local(tmp_path: Path) -> None:
    async with capture() as (check1, got1), capture() as (check2, got2):
        config = (  # HAProxy refuses to run without a listener: one that admits nobody.
            f"frontend idle\n    bind 127.0.0.1:{free_port()}\n"
            "    tcp-request connection reject\n"
            f"backend c1\n    server s 127.0.0.1:{check1} send-proxy check inter 200ms\n"
            f"backend c2\n    server s 127.0.0.1:{check2} send-proxy-v2 check inter 200ms\n"
        )
        with haproxy(tmp_path, config) as proc:
            v1 = await asyncio.wait_for(got1.get(), 10 * UNIT)
            assert proc.poll() is None
            v2 = await asyncio.wait_for(got2.get(), 10 * UNIT)
    assert v1.header is not None and v1.header.destination == ("127.0.0.1", check1)
    assert v2.header is not None and v2.header.command is Command.LOCAL
    assert v2.header.client is None and v2.payload == b""

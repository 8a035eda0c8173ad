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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import HAPROXY, UNIT, wait_until
from helpers import run_haproxy as haproxy
from twoway.errors import ProxyProtocolError
from twoway.sansio.proxy import Command, Family, ProxyHeader, ProxyReader, parse_header

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


# ---------------------------------------------------------------------------- PROXY, then TLS
#
# With both, the header arrives in clear before the ClientHello, often in the same segment,
# so no byte past the header may leave the socket before TLS starts. The recipe proven here
# on both loops: accept the socket, peek/consume exactly the header (ProxyReader.take),
# then ``connect_accepted_socket(ssl=...)``, which awaits the handshake and raises on
# failure, so every failed handshake is one catchable line.


def _wake(ready: asyncio.Future[None]) -> None:
    # Level-triggered: the callback may run again before the waiting task resumes.
    if not ready.done():
        ready.set_result(None)


async def read_proxy_header(sock: socket.socket, reader: ProxyReader) -> ProxyHeader:
    """Consume exactly one PROXY header from a non-blocking socket."""
    loop = asyncio.get_running_loop()
    while True:
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())
        peeked = sock.recv(reader.max_v2_length, socket.MSG_PEEK)
        if not peeked:
            reader.feed_eof()
        n, header = reader.take(peeked)
        assert sock.recv(n) == peeked[:n]
        if header is not None:
            return header


@dataclass
class Accepted:
    header: ProxyHeader | None = None
    error: str | None = None
    lines: list[bytes] | None = None


@contextlib.asynccontextmanager
async def proxy_tls_listener(tls: object) -> AsyncIterator[tuple[int, asyncio.Queue[Accepted]]]:
    import ssl as ssl_module

    from twoway.errors import describe_oserror

    assert isinstance(tls, ssl_module.SSLContext)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Accepted] = asyncio.Queue()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()

    class Echo(asyncio.Protocol):
        transport: Any  # uvloop's TLS transport is no asyncio.Transport subclass

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            before, quit, _ = data.partition(b"quit")
            if before:
                self.transport.write(b"echo: " + before)
            if quit:
                self.transport.close()

    async def serve_one(sock: socket.socket) -> None:
        got = Accepted()
        try:
            async with asyncio.timeout(3 * UNIT):  # the header and the handshake, both
                got.header = await read_proxy_header(sock, ProxyReader())
                await loop.connect_accepted_socket(
                    Echo, sock, ssl=tls, ssl_handshake_timeout=2 * UNIT
                )
        except (ProxyProtocolError, OSError, TimeoutError) as exc:
            got.error = describe_oserror(exc)
            sock.close()
        events.put_nowait(got)

    async def accept_loop() -> None:
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(serve_one(sock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = asyncio.create_task(accept_loop())
    try:
        yield listener.getsockname()[1], events
    finally:
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(acceptor, *tasks, return_exceptions=True)
        listener.close()


def tls_context(tmp_path: Path) -> object:
    from twoway.tls import ServerTls, TlsSettings

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=behind-haproxy", "-days", "2",
         "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return ServerTls(TlsSettings(tmp_path / "c.pem", tmp_path / "k.pem")).context


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_proxy_v2_then_tls_through_haproxy(tmp_path: Path) -> None:
    front = free_port()
    async with proxy_tls_listener(tls_context(tmp_path)) as (backend, events):
        config = (
            f"frontend f\n    bind 127.0.0.1:{front}\n    default_backend b\n"
            f"backend b\n    server s 127.0.0.1:{backend} send-proxy-v2\n"
        )
        with haproxy(tmp_path, config):
            await wait_until(lambda: listening(front), 10 * UNIT, "haproxy to listen")
            proc = await asyncio.create_subprocess_exec(
                "openssl", "s_client", "-connect", f"127.0.0.1:{front}", "-bind", "127.0.0.3:0",
                "-ign_eof", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(b"hi\nquit\n"), 10 * UNIT)
            got = await asyncio.wait_for(events.get(), 5 * UNIT)
    assert got.error is None, got.error
    assert got.header is not None and got.header.client is not None
    assert got.header.client[0] == "127.0.0.3"
    assert b"echo: hi" in out, err.decode()
    assert b"CN=behind-haproxy" in out or b"CN = behind-haproxy" in out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("after_header", [b"hello in plain text\r\n", b""])
async def test_plain_text_or_silence_after_the_header_is_one_line(
    tmp_path: Path, after_header: bytes
) -> None:
    async with proxy_tls_listener(tls_context(tmp_path)) as (port, events):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 443\r\n" + after_header)
        got = await asyncio.wait_for(events.get(), 10 * UNIT)
        writer.close()
    assert got.header is not None and got.header.client == ("198.51.100.7", 5555)
    assert got.error is not None and "\n" not in got.error
    if after_header:
        assert got.error.startswith("TLS error"), got.error
    else:  # a stalled handshake is bounded by the handshake timeout
        assert "timed out" in got.error or "taking longer" in got.error.lower(), got.error

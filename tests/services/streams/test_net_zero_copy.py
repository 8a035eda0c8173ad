"""The zero-copy primitives of ``twoway.net`` on their own, on both event loops:
``sendfile`` (file → a connection's socket) and ``SpliceThread`` (a connection's socket →
file). Real TCP connections, a real TLS one (which both must refuse: the bytes on a TLS
socket are ciphertext), real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import ssl
import threading
from pathlib import Path

import pytest

from bus.buskit import make_certificates
from twoway.net.client import connect
from twoway.net.sendfile import SocketSender, sendfile
from twoway.net.splice import PumpResult, SpliceThread, splice_supported

from .streamkit import UNIT


async def _sink_server(
    received: asyncio.Future[bytes], ssl_context: ssl.SSLContext | None = None
) -> asyncio.Server:
    """A server that reads one connection to its end and hands over what it read."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        if not received.done():
            received.set_result(data)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def test_sendfile_sends_from_the_offset_to_the_end(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    server = await _sink_server(received)
    conn = await connect("127.0.0.1", _port(server), framing="raw")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 1000, os.SEEK_SET)
        assert await sendfile(conn, fd) is True
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)  # the offset ends after it
        assert conn.bytes_written == len(data) - 1000
        conn.end()  # half-close: our FIN
        got = await asyncio.wait_for(received, 10 * UNIT)
    finally:
        os.close(fd)
        conn.close()
        await conn.wait_closed()
        server.close()
        await server.wait_closed()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data[1000:]).digest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
async def test_tls_is_refused_by_both(tmp_path: Path) -> None:
    """On TLS, ``sendfile`` sends nothing and says so (the caller writes through the
    connection instead), and neither primitive takes the socket on the server side."""
    cert, key, ca = make_certificates(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    refused: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        no_sender = SocketSender.open(transport) is None
        no_pump = SpliceThread.start(transport, -1, lambda r: None, offset=0) is None
        refused.set_result((no_sender, no_pump))
        assert await reader.read() == b"by ordinary writes"
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    conn = await connect("127.0.0.1", _port(server), framing="raw", ssl=client_ctx)
    path = tmp_path / "blob"
    path.write_bytes(b"by ordinary writes")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert await sendfile(conn, fd) is False
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0 and conn.bytes_written == 0
        await conn.write(os.read(fd, 100))
        conn.end()  # half-close: our FIN
        assert await asyncio.wait_for(refused, 10 * UNIT) == (True, True)
    finally:
        os.close(fd)
        conn.close()
        await conn.wait_closed()
        server.close()
        await server.wait_closed()


@pytest.mark.skipif(not splice_supported(), reason="no os.splice here")
async def test_splice_thread_moves_a_connection_into_a_file(tmp_path: Path) -> None:
    """The server side hands its transport over; the bytes go to the file, ``done`` comes
    on the event loop's thread."""
    loop = asyncio.get_running_loop()
    data = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "out"
    file_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    done: asyncio.Future[tuple[PumpResult, bool]] = loop.create_future()

    def finished(result: PumpResult) -> None:
        done.set_result((result, threading.current_thread() is threading.main_thread()))

    accepted: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.transport.pause_reading()  # nothing else may read the socket meanwhile
        assert SpliceThread.start(writer.transport, file_fd, finished, offset=0) is not None

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        writer.write(data)
        writer.write_eof()
        await writer.drain()
        result, on_loop = await asyncio.wait_for(done, 10 * UNIT)
        for w in (writer, *accepted):
            w.close()
            await w.wait_closed()
    finally:
        os.close(file_fd)
        server.close()
        await server.wait_closed()
    assert (result.reason, result.moved, on_loop) == ("eof", len(data), True)
    assert path.read_bytes() == data


@pytest.mark.skipif(not splice_supported(), reason="no os.splice here")
async def test_splice_thread_that_cannot_start_leaves_nothing_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread to be had: ``RuntimeError``, and neither the socket's duplicate nor the
    pump's wake-up pipe is left open (the caller reads as usual)."""
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    file_fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        before = len(os.listdir("/proc/self/fd"))
        with monkeypatch.context() as mp:
            mp.setattr(threading.Thread, "start", no_thread)
            with pytest.raises(RuntimeError):
                SpliceThread.start(writer.transport, file_fd, lambda r: None, offset=0)
        started.set_result(len(os.listdir("/proc/self/fd")) - before)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
        try:
            left_open = await asyncio.wait_for(started, 10 * UNIT)
            assert await asyncio.wait_for(reader.read(), 5 * UNIT) == b""  # the FIN: no dup left
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        os.close(file_fd)
        server.close()
        await server.wait_closed()
    assert left_open == 0

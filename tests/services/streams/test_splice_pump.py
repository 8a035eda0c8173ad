"""The splice pump on its own (``twoway.net.splice``): real TCP sockets, real files, a
real full disk. Each test drives ``SplicePump.run`` in a thread, as ``dump`` does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from twoway.net import splice as splice_mod
from twoway.net.server import serve
from twoway.net.splice import PumpResult, SplicePump, SpliceThread, splice_supported
from twoway.services.dump import DumpService

from .conftest import LOOPS
from .streamkit import UNIT

pytestmark = pytest.mark.skipif(not splice_supported(), reason="no os.splice here")


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, server) ends of a loopback TCP connection; the server end non-blocking, as
    an event loop leaves it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


class Running:
    """A pump running in its thread, as ``dump`` runs it, and the file it writes."""

    def __init__(self, pump: SplicePump, file_fd: int) -> None:
        self.pump = pump
        self.file_fd = file_fd
        self.result: PumpResult | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.pump.run()

    def wait_moved(self, n: int) -> None:
        """Until the pump has moved ``n`` bytes into the file (nothing reports it)."""
        deadline = time.monotonic() + 5 * UNIT
        while self.pump.result.moved < n:
            assert time.monotonic() < deadline, f"moved {self.pump.result.moved} of {n}"
            time.sleep(0.01)

    def wait(self) -> PumpResult:
        """Until the pump returns; its result."""
        self.thread.join(10 * UNIT)
        assert not self.thread.is_alive(), "the pump did not stop"
        assert self.result is not None
        return self.result

    def close_file(self) -> None:
        os.close(self.file_fd)


def _start(server: socket.socket, path: Path, **kwargs: object) -> Running:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    pump = SplicePump(os.dup(server.fileno()), fd, offset=0, **kwargs)  # type: ignore[arg-type]
    return Running(pump, fd)


def test_moves_every_byte_in_order_until_eof(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    client, server = tcp_pair
    path = tmp_path / "out"
    seen: list[int] = []
    running = _start(server, path, progress=seen.append, window=256 * 1024)
    data = os.urandom(8 * 1024 * 1024 + 123)
    client.sendall(data)
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert (result.reason, result.moved, result.error) == ("eof", len(data), None)
    assert result.synced  # the default policy (close) syncs before returning
    assert path.read_bytes() == data
    assert seen == sorted(seen) and seen[-1] == len(data)


def test_the_pump_owns_its_descriptor_and_closes_it(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    client, server = tcp_pair
    before = len(os.listdir("/proc/self/fd"))
    running = _start(server, tmp_path / "out")
    client.shutdown(socket.SHUT_WR)
    running.wait()
    running.close_file()
    # Its dup of the socket, its pipe and its wake-up pipe are gone; only the file was ours.
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_limit_stops_at_exactly_that_many_bytes_and_leaves_the_rest_unread(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    client, server = tcp_pair
    path = tmp_path / "out"
    data = os.urandom(3 * 1024 * 1024)
    client.sendall(data[: 2 * 1024 * 1024])
    running = _start(server, path, limit=1_000_001)
    result = running.wait()
    running.close_file()
    assert (result.reason, result.moved) == ("limit", 1_000_001)
    assert path.read_bytes() == data[:1_000_001]
    # The next byte is still in the socket, for the event loop to find over the quota.
    server.setblocking(True)
    assert server.recv(1) == data[1_000_001:1_000_002]


def test_stop_from_another_thread_stores_what_was_read(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    client, server = tcp_pair
    path = tmp_path / "out"
    running = _start(server, path)
    client.sendall(b"a" * 100_000)
    running.wait_moved(100_000)
    running.pump.stop()
    running.pump.stop()  # idempotent
    result = running.wait()
    running.close_file()
    assert (result.reason, result.moved, result.synced) == ("stopped", 100_000, True)
    assert path.read_bytes() == b"a" * 100_000


def test_a_reset_by_the_peer_ends_the_pump_with_what_was_read(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    client, server = tcp_pair
    path = tmp_path / "out"
    running = _start(server, path)
    client.sendall(b"b" * 50_000)
    running.wait_moved(50_000)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # an RST
    result = running.wait()
    running.close_file()
    assert result.reason == "reset"
    assert isinstance(result.error, ConnectionResetError)
    assert result.moved == 50_000 and result.synced
    assert path.read_bytes() == b"b" * 50_000


def test_a_full_disk_is_reported_with_the_bytes_that_fit(
    tcp_pair: tuple[socket.socket, socket.socket], tiny_tmpfs: Path
) -> None:
    client, server = tcp_pair
    path = tiny_tmpfs / "out"
    running = _start(server, path)
    sender = threading.Thread(target=_send_quietly, args=(client, b"c" * (4 * 1024 * 1024)))
    sender.start()
    result = running.wait()
    client.close()
    sender.join(10 * UNIT)
    running.close_file()
    assert result.reason == "disk"
    assert isinstance(result.error, OSError) and result.error.strerror == "No space left on device"
    assert 0 < result.moved <= 1024 * 1024
    assert path.stat().st_size == result.moved
    assert path.read_bytes() == b"c" * result.moved


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the test closed it
        pass


class _Counted:
    """Wraps a function of the splice module, recording when it was called."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls: list[tuple[float, tuple[object, ...]]] = []

    def __call__(self, *args: object) -> object:
        self.calls.append((time.monotonic(), args))
        return self.real(*args)  # type: ignore[operator]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    counted = _Counted(os.fsync)
    monkeypatch.setattr(splice_mod.os, "fsync", counted)
    return counted


def test_policy_never_does_not_sync(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path, fsyncs: _Counted
) -> None:
    client, server = tcp_pair
    running = _start(server, tmp_path / "out", fsync="never", dirpath=tmp_path / "out")
    client.sendall(b"d" * 300_000)
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert result.reason == "eof" and not result.synced and not result.dir_synced
    assert fsyncs.calls == []


def test_policy_close_syncs_the_file_and_its_directory_once(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path, fsyncs: _Counted
) -> None:
    client, server = tcp_pair
    running = _start(server, tmp_path / "out", dirpath=tmp_path / "out")
    client.sendall(b"e" * 3_000_000)
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert result.synced and result.dir_synced
    assert len(fsyncs.calls) == 2  # the file, then its directory


def test_policy_always_syncs_after_each_received_chunk(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path, fsyncs: _Counted
) -> None:
    client, server = tcp_pair
    running = _start(server, tmp_path / "out", fsync="always")
    for _ in range(5):
        client.sendall(b"f" * 10_000)
        time.sleep(0.05)  # five separate arrivals
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert result.synced and result.moved == 50_000
    # One per arrival (maybe fewer, if two arrivals were read as one), never per 4 KiB.
    assert 2 <= len(fsyncs.calls) <= 5


def test_policy_interval_syncs_within_a_second_and_not_when_idle(
    tcp_pair: tuple[socket.socket, socket.socket], tmp_path: Path, fsyncs: _Counted
) -> None:
    client, server = tcp_pair
    running = _start(server, tmp_path / "out", fsync="interval")
    sent = time.monotonic()
    client.sendall(b"g" * 10_000)
    time.sleep(2.5 * UNIT)
    # One sync at most about a second after the data; none for the idle second after it.
    assert len(fsyncs.calls) == 1
    assert fsyncs.calls[0][0] - sent <= 1.3 * UNIT
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert result.synced and len(fsyncs.calls) == 1  # nothing new to sync at the end


def test_write_behind_starts_writeback_per_window(
    tcp_pair: tuple[socket.socket, socket.socket],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if splice_mod._sync_file_range is None:
        pytest.skip("no sync_file_range in this libc")
    counted = _Counted(splice_mod._sync_file_range)
    monkeypatch.setattr(splice_mod, "_sync_file_range", counted)
    client, server = tcp_pair
    path = tmp_path / "out"
    window = 256 * 1024
    running = _start(server, path, window=window)
    data = os.urandom(4 * 1024 * 1024)
    client.sendall(data)
    client.shutdown(socket.SHUT_WR)
    result = running.wait()
    running.close_file()
    assert result.reason == "eof" and path.read_bytes() == data
    starts = [args for _, args in counted.calls]
    assert starts and all(flags == 2 for *_, flags in starts)  # WRITE: start, never wait
    assert all(length > 0 for _, _, length, _ in starts)  # 0 would mean "to the end"
    # The started ranges tile the file from 0 without a gap or overlap.
    offsets = [(off, off + length) for _, off, length, _ in starts]
    assert offsets[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(offsets))
    assert all(end - start >= window for start, end in offsets)


# ------------------------------------------------------------------ inside the dump service


def _run_loop(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def _upload(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, return what the server sent before its FIN."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    await writer.drain()
    reply = await reader.read()
    writer.close()
    return reply


def _dumps(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in directory.glob("*.dump")]


@pytest.mark.parametrize("loop", LOOPS)
def test_past_splice_max_connections_are_read_in_python(tmp_path: Path, loop: str) -> None:
    """One pump at a time: the other uploads take the Python path, in the same server,
    and every file is exact."""
    service = DumpService(tmp_path, splice_max=1)
    running: list[int] = []
    real_start = SpliceThread.start

    def spy(*args: Any, **kwargs: Any) -> SpliceThread | None:
        running.append(sum(s.pump is not None for s in service.sinks))
        return real_start(*args, **kwargs)

    async def main() -> None:
        server = await serve(service, "127.0.0.1", 0)
        port = server.addresses[0][1]
        blobs = [os.urandom(3 * 1024 * 1024 + i) for i in range(4)]
        replies = await asyncio.gather(*(_upload(port, blob) for blob in blobs))
        assert replies == [b""] * 4
        server.close()
        await server.wait_closed()
        assert sorted(_dumps(tmp_path)) == sorted(blobs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SpliceThread, "start", spy)
        _run_loop(loop, main)
    assert running and all(n == 0 for n in running)  # never a second pump at once
    assert service.splice_slots.used == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_the_server_during_a_pump_stores_what_was_read(tmp_path: Path, loop: str) -> None:
    """``Server.close()`` while a pump owns a connection's input: the connection closes at
    once (nothing else reads the socket meanwhile), the file is a prefix of what was sent,
    and the service is done with it."""
    service = DumpService(tmp_path)

    async def main() -> None:
        server = await serve(service, "127.0.0.1", 0)
        port = server.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = os.urandom(2 * 1024 * 1024)
        writer.write(data)
        await writer.drain()
        deadline = time.monotonic() + 5 * UNIT
        while not any(s.pump is not None for s in service.sinks):
            assert time.monotonic() < deadline, "no pump started"
            await asyncio.sleep(0.01)
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5 * UNIT)
        await asyncio.wait_for(service.on_stopped(), 5 * UNIT)
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 5 * UNIT) == b""
        writer.close()
        [stored] = _dumps(tmp_path)
        assert stored == data[: len(stored)] and len(stored) > 0

    _run_loop(loop, main)
    assert service.splice_slots.used == 0 and not service.sinks

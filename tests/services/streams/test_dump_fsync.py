"""``--fsync never|interval|close|always``: correct files under every policy, and (under
strace, where it can run) the fsync calls each policy promises, before the FIN.

What strace shows is what the server asked of the kernel: that ``fsync`` was called and
returned 0 before the FIN. It cannot show that the disk kept its word; no test short of
pulling the power can.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import FreezableDisk, StartServer
from .streamkit import MIB, UNIT, ServerProcess, connect, push_seeded, read_to_eof, sha256_file
from .streamkit import wait_until as _wait_until
from .syscalls import Syscall, parse_strace, strace_works, strace_wrapper

POLICIES = ["never", "interval", "close", "always"]

Traced = Callable[..., tuple[ServerProcess, Path]]
_SYSCALLS = "write,writev,splice,fsync,fdatasync,shutdown,close"
#: What puts bytes into a file: the Python path writes, the splice pump splices.
_WRITES = ("write", "writev", "splice")


def _upload(port: int, directory: Path, seed: int, size: int) -> tuple[int, Path]:
    """Push, half-close, wait for the FIN; check the file at once. Returns (port, path)."""
    with connect(port) as sock:
        local_port = sock.getsockname()[1]
        digest = push_seeded(sock, seed, size)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    [path] = directory.glob(f"*_{local_port}.dump")
    assert sha256_file(path) == digest
    return local_port, path


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_stores_everything(serve: StartServer, tmp_path: Path, policy: str) -> None:
    server = serve("dump", "--dir", str(tmp_path), "--fsync", policy)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        done = [pool.submit(_upload, server.port, tmp_path, 100 + i, 8 * MIB) for i in range(3)]
        for future in done:
            future.result()
    assert len(list(tmp_path.iterdir())) == 3


# ---------------------------------------------------------------------------- under strace


@pytest.fixture
def traced(serve: StartServer, tmp_path: Path) -> Traced:
    """Start a server under strace: returns it and the path of the strace log."""
    why = strace_works()
    if why is not None:
        pytest.skip(why)
    log = tmp_path / "strace.log"

    def start(*args: str, syscalls: str = _SYSCALLS) -> tuple[ServerProcess, Path]:
        return serve(*args, wrapper=strace_wrapper(log, syscalls)), log

    return start


def _events(log: Path) -> list[Syscall]:
    return parse_strace(log.read_text())


def _read_eof(log: Path, client_port: int) -> bool:
    """Whether the server has read the client's FIN (a read returning 0)."""
    mine = f":{client_port}]"
    return any(
        ev.name in ("read", "recvfrom") and ev.result == 0 and ev.target.endswith(mine)
        for ev in _events(log)
    )


def _fin_index(events: list[Syscall], client_port: int) -> int:
    """Where the server sent its FIN to the client: shutdown(SHUT_WR) or close()."""
    for i, ev in enumerate(events):
        if ev.name in ("shutdown", "close") and ev.target.endswith(f":{client_port}]"):
            return i
    raise AssertionError(f"no shutdown/close of the connection from port {client_port}")


@pytest.mark.parametrize("policy", POLICIES)
def test_fsync_calls_match_the_policy(traced: Traced, tmp_path: Path, policy: str) -> None:
    directory = tmp_path / "dumps"
    server, log = traced("dump", "--dir", str(directory), "--fsync", policy)
    port, path = _upload(server.port, directory, 7, 16 * MIB)
    server.wait_for(rf"stored {16 * MIB} bytes")
    events = _events(log)
    fin = _fin_index(events, port)
    name = str(path)
    mine = [(i, ev) for i, ev in enumerate(events) if ev.target == name]
    writes = [i for i, ev in mine if ev.name in _WRITES]
    syncs = [i for i, ev in mine if ev.name in ("fsync", "fdatasync")]
    dir_syncs = [
        i for i, ev in enumerate(events) if ev.name == "fsync" and ev.target == str(directory)
    ]
    assert all(ev.ok for _, ev in mine), [ev for _, ev in mine if not ev.ok]
    assert writes and max(writes) < fin, "a write of the file after the FIN"
    if policy == "never":
        assert not syncs and not dir_syncs
        return
    # Every other policy syncs the file, and once its directory, before the FIN.
    assert syncs and max(writes) < max(syncs) < fin
    assert len(dir_syncs) == 1 and dir_syncs[0] < fin
    if policy == "close":
        assert len(syncs) == 1
    elif policy == "always":
        # Per received chunk (group commit), never per 4 KiB: each write is followed by an
        # fsync before the next write.
        assert len(writes) >= 2
        # (The final sync at the FIN may come on its own, after the last chunk's.)
        order = [events[i].name for i in sorted(writes + syncs)]
        assert all(order[i + 1 : i + 2] == ["fsync"] for i, n in enumerate(order) if n in _WRITES)
        assert len(writes) < 16 * MIB // 4096


def test_interval_syncs_at_least_once_a_second(traced: Traced, tmp_path: Path) -> None:
    """A connection that stays open: each write is synced within a second, and a file whose
    bytes are all synced is not synced again while it stays idle."""
    directory = tmp_path / "dumps"
    server, log = traced("dump", "--dir", str(directory), "--fsync", "interval")

    def syncs_of(name: str) -> list[Syscall]:
        return [e for e in _events(log) if e.target == name and e.name == "fsync"]

    def writes_of(name: str) -> list[Syscall]:
        return [e for e in _events(log) if e.target == name and e.name in _WRITES]

    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        push_seeded(sock, 8, 256 * 1024)
        _wait_until(lambda: list(directory.glob(f"*_{port}.dump")) != [], 5 * UNIT, "the file")
        [path] = directory.glob(f"*_{port}.dump")
        name = str(path)
        _wait_until(lambda: len(syncs_of(name)) >= 1, 3 * UNIT, "a first fsync")
        push_seeded(sock, 9, 256 * 1024)
        _wait_until(lambda: path.stat().st_size == 512 * 1024, 3 * UNIT, "the second push")

        def last_write_synced() -> bool:
            writes, syncs = writes_of(name), syncs_of(name)
            return bool(writes) and bool(syncs) and syncs[-1].time > writes[-1].time

        _wait_until(last_write_synced, 3 * UNIT, "an fsync after the last write")
        quiet = len(syncs_of(name))
        time.sleep(2.5)
        assert len(syncs_of(name)) == quiet, "an idle, synced file was synced again"
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    events = _events(log)
    writes = [e for e in events if e.target == name and e.name in _WRITES]
    syncs = [e for e in events if e.target == name and e.name == "fsync"]
    assert writes and all(e.ok for e in writes + syncs)
    for w in writes:  # every write is on disk within about a second
        after = [s.time for s in syncs if s.time >= w.time]
        assert after and after[0] - w.time <= 1.3, (w, syncs)


def _took(log: Path, client_port: int, size: int) -> bool:
    """Whether the server has taken ``size`` bytes out of the client's socket in one call
    (a read, or a splice into a pump's pipe)."""
    mine = f":{client_port}]>"
    return any(
        re.search(r" (read|recvfrom|splice)\(", line) is not None
        and mine in line
        and line.endswith(f"= {size}")
        for line in log.read_text().splitlines()
    )


def test_close_policy_syncs_when_the_eof_comes_during_a_write(
    traced: Traced, freezable_disk: FreezableDisk, dump_read: str
) -> None:
    """The client's FIN arrives while the last write is still in flight: the final fsync
    must still happen before the server's FIN. The disk is frozen so the write cannot
    finish first. Read in Python, the server reads the EOF meanwhile (strace shows that
    read). With splice, reading stays paused while the first write (of what was read before
    the pump could start) is blocked: the EOF waits in the socket, and the pump started after
    the thaw finds it."""
    directory = freezable_disk.mountpoint / "dumps"
    server, log = traced("dump", "--dir", str(directory), syscalls=_SYSCALLS + ",read,recvfrom")
    with connect(server.port) as sock:
        port = sock.getsockname()[1]
        _wait_until(lambda: list(directory.glob(f"*_{port}.dump")) != [], 5 * UNIT, "the file")
        [path] = directory.glob(f"*_{port}.dump")
        freezable_disk.freeze()
        sock.sendall(b"z" * 1000)  # one segment, one read, one write: blocked in the kernel
        sock.shutdown(socket.SHUT_WR)
        if dump_read == "python":
            _wait_until(lambda: _read_eof(log, port), 5 * UNIT, "the server to read the EOF")
        else:
            _wait_until(lambda: _took(log, port, 1000), 5 * UNIT, "the server to read")
        freezable_disk.thaw()
        assert read_to_eof(sock) == b""
    events = _events(log)
    fin = _fin_index(events, port)
    syncs = [i for i, ev in enumerate(events) if ev.name == "fsync" and ev.target == str(path)]
    assert syncs and syncs[-1] < fin, "the FIN went out before the file was synced"
    assert path.read_bytes() == b"z" * 1000


def test_interval_does_not_sync_a_held_line_every_second(traced: Traced, tmp_path: Path) -> None:
    """``--file --lines``: the start of a line waits in memory for its end; the whole lines
    before it are synced once, and the file is not synced again while only that waits."""
    target = tmp_path / "all.log"
    server, log = traced("dump", "--file", str(target), "--lines", "--fsync", "interval")

    def syncs() -> int:
        return sum(1 for e in _events(log) if e.target == str(target) and e.name == "fsync")

    with connect(server.port) as sock:
        sock.sendall(b"whole\nthe start of a line")
        _wait_until(lambda: target.read_bytes() == b"whole\n", 5 * UNIT, "the whole line")
        _wait_until(lambda: syncs() >= 1, 3 * UNIT, "its fsync")
        quiet = syncs()
        time.sleep(2.5)  # two ticks of the interval policy, which nothing reports
        assert syncs() == quiet, "a file with nothing new to sync was synced again"
        sock.sendall(b" and its end\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    assert target.read_bytes() == b"whole\nthe start of a line and its end\n"

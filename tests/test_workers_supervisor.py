"""``twoway serve --workers N``: the supervisor and its workers watch each other.

- After ``kill -9`` of the supervisor every worker notices (EOF on its liveness link), shuts
  down gracefully (its line clients read ``server shutting down``) and exits within grace.
- A worker that hangs (SIGSTOP: alive, answering nothing) is killed and replaced within the
  liveness timeout, with a log line that says why, and new connections are still served.

Real processes throughout: the CLI, or for a short liveness timeout (no CLI flag sets it) a
small script that runs the same supervisor around ``twoway.run``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bus.buskit import owner_pid
from helpers import UNIT, CliServer, connect, recv_line, recv_until_eof, serve_args

LOOPS = ["asyncio", "uvloop"] if importlib.util.find_spec("uvloop") is not None else ["asyncio"]

_WORKER = re.compile(r"listening on .*\(worker (\d), pid (\d+)\)")
_PIDS = re.compile(r"supervisor: \d+ workers on port \d+ \(pids ([\d, ]+)\)")


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def servers() -> Iterator[list[CliServer]]:
    """Processes to stop (with their workers) at the end of the test, whatever happened."""
    started: list[CliServer] = []
    yield started
    for server in started:
        for pid in _children_of(server):
            _kill(pid)
        server.stop()


def _children_of(server: CliServer) -> list[int]:
    pids = []
    for line in server.lines:
        if m := _WORKER.search(line):
            pids.append(int(m.group(2)))
        elif m := _PIDS.search(line):
            pids.extend(int(p) for p in m.group(1).split(", "))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as gone: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll (every 20 ms) until ``predicate()`` holds: nothing reports a process's end to a
    process that is not its parent."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def _clients_on_every_worker(port: int, pids: list[int]) -> dict[int, list[socket.socket]]:
    """Connect until each worker holds at least one client (the kernel spreads them by hash)."""
    by_pid: dict[int, list[socket.socket]] = {pid: [] for pid in pids}
    for _ in range(60):
        sock = connect(port)
        sock.sendall(b"hi\n")
        assert recv_line(sock) == b'You said "HI"\n'  # served: accepted by some worker
        owner = owner_pid(sock.getsockname()[1], pids)
        assert owner is not None
        by_pid[owner].append(sock)
        if all(by_pid.values()):
            return by_pid
    raise AssertionError(f"60 connections did not reach every worker: {by_pid}")


def test_workers_stop_gracefully_when_the_supervisor_is_killed(
    servers: list[CliServer], loop: str
) -> None:
    grace = 2.0
    server = CliServer(serve_args("upper", "--workers", "2", "--grace", str(grace), loop=loop))
    servers.append(server)
    server.wait_for(_WORKER, 15 * UNIT, count=2)
    server.wait_ready()
    pids = [int(m.group(2)) for line in server.lines if (m := _WORKER.search(line))]
    by_pid = _clients_on_every_worker(server.port, pids)
    clients = [sock for socks in by_pid.values() for sock in socks]
    try:
        server.signal(signal.SIGKILL)  # the supervisor
        killed_at = time.monotonic()
        for sock in clients:
            assert recv_line(sock, 5 * UNIT) == b"server shutting down\n"
            assert recv_until_eof(sock, (grace + 5) * UNIT) == b""
        # Every worker gone within its grace, plus a margin for a loaded machine.
        left = killed_at + grace + 3 * UNIT - time.monotonic()
        _wait(lambda: all(_gone(p) for p in pids), left, "the workers to exit")
    finally:
        for sock in clients:
            sock.close()
    for pid in pids:
        server.wait_for(rf"worker \d \(pid {pid}\): the supervisor is gone: shutting down")
    assert "Traceback" not in server.stderr
    with pytest.raises(OSError):  # nobody serves the port any more
        connect(server.port, timeout=2 * UNIT).close()


# The supervisor around twoway.run, with a liveness timeout given on the command line:
# ``python -c SCRIPT LIVENESS_TIMEOUT LOOP``.
_SCRIPT = """
import os, sys
from twoway import run
from twoway.logs import setup_logging
from twoway.services.echo import UpperService
from twoway.workers import supervise

def worker(index, port):
    return run(UpperService(), "127.0.0.1", port, grace=1.0, loop=sys.argv[2], reuse_port=True)

setup_logging("info")
sys.exit(supervise(2, "127.0.0.1", 0, 1.0, worker, liveness_timeout=float(sys.argv[1])))
"""


def test_a_hung_worker_is_replaced(servers: list[CliServer], loop: str) -> None:
    timeout = 1.5 * UNIT
    server = CliServer([str(timeout), loop], program=(sys.executable, "-c", _SCRIPT))
    servers.append(server)
    server.wait_for(r"listening on", 15 * UNIT, count=2)
    server.wait_ready()
    pids = [int(p) for p in server.wait_for(_PIDS).group(1).split(", ")]
    victim, survivor = pids
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    server.wait_for(
        rf"worker \d \(pid {victim}\) has not answered for [\d.]+ s \(hung or stopped\): "
        r"killing it and starting another",
        (timeout + 5) * UNIT,
    )
    # Overdue between the timeout and the timeout plus one ping interval (a fifth of it).
    assert server.matched_at - stopped_at < timeout * 1.2 + 1 * UNIT
    _wait(lambda: _gone(victim), 5 * UNIT, "the hung worker to be killed")
    server.wait_for(r"listening on", 10 * UNIT, count=3)  # the replacement is up
    assert not _gone(survivor)
    # New connections are served, by the survivor and the replacement alike.
    for _ in range(20):
        with connect(server.port) as sock:
            sock.sendall(b"still there\n")
            assert recv_line(sock) == b'You said "STILL THERE"\n'
    assert server.stop() == 0
    assert "Traceback" not in server.stderr
    assert server.count(r"restarting") == 0  # one line says why, no second one


def test_ctrl_c_stops_the_workers_gracefully(servers: list[CliServer]) -> None:
    """Ctrl-C sends SIGINT to the terminal's foreground process group: the supervisor passes
    it on once, and line clients are told and then closed cleanly (a worker that got the
    SIGINT as well as the supervisor's SIGTERM would take the second signal as "force" and
    reset every connection at once)."""
    args = serve_args("upper", "--workers", "2", "--grace", "10")
    # setsid: the server leads a process group of its own, as a shell job would.
    server = CliServer(args, program=("setsid", sys.executable, "-m", "twoway"))
    servers.append(server)
    server.wait_for(_WORKER, 15 * UNIT, count=2)
    server.wait_ready()
    pids = [int(m.group(2)) for line in server.lines if (m := _WORKER.search(line))]
    by_pid = _clients_on_every_worker(server.port, pids)
    clients = [sock for socks in by_pid.values() for sock in socks]
    try:
        os.killpg(server.pid, signal.SIGINT)
        for sock in clients:  # told, then a clean end: not a reset
            assert recv_line(sock) == b"server shutting down\n"
            assert recv_until_eof(sock) == b""
    finally:
        for sock in clients:
            sock.close()
    assert server.wait_exit(15 * UNIT) == 0  # by itself: no second signal
    assert server.count("received again") == 0, server.stderr


def test_habitual_signals_to_the_supervisor_are_logged_and_survived(
    servers: list[CliServer],
) -> None:
    """SIGHUP, SIGUSR1 and SIGUSR2 to the supervisor (what a user sends by habit, or
    ``systemctl reload``) never end the server without a word: HUP goes on to each worker,
    USR1/USR2 are logged and ignored, and clients are still served."""
    server = CliServer(serve_args("upper", "--workers", "2"))
    servers.append(server)
    server.wait_for(_WORKER, 15 * UNIT, count=2)
    server.wait_ready()
    for signum, seen in (
        (signal.SIGHUP, r"supervisor: SIGHUP received: passing it on to 2 worker"),
        (signal.SIGUSR1, r"supervisor: SIGUSR1 received: ignored"),
        (signal.SIGUSR2, r"supervisor: SIGUSR2 received: ignored"),
    ):
        os.kill(server.pid, signum)
        server.wait_for(seen)
    server.wait_for(r"SIGHUP", count=3)  # the supervisor's line and one from each worker
    assert server.running
    with connect(server.port) as sock:
        sock.sendall(b"still\n")
        assert recv_line(sock) == b'You said "STILL"\n'
    assert server.stop() == 0

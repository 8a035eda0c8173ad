"""Shared test utilities: one time unit, async clients, CLI subprocesses, /proc readings.

Every timeout in the suite is a multiple of :data:`UNIT`; set ``TWOWAY_TEST_TIMEOUT_FACTOR``
to stretch them all on a slow machine. Tests synchronise on events, lines and EOFs, never on
``sleep``: :func:`wait_until` polls a condition with a deadline and is kept for the few
states no callback reports (a transport that stopped reading, a kernel buffer that filled).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from twoway.net import Connection, LineService

__all__ = [
    "READ_TIMEOUT",
    "UNIT",
    "CliServer",
    "Client",
    "Recorder",
    "cli_env",
    "connect",
    "gather_bounded",
    "loop_name",
    "port_of",
    "proc_status_kib",
    "recv_line",
    "recv_until_eof",
    "run_cli",
    "start_cli",
    "wait_until",
]

#: One time unit, in seconds: every timeout is a multiple of it.
UNIT = 1.0 * float(os.environ.get("TWOWAY_TEST_TIMEOUT_FACTOR", "1"))
#: How long a client waits for any one line, EOF or server event.
READ_TIMEOUT = 5 * UNIT

HOST = "127.0.0.1"


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the kind of the running event loop."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


async def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 5 * UNIT,  # noqa: ASYNC109 - a bounded poll: the bound is the point
    what: str = "condition",
) -> None:
    """Wait until ``predicate()`` is true, checking every few milliseconds; fail after
    ``timeout``. Only for states that no callback or event reports."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)


def port_of(server: Any) -> int:
    """The real port of an in-process :class:`twoway.net.Server` bound to port 0."""
    return int(server.addresses[0][1])


class Recorder(LineService):
    """A line service that records every lifecycle hook, for tests to wait on.

    ``on_line`` answers ``got: LINE``; the line ``boom`` raises inside the callback (a bug
    in a service); ``close``, ``abort`` and ``end`` call those methods on the connection.
    """

    name = "recorder"

    def __init__(self) -> None:
        self.server: Any = None
        self.listening = asyncio.Event()
        self.connected: asyncio.Queue[Connection] = asyncio.Queue()
        self.closed: asyncio.Queue[tuple[Connection, BaseException | None, int, int]] = (
            asyncio.Queue()
        )
        self.errors: list[tuple[Connection, BaseException]] = []
        self.lines: list[str] = []
        self.eofs = 0

    def on_listening(self, server: Any) -> None:
        self.server = server
        self.listening.set()

    def on_connect(self, conn: Connection) -> None:
        self.connected.put_nowait(conn)

    def on_line(self, conn: Connection, line: str) -> None:
        self.lines.append(line)
        if line == "boom":
            raise RuntimeError("boom")
        if line == "close":
            conn.send_line("closing")
            conn.close()
        elif line == "abort":
            conn.abort()
        elif line == "end":
            conn.send_line("ending")
            conn.end()
        else:
            conn.send_line(f"got: {line}")

    def on_eof(self, conn: Connection) -> None:
        self.eofs += 1
        conn.close()

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self.closed.put_nowait((conn, exc, conn.bytes_read, conn.bytes_written))

    def on_error(self, conn: Connection, exc: BaseException) -> None:
        self.errors.append((conn, exc))

    async def next_connection(self) -> Connection:
        return await asyncio.wait_for(self.connected.get(), READ_TIMEOUT)

    async def next_close(self) -> tuple[Connection, BaseException | None, int, int]:
        return await asyncio.wait_for(self.closed.get(), READ_TIMEOUT)


# --------------------------------------------------------------------------- async clients


class Client:
    """A test client over asyncio streams, every read bounded by :data:`READ_TIMEOUT`.

    ``async with await Client.connect(port) as c:`` closes the client (and waits for it)
    on exit, so no transport is ever left for the garbage collector.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, host: str = HOST, *, source: str | None = None, limit: int = 1 << 24
    ) -> Client:
        local_addr = (source, 0) if source is not None else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local_addr, limit=limit),
            timeout=5 * UNIT,
        )
        return cls(reader, writer)

    @property
    def sockname(self) -> tuple[str, int]:
        name = self.writer.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        """The next line, terminator included; fails on EOF before a newline."""
        data = await asyncio.wait_for(self.reader.readline(), READ_TIMEOUT)
        if not data.endswith(b"\n"):
            raise AssertionError(f"connection ended before a complete line: {data!r}")
        return data

    async def ask(self, data: bytes) -> bytes:
        """Send ``data`` and return the next line."""
        await self.send(data)
        return await self.line()

    async def read_to_eof(self) -> bytes:
        """Everything up to the peer's FIN (raises ``ConnectionResetError`` on an RST)."""
        return await asyncio.wait_for(self.reader.read(), READ_TIMEOUT)

    async def expect_eof(self) -> None:
        rest = await self.read_to_eof()
        assert rest == b"", f"expected EOF, got {rest!r}"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 5 * UNIT)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def gather_bounded(
    *aws: Awaitable[Any],
    timeout: float = 10 * UNIT,  # noqa: ASYNC109 - the deadline is the point of this helper
) -> list[Any]:
    """``asyncio.gather`` with a deadline."""
    return list(await asyncio.wait_for(asyncio.gather(*aws), timeout))


# --------------------------------------------------------------------------- blocking sockets


def connect(port: int, host: str = HOST, timeout: float = 5 * UNIT) -> socket.socket:
    """A blocking client socket (use it in a ``with`` block so it is always closed)."""
    return socket.create_connection((host, port), timeout=timeout)


def recv_line(sock: socket.socket, timeout: float = 5 * UNIT) -> bytes:
    """One line from a blocking socket, read a byte at a time (nothing is over-read)."""
    sock.settimeout(timeout)
    out = bytearray()
    while not out.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise AssertionError(f"connection ended before a complete line: {bytes(out)!r}")
        out += b
    return bytes(out)


def recv_until_eof(sock: socket.socket, timeout: float = 5 * UNIT) -> bytes:
    """Everything up to the peer's FIN."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- the CLI


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``twoway`` subprocess: no stray ``TWOWAY_*`` from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 20 * UNIT,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m twoway ARGS`` to completion (for commands that exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "twoway", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


_READY = re.compile(r"listening on (\[[^\]]+\]|[^\s:]+):(\d+)")


class CliServer:
    """A running ``python -m twoway serve ...`` with its stderr collected line by line.

    A thread reads stderr into :attr:`lines`; :meth:`wait_for` blocks on a condition until
    a line matches (no polling, no sleeps). Use :func:`start_cli`, which waits for the ready
    line and stops the process at the end.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "twoway", *args]
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(env),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.host = ""
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(
        self, pattern: str, timeout: float = 10 * UNIT, *, start: int = 0, count: int = 1
    ) -> re.Match[str]:
        """Wait until ``count`` stderr lines from index ``start`` on match ``pattern``; return
        the last match. Fails on timeout or if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for line in self.lines[start:] if (m := regex.search(line))]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "process ended" if self._eof else f"timed out after {timeout:g} s"
                    raise AssertionError(
                        f"{why} waiting for {pattern!r} (x{count}) in stderr of "
                        f"{' '.join(self.args[2:])}:\n{''.join(self.lines)}"
                    )
                self._cond.wait(left)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def wait_ready(self, timeout: float = 15 * UNIT) -> None:
        m = self.wait_for(_READY.pattern, timeout)
        self.host = m.group(1).strip("[]")
        self.port = int(m.group(2))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 10 * UNIT) -> int:
        """Wait for the process to exit and for its stderr to be read to the end."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self, timeout: float = 10 * UNIT) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait_exit(timeout)
        finally:
            if self.proc.stderr is not None and not self._reader.is_alive():
                self.proc.stderr.close()

    def status_kib(self, field: str) -> int:
        return proc_status_kib(self.pid, field)


@contextlib.contextmanager
def start_cli(
    *args: str, env: Mapping[str, str] | None = None, ready: bool = True
) -> Iterator[CliServer]:
    """``python -m twoway ARGS`` as a subprocess, ready (its port parsed) when yielded;
    stopped with SIGTERM (then SIGKILL) at the end, its output collected."""
    server = CliServer(args, env)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/PID/status``: ``VmRSS`` (resident now) or ``VmHWM`` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)

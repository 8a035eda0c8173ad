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
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from signal import SIGTERM
from types import TracebackType
from typing import Any, TypeVar

from twoway.net import Connection, LineService

__all__ = [
    "LISTENING",
    "READ_TIMEOUT",
    "TWOWAY",
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
    "serve_args",
    "start_cli",
    "start_server",
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

#: The command that runs the CLI: ``python -m twoway`` with this interpreter.
TWOWAY = (sys.executable, "-m", "twoway")

#: The line a server logs once it accepts connections: group 1 is the host (an IPv6 one in
#: brackets), group 2 the port.
LISTENING = re.compile(r"listening on (\[[^\]]+\]|[^\s:]+):(\d+)")

_T = TypeVar("_T")


#: Scratch data directories of the subprocesses (chat's store), under one temporary folder
#: removed when the test session ends: the suite never writes to ~/.local/share.
_DATA_HOMES = tempfile.TemporaryDirectory(prefix="twoway-test-data-")


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``twoway`` subprocess: no stray ``TWOWAY_*`` from the caller,
    and an ``XDG_DATA_HOME`` of its own (a chat server's history goes there, not to the
    user's home, and two servers never share a database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_DATA_HOME"] = tempfile.mkdtemp(dir=_DATA_HOMES.name)
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
        [*TWOWAY, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def serve_args(
    service: str | None, *args: str, port: int | None = 0, loop: str | None = None
) -> list[str]:
    """The arguments of ``twoway serve [SERVICE] [--port PORT] ARGS [--loop LOOP]``.

    ``port=0`` (the default) lets the kernel choose (:meth:`CliServer.wait_ready` reads it
    from the log); ``port=None`` leaves the port to ARGS or the configuration. ``loop`` is
    added only if ARGS do not choose a loop themselves.
    """
    out = ["serve"]
    if service is not None:
        out.append(service)
    if port is not None:
        out += ["--port", str(port)]
    out += args
    if loop is not None and "--loop" not in args:
        out += ["--loop", loop]
    return out


class CliServer:
    """A server run as a subprocess, its stderr collected line by line: by default
    ``python -m twoway ARGS``; ``program`` runs another one (``redis-server``), ``wrapper``
    runs it under another program (``strace``, ``taskset``).

    A thread reads stderr into :attr:`lines` (without the line ends) and :attr:`times` (when
    each line was read), so the pipe never fills; :meth:`wait_for` blocks on a condition
    until a line matches (no polling, no sleeps). Readiness is the ``listening on HOST:PORT``
    line (:meth:`wait_ready`, which also reads the real port), or for a server that logs
    nothing, a probe (:meth:`wait_probe`). :meth:`stop` sends SIGTERM and kills at the
    deadline; :meth:`stop_checked` also says what was wrong (an exit code, an error logged).

    :func:`start_cli` starts one, ready, and stops it at the end of a ``with`` block; the
    suites' own starters (``chatkit``, ``buskit``, the client ``procs`` fixture) build on it.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        program: Sequence[str] = TWOWAY,
        wrapper: Sequence[str] = (),
        cwd: str | Path | None = None,
    ) -> None:
        self.args = list(args)
        #: The whole command line, wrapper included.
        self.cmd = [*wrapper, *program, *args]
        #: A short name for messages: the program's name (not the interpreter's) and ARGS.
        name = ["twoway"] if tuple(program) == TWOWAY else [Path(program[0]).name, *program[1:]]
        self.title = " ".join([*name, *args])[:160]
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(env),
            cwd=cwd,
        )
        self.wrapped = bool(wrapper)
        #: The server's process id: under a wrapper, the wrapper's child (known once ready).
        self.pid = self.proc.pid
        self.host = ""
        self.port = 0
        #: The stderr lines so far, and when each was read (``time.monotonic()``).
        self.lines: list[str] = []
        self.times: list[float] = []
        #: When the line :meth:`wait_for` last returned was read.
        self.matched_at = 0.0
        #: The exit code once :meth:`wait_exit` or :meth:`stop` has seen the exit.
        self.returncode: int | None = None
        #: Whether :meth:`stop` had to kill the process.
        self.killed = False
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").removesuffix("\n"))
                self.times.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- the log -----------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        """Everything logged so far, as one text."""
        with self._cond:
            return "".join(line + "\n" for line in self.lines)

    def tail(self, n: int = 40) -> str:
        """The last ``n`` lines logged, indented, for failure messages."""
        with self._cond:
            return "\n".join("    " + line for line in self.lines[-n:]) or "    (nothing)"

    def _wait(self, found: Callable[[], _T | None], timeout: float) -> _T | None:
        """Wait (on the reader's condition) until ``found()`` returns something; None at the
        deadline or once stderr has ended without it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (result := found()) is None:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)
            return result

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 10 * UNIT,
        *,
        start: int = 0,
        count: int = 1,
    ) -> re.Match[str]:
        """Wait until ``count`` stderr lines from index ``start`` on match ``pattern`` (a
        regex); return the last match (and set :attr:`matched_at`). Fails at the deadline or
        if stderr ends first (the process exited)."""
        regex = re.compile(pattern)
        matches: list[tuple[re.Match[str], int]] = []
        scanned = start

        def found() -> re.Match[str] | None:
            nonlocal scanned
            for i in range(scanned, len(self.lines)):
                if m := regex.search(self.lines[i]):
                    matches.append((m, i))
            scanned = max(scanned, len(self.lines))
            if len(matches) < count:
                return None
            m, i = matches[count - 1]
            self.matched_at = self.times[i]
            return m

        m = self._wait(found, timeout)
        if m is None:
            why = "the process ended" if self._eof else f"timed out after {timeout:g} s"
            raise AssertionError(
                f"{why} waiting for {regex.pattern!r} (x{count}) in the stderr of "
                f"{self.title}; it ends:\n{self.tail()}"
            )
        return m

    def wait_lines(
        self, predicate: Callable[[list[str]], bool], timeout: float = 10 * UNIT
    ) -> bool:
        """Wait until ``predicate(lines)`` holds; False at the deadline or if stderr ends
        first (for conditions on the whole log, such as counts that must balance)."""
        return self._wait(lambda: True if predicate(self.lines) else None, timeout) is not None

    def count(self, pattern: str) -> int:
        """How many lines logged so far match ``pattern``."""
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    def error_lines(self) -> list[str]:
        """The lines that report an error or start a traceback."""
        with self._cond:
            return [line for line in self.lines if "Traceback" in line or " ERROR " in line]

    # -- readiness ---------------------------------------------------------------------

    def wait_ready(
        self, timeout: float = 15 * UNIT, pattern: str | re.Pattern[str] = LISTENING
    ) -> CliServer:
        """Wait for the ready line (``listening on HOST:PORT``) and take the host and the
        real port from it (groups 1 and 2 of ``pattern``); under a wrapper, find the server's
        own pid. If it never comes, the process is stopped and the error shows its log."""
        try:
            m = self.wait_for(pattern, timeout)
        except BaseException:
            self.stop()
            raise
        self.host = m.group(1).strip("[]")
        self.port = int(m.group(2))
        if self.wrapped:
            self.pid = self._wrapped_pid()
        return self

    def wait_probe(self, probe: Callable[[], bool], timeout: float = 10 * UNIT) -> bool:
        """Readiness of a server that logs nothing when it is up: poll ``probe`` (every
        20 ms) until it holds; False at the deadline or if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if probe():
                return True
            time.sleep(0.02)  # polling: such a server tells nobody it is up
        return False

    def _wrapped_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        assert len(pids) == 1, f"expected one child of the wrapper, found {pids}"
        return pids[0]

    # -- signals and the exit ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int = SIGTERM) -> None:
        """Send ``signum`` to the server (not to its wrapper), unless it has exited."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL (to the process started: the wrapper, if any)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def wait_exit(self, timeout: float = 10 * UNIT) -> int:
        """Wait for the process to exit and for its stderr to be read to the end; the exit
        code (``subprocess.TimeoutExpired`` if it is still running at the deadline)."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
        self.returncode = code
        return code

    def stop(self, timeout: float = 10 * UNIT, signum: int = SIGTERM) -> int:
        """SIGTERM (or ``signum``), then wait; SIGKILL if it does not exit in time. The exit
        code; once it has exited, just that code again."""
        if self.returncode is not None:
            return self.returncode
        self.signal(signum)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.proc.kill()
            return self.wait_exit(timeout)

    def stop_checked(
        self, *, check_exit: bool = True, check_log: bool = True, timeout: float = 10 * UNIT
    ) -> list[str]:
        """:meth:`stop`, then what was wrong, for a teardown to report: an exit code other
        than 0 (if ``check_exit``), an error or a traceback logged (if ``check_log``)."""
        code = self.stop(timeout)
        problems = []
        if check_exit and code != 0:
            problems.append(f"server {self.title} exited {code}; its log ends:\n{self.tail()}")
        errors = self.error_lines() if check_log else []
        if errors:
            problems.append(
                f"server {self.title} logged {errors[0]!r}; its log ends:\n{self.tail()}"
            )
        return problems

    # -- /proc -------------------------------------------------------------------------

    def status_kib(self, field: str) -> int:
        """A ``kB`` field of the server's ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
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


def start_server(
    servers: list[CliServer],
    *args: str,
    loop: str = "asyncio",
    env: Mapping[str, str] | None = None,
) -> CliServer:
    """``twoway serve ARGS`` on ``loop``, ready; added to ``servers`` (the conftest fixture
    of that name stops them all at the end of the test, whatever happened)."""
    server = CliServer(serve_args(*args, loop=loop), env)
    servers.append(server)
    return server.wait_ready()


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/PID/status``: ``VmRSS`` (resident now) or ``VmHWM`` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# -- HAProxy (Debian package haproxy), the real sender of the PROXY protocol --------------

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)


@contextlib.contextmanager
def run_haproxy(tmp_path: Path, config: str) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy in the foreground in mode tcp with ``config`` (frontends and backends) after
    the common defaults; stopped (and its pipe closed) on exit."""
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


# -- client mistakes in the log (net/complaints.py) ----------------------------------------

#: The summary of the client-mistake lines the log budget held back.
COMPLAINTS_SUMMARY = re.compile(r"suppressed (\d+) similar client errors in the last [\d.]+ s$")


def complaints_accounted(lines: Sequence[str], mine: str, bad: int) -> bool:
    """Whether each of ``bad`` mistakes is in ``lines``: logged (a line matching ``mine``)
    or counted in a summary."""
    logged = sum(1 for line in lines if re.search(mine, line))
    held = sum(int(m.group(1)) for line in lines if (m := COMPLAINTS_SUMMARY.search(line)))
    return logged + held == bad

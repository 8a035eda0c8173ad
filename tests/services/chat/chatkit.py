"""Helpers for the chat end-to-end tests: a ``twoway serve chat`` subprocess, and line clients
(Python sockets, ``nc`` subprocesses) that read with a deadline instead of sleeping.

Every wait in these tests is "read until the expected line arrives, or fail at the deadline".
Deadlines are multiples of :data:`UNIT` (set ``TWOWAY_TEST_TIME_UNIT=3`` on a slow machine).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from helpers import CliServer, serve_args

__all__ = [
    "TIMEOUT",
    "UNIT",
    "ChatServer",
    "Client",
    "Harness",
    "LineSource",
    "NcClient",
    "Pattern",
]

#: One time unit: every deadline below is a multiple of it.
UNIT = float(os.environ.get("TWOWAY_TEST_TIME_UNIT", "1"))
#: How long to wait for something that should happen "at once".
TIMEOUT = 5.0 * UNIT

#: What ``expect`` waits for: a substring, a compiled regex, or a predicate on the line.
Pattern = str | re.Pattern[str] | Callable[[str], bool]


def _matches(pattern: Pattern, line: str) -> bool:
    if isinstance(pattern, str):
        return pattern in line
    if isinstance(pattern, re.Pattern):
        return pattern.search(line) is not None
    return pattern(line)


class LineSource:
    """Line reading with deadlines over some byte source (:meth:`_recv` is the source).

    Lines are split on LF; a CR before it is dropped. ``history`` keeps every line read, for
    failure messages.
    """

    name = "client"

    def __init__(self) -> None:
        self._buf = bytearray()
        self.eof = False
        #: How the stream ended: ``"eof"`` or a description of the error (``"reset"``).
        self.end: str | None = None
        self.history: list[str] = []
        self.nick = ""
        #: The lines :meth:`expect` read before the one it returned.
        self.skipped: list[str] = []

    def _recv(self, timeout: float) -> bytes | None:
        """Up to a chunk of bytes; ``b""`` at the end of the stream; None on timeout."""
        raise NotImplementedError

    def send(self, line: str) -> None:
        """Send one line of text."""
        raise NotImplementedError

    def welcome(self) -> str:
        """Read the welcome block; return (and remember) the nick it gives."""
        lines = self.lines_until("*** type /help for commands")
        for line in lines:
            m = re.fullmatch(r"\*\*\* you are (\S+)", line)
            if m:
                self.nick = m.group(1)
                return self.nick
        raise AssertionError(self._why("welcome without '*** you are NICK'"))

    def sync(self, timeout: float = TIMEOUT) -> list[str]:
        """A barrier: send ``/peers`` and return the lines read before its answer.

        The server handles one connection's lines in order and writes to each peer in order,
        so anything the server sent this client before handling the ``/peers`` is in the list:
        this is how a test shows that something did *not* arrive, without sleeping.
        """
        self.send("/peers")
        return self.lines_until(re.compile(r"^You have \d+ peers? on this server$"), timeout)

    def _fill(self, deadline: float) -> bool:
        """Read one chunk into the buffer; False once the stream has ended."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        data = self._recv(left)
        if data is None:
            raise TimeoutError
        if not data:
            self.eof = True
            return False
        self._buf += data
        return True

    def read_raw_line(self, timeout: float = TIMEOUT) -> bytes | None:
        """The next line as bytes, with its terminator (LF or CRLF); None at EOF.

        A partial line at the end of the stream is returned as is (without terminator).
        """
        deadline = time.monotonic() + timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            try:
                more = self._fill(deadline)
            except TimeoutError:
                raise TimeoutError(self._why(f"no complete line within {timeout:g} s")) from None
            if not more:
                if self._buf:
                    line = bytes(self._buf)
                    self._buf.clear()
                    return line
                return None

    def read_line(self, timeout: float = TIMEOUT) -> str | None:
        """The next line, decoded (strict UTF-8: the server must only send valid text), without
        its terminator; None at EOF."""
        raw = self.read_raw_line(timeout)
        if raw is None:
            return None
        line = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        self.history.append(line)
        return line

    def expect(self, pattern: Pattern, timeout: float = TIMEOUT) -> str:
        """Read lines until one matches ``pattern``; return it (the lines before it are in
        :attr:`skipped`). Fails at the end of the stream or at the deadline, showing the
        lines read."""
        deadline = time.monotonic() + timeout
        skipped: list[str] = []
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            try:
                line = self.read_line(left)
            except TimeoutError:
                raise AssertionError(
                    self._why(f"{pattern!r} not read within {timeout:g} s")
                ) from None
            if line is None:
                raise AssertionError(self._why(f"end of stream ({self.end}) before {pattern!r}"))
            if _matches(pattern, line):
                self.skipped = skipped
                return line
            skipped.append(line)

    def lines_until(self, pattern: Pattern, timeout: float = TIMEOUT) -> list[str]:
        """The lines read before the first line matching ``pattern`` (which is consumed)."""
        self.expect(pattern, timeout)
        return self.skipped

    def read_to_end(self, timeout: float = TIMEOUT) -> list[str]:
        """Every remaining line until the stream ends (EOF or reset); fails at the deadline."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            try:
                line = self.read_line(left)
            except TimeoutError:
                raise AssertionError(self._why(f"stream still open after {timeout:g} s")) from None
            if line is None:
                return lines
            lines.append(line)

    def _why(self, what: str) -> str:
        tail = "\n    ".join(self.history[-15:]) or "(nothing)"
        pending = bytes(self._buf[:200])
        return f"{self.name}: {what}; last lines read:\n    {tail}\n  pending bytes: {pending!r}"


class Client(LineSource):
    """A chat client on a plain Python socket.

    ``source`` binds the local address first (``127.0.0.2`` for per-IP tests); ``rcvbuf`` sets
    ``SO_RCVBUF`` before connecting, so the TCP window is negotiated small.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        source: str | None = None,
        rcvbuf: int | None = None,
        name: str = "client",
    ) -> None:
        super().__init__()
        self.name = name
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                sock.bind((source, 0))
            sock.settimeout(TIMEOUT)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def _recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            self.end = "reset"
            return b""
        if not data:
            self.end = "eof"
        return data

    def send(self, line: str | bytes, end: bytes = b"\n") -> None:
        """Send one line (``str`` is UTF-8 encoded) followed by ``end``."""
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + end)


class NcClient(LineSource):
    """A chat client that is a real ``nc`` (netcat-openbsd) process: lines go to its stdin,
    what the server sends comes from its stdout. ``-N`` makes it send FIN when its stdin ends.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", *, name: str = "nc") -> None:
        super().__init__()
        self.name = name
        self.proc = subprocess.Popen(
            ["nc", "-N", host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> NcClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _recv(self, timeout: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(fd, 65536)
        if not data:
            self.end = "eof"
        return data

    def send(self, line: str) -> None:
        """Type one line into nc."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish_input(self) -> None:
        """Close nc's stdin: nc half-closes the connection (``-N``)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def close(self) -> None:
        """Stop nc (idempotent) and close its pipes."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass


class ChatServer(CliServer):
    """``twoway serve chat --port 0 ARGS`` (see :func:`helpers.serve_args`) as a subprocess,
    ready when it logs ``listening on H:P``; a :class:`helpers.CliServer` with the deadlines
    of this suite, waits on its log (:meth:`wait_log`, :meth:`wait_idle`) and memory readings.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        service: str | None = "chat",
        port0: bool = True,
        loop: str | None = None,
    ) -> None:
        super().__init__(serve_args(service, *args, port=0 if port0 else None, loop=loop), env)
        #: Whether the harness fails the test if this server logs an error or a traceback
        #: (a test that asserts on the log itself turns this off to report it only once).
        self.check_log = True
        self.wait_ready(TIMEOUT * 2)

    @property
    def log_lines(self) -> list[str]:
        """The server's log (stderr) so far, one line each."""
        return self.lines

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for a log line matching ``pattern`` (a regex); return the match (and set
        :attr:`matched_at`). Searches the whole log, from its first line."""
        return self.wait_for(pattern, timeout)

    def wait_idle(self, timeout: float = TIMEOUT) -> bool:
        """Wait until the log shows as many connections closed as admitted; False if not."""

        def idle(lines: list[str]) -> bool:
            admitted = sum("INFO    connection from " in line for line in lines)
            closed = sum("INFO    closed " in line for line in lines)
            return closed >= admitted

        return self.wait_lines(idle, timeout)

    def rss(self) -> int:
        """The server's resident set size now, in bytes."""
        return self.status_kib("VmRSS") * 1024

    def peak_rss(self) -> int:
        """The server's peak resident set size (``VmHWM``) since :meth:`reset_peak_rss`."""
        return self.status_kib("VmHWM") * 1024

    def reset_peak_rss(self) -> bool:
        """Reset ``VmHWM`` to the current RSS (``clear_refs``); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stop(self, timeout: float = TIMEOUT * 2, signum: int = signal.SIGTERM) -> int:
        """SIGTERM, then wait for the exit (kill at the deadline); idempotent. The exit code."""
        return super().stop(timeout, signum)


class Harness:
    """What one test started: servers and clients, torn down in the right order.

    Clients are closed first, so the servers' graceful shutdown does not wait for them; then
    every server gets SIGTERM and must exit 0 without a traceback in its log.
    """

    def __init__(self, loop: str | None = None) -> None:
        #: The event loop the servers run on (``--loop``), None for the default.
        self.loop = loop
        self.servers: list[ChatServer] = []
        self.clients: list[Client | NcClient] = []

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        service: str | None = "chat",
        port0: bool = True,
    ) -> ChatServer:
        """Start ``twoway serve chat --port 0 ARGS`` and wait until it listens. The history
        is kept in memory (``--ephemeral``) unless ARGS choose a store (``--data-dir``,
        ``--no-ephemeral``): most tests are not about persistence, and a flood of lines is
        not slowed by a disk."""
        if service == "chat" and not {"--data-dir", "--ephemeral", "--no-ephemeral"} & {
            a.split("=")[0] for a in args
        }:
            args = (*args, "--ephemeral")
        srv = ChatServer(args, env=env, service=service, port0=port0, loop=self.loop)
        self.servers.append(srv)
        return srv

    def client(
        self,
        srv: ChatServer,
        *,
        welcome: bool = True,
        name: str = "client",
        source: str | None = None,
        rcvbuf: int | None = None,
    ) -> Client:
        """A socket client of ``srv`` (see :class:`Client`), its welcome read unless
        ``welcome=False``."""
        c = Client(srv.port, name=name, source=source, rcvbuf=rcvbuf)
        self.clients.append(c)
        if welcome:
            c.welcome()
        return c

    def nc(self, srv: ChatServer, *, welcome: bool = True, name: str = "nc") -> NcClient:
        """An ``nc`` process connected to ``srv``, its welcome read."""
        c = NcClient(srv.port, name=name)
        self.clients.append(c)
        if welcome:
            c.welcome()
        return c

    def close(self) -> list[str]:
        """Close every client, stop every server; return the problems found."""
        problems: list[str] = []
        for c in self.clients:
            c.close()
        for srv in self.servers:
            # Let each server see its clients go before SIGTERM, so shutdown does not race
            # with their FINs (a test of that race is explicit, not a teardown accident).
            srv.wait_idle()
        for srv in self.servers:
            # A server the test stopped itself has had its exit code checked by the test.
            problems += srv.stop_checked(
                check_exit=srv.returncode is None, check_log=srv.check_log, timeout=TIMEOUT * 2
            )
        return problems

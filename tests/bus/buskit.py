"""Helpers for the bus tests: real ``redis-server`` processes, ``twoway serve chat --bus``
subprocesses and blocking line clients that wait for expected lines with deadlines.

Nothing here sleeps to synchronise: a client reads until the expected line arrives or the
deadline passes; a server's log is waited on line by line (:class:`helpers.CliServer`, which
runs the redis-server processes too).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from helpers import UNIT, CliServer, serve_args

__all__ = [
    "REDIS_SERVER",
    "UNIT",
    "ChatClient",
    "Cluster",
    "RedisServer",
    "free_port",
    "owner_pid",
]

REDIS_SERVER = shutil.which("redis-server")

Pattern = str | re.Pattern[str] | Callable[[str], bool]


def _matches(pattern: Pattern, line: str) -> bool:
    if isinstance(pattern, str):
        return pattern in line
    if isinstance(pattern, re.Pattern):
        return pattern.search(line) is not None
    return pattern(line)


def free_port() -> int:
    """A TCP port that was free a moment ago (redis-server does not take ``--port 0``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, without persistence (a restart comes back
    empty, as after a crash), run by :class:`helpers.CliServer`. :meth:`start` waits until
    it answers ``PING``; it can be started again on the same port after it stopped."""

    def __init__(
        self,
        port: int | None = None,
        unix_socket: Path | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        password: str | None = None,
    ) -> None:
        """``tls``: (certificate, key, CA) for a TLS port beside the plain one (which the
        readiness probe uses). ``password``: started with ``--requirepass`` (the probe and
        :meth:`command` authenticate with it)."""
        assert REDIS_SERVER is not None
        self.port = port if port is not None else free_port()
        self.unix_socket = unix_socket
        self.tls = tls
        self.tls_port = free_port() if tls is not None else 0
        self.password = password
        self.proc: CliServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def tls_url(self, ca: Path) -> str:
        """The ``rediss://`` URL of its TLS port, trusting ``ca``."""
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={ca}"

    @property
    def unix_url(self) -> str:
        """The ``unix://`` URL of its socket (with ``unix_socket`` given)."""
        assert self.unix_socket is not None
        return f"unix://{self.unix_socket}?db=0"

    def start(self, timeout: float = 10 * UNIT) -> None:
        assert REDIS_SERVER is not None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.unix_socket is not None:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        if self.tls is not None:
            cert, key, ca = self.tls
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert)]
            args += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
            args += ["--tls-auth-clients", "no"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = CliServer(args, program=[REDIS_SERVER])
            if self.proc.wait_probe(self._pong, deadline - time.monotonic()):
                return
            # The port was taken in the meantime (or the old process still held it).
            self.proc.stop(timeout)
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on port {self.port}")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (inline syntax), return the raw first reply chunk."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5 * UNIT) as s:
            if self.password is not None:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                assert s.recv(64).startswith(b"+OK")
            s.sendall(" ".join(args).encode() + b"\r\n")
            return s.recv(65536)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.signal(signum)

    def terminate(self) -> None:
        """SIGTERM and wait: Redis exits (and, without persistence, forgets everything)."""
        assert self.proc is not None
        self.proc.signal(signal.SIGTERM)
        self.proc.wait_exit(10 * UNIT)

    def close(self) -> None:
        """Stop it whatever its state, stopped (SIGSTOP) included (idempotent)."""
        if self.proc is not None:
            self.proc.signal(signal.SIGCONT)
            self.proc.stop(10 * UNIT, signal.SIGKILL)


class ChatClient:
    """A chat client on a blocking socket; every read has a deadline."""

    def __init__(self, port: int, name: str = "client") -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
        self.port = int(self.sock.getsockname()[1])  # our side: how the server sees us
        self._buf = bytearray()
        self.history: list[str] = []
        self.eof = False
        self.nick = ""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def read_line(self, timeout: float) -> str | None:
        """The next line, or None at the end of the stream; TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while (i := self._buf.find(b"\n")) < 0:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self._buf += data
        line = self._buf[:i].decode().removesuffix("\r")
        del self._buf[: i + 1]
        self.history.append(line)
        return line

    def expect(self, pattern: Pattern, timeout: float = 5 * UNIT) -> str:
        """Read until a line matches; return it (the lines before it are in ``skipped``)."""
        deadline = time.monotonic() + timeout
        self.skipped: list[str] = []
        while True:
            try:
                line = self.read_line(max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                why = self._why(f"{pattern!r} not read within {timeout:g} s")
                raise AssertionError(why) from None
            if line is None:
                raise AssertionError(self._why(f"end of stream before {pattern!r}"))
            if _matches(pattern, line):
                return line
            self.skipped.append(line)

    def saw(self, pattern: Pattern, timeout: float = 5 * UNIT) -> str:
        """Like :meth:`expect`, but a line already read counts (a barrier on "this client was
        told X", whenever that happened)."""
        for line in self.history:
            if _matches(pattern, line):
                return line
        return self.expect(pattern, timeout)

    def knows(self, nick: str, timeout: float = 5 * UNIT) -> None:
        """Wait until this client was told about ``nick`` (a peers line, a join, a rename):
        then its server knows ``nick`` (a client of the other server, say)."""
        self.saw(re.compile(rf"(^|[^\w-]){re.escape(nick)}($|[^\w-])"), timeout)

    def lines_until(self, pattern: Pattern, timeout: float = 5 * UNIT) -> list[str]:
        self.expect(pattern, timeout)
        return self.skipped

    def ask(self, command: str, answer: Pattern, timeout: float = 5 * UNIT) -> str:
        """Send a command and return its answer (a barrier: what came before is skipped)."""
        self.send(command)
        return self.expect(answer, timeout)

    def sync(self) -> list[str]:
        """A barrier: the lines the server sent before it answered a ``/peers``."""
        self.send("/peers")
        return self.lines_until(
            re.compile(r"^You have \d+ peers? on (this server|\d+ servers \(\d+ on this one\))$")
        )

    def welcome(self) -> str:
        for line in self.lines_until("* type /help for commands"):
            if m := re.fullmatch(r"\*\*\* you are (\S+)", line):
                self.nick = m.group(1)
        return self.nick

    def rename(self, nick: str) -> None:
        self.ask(f"/nick {nick}", f"is now known as {nick}")
        self.nick = nick

    def wait_closed(self, timeout: float = 10 * UNIT) -> None:
        """Read until the server's FIN or reset (a killed server)."""
        deadline = time.monotonic() + timeout
        while self.read_line(max(deadline - time.monotonic(), 0.0)) is not None:
            pass

    def _why(self, what: str) -> str:
        tail = "\n    ".join(self.history[-20:]) or "(nothing)"
        return f"{self.name}: {what}; last lines read:\n    {tail}"


class Cluster:
    """Chat servers on one Redis, and their clients; :meth:`close` stops everything and
    returns the problems found in the servers' logs (tracebacks, unclean exits)."""

    def __init__(self, redis: RedisServer, url: str | None = None) -> None:
        self.redis = redis
        self.url = url if url is not None else redis.url  # what the servers' --bus says
        self.servers: list[CliServer] = []
        self.clients: list[ChatClient] = []

    def server(self, *args: str, ready: bool = True) -> CliServer:
        srv = CliServer(serve_args("chat", "--bus", self.url, "--flood-rate", "0", *args))
        self.servers.append(srv)
        if ready:
            srv.wait_ready()
        return srv

    def client(self, srv: CliServer | int, nick: str | None = None) -> ChatClient:
        port = srv if isinstance(srv, int) else srv.port
        c = ChatClient(port, name=nick or f"client{len(self.clients) + 1}")
        self.clients.append(c)
        c.welcome()
        if nick is not None:
            c.rename(nick)
        return c

    def close(self, *, expect_clean: bool = True) -> list[str]:
        for c in self.clients:
            c.close()
        problems = []
        for srv in self.servers:
            problems += srv.stop_checked(check_exit=expect_clean)
        self.redis.close()
        return problems


def owner_pid(client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server side of the connection from ``client_port``
    (read from /proc: the socket inodes of each process, and /proc/net/tcp)."""
    wanted: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == client_port:
                    wanted.add(fields[9])
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in wanted:
                        return pid
    return None


@contextlib.contextmanager
def cluster_of(redis: RedisServer) -> Iterator[Cluster]:
    c = Cluster(redis)
    try:
        yield c
    finally:
        c.close()


def make_certificates(directory: Path, name: str = "twoway test CA") -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it, made with the openssl command:
    (certificate, key, CA certificate)."""
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "srv.key", directory / "srv.csr", directory / "srv.crt"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         f"/CN={name}", "-keyout", str(ca_key), "-out", str(ca)])  # fmt: skip
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(csr)])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)])  # fmt: skip
    return cert, key, ca

"""Helpers for the client tests: subprocesses whose output can be awaited, a pty driver,
/proc readings, and odd servers (one that never answers a SYN).

Every wait has a deadline that is a multiple of :data:`UNIT` (``TWOWAY_TEST_TIMEOUT_FACTOR``
stretches them all); nothing synchronises with ``sleep``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TWOWAY",
    "UNIT",
    "Output",
    "Proc",
    "PtyProc",
    "blackhole",
    "child_env",
    "cpu_seconds",
    "fd_count",
    "free_port",
    "strip_ansi",
]

UNIT = 1.0 * float(os.environ.get("TWOWAY_TEST_TIMEOUT_FACTOR", "1"))
TWOWAY = [sys.executable, "-m", "twoway"]
HOST = "127.0.0.1"

_READY = re.compile(rb"listening on (\[[^\]]+\]|[^\s:]+):(\d+)")
_BACK_FORWARD = re.compile(r"\x08\x1b\[(\d*)C")
_FORWARD = re.compile(r"\x1b\[(\d*)C")
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-B]|[=>78])")


# The interactive client keeps a history file under $XDG_STATE_HOME: the tests' clients keep
# theirs in a directory of their own, never in the home of whoever runs the tests.
_STATE_HOME = tempfile.mkdtemp(prefix="twoway-test-state-")
atexit.register(shutil.rmtree, _STATE_HOME, ignore_errors=True)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``twoway`` child: no stray ``TWOWAY_*``, unbuffered output, a
    private ``XDG_STATE_HOME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_STATE_HOME"] = _STATE_HOME
    env.update(extra)
    return env


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (roughly what a person would read): a
    cursor move to the right becomes that many spaces (prompt_toolkit draws spaces so)."""
    # prompt_toolkit draws "> " as ">", backspace, two steps right: one space net.
    text = _BACK_FORWARD.sub(lambda m: " " * (int(m.group(1) or 1) - 1), text)
    text = _FORWARD.sub(lambda m: " " * int(m.group(1) or 1), text)
    return _ANSI.sub("", text)


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def fd_count(pid: int | str = "self") -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")": state is field 3, so utime (14) and stime (15) are at 11 and 12
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def blackhole(host: str = "127.0.0.2") -> Iterator[tuple[str, int]]:
    """An address where a connection attempt hangs: a listener with backlog 0 that never
    accepts, its queue already full, so the kernel drops every further SYN."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((host, 0))
        listener.listen(0)
        addr = listener.getsockname()
        for _ in range(2):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(addr)
            fillers.append(s)
        yield str(addr[0]), int(addr[1])
    finally:
        for s in fillers:
            s.close()
        listener.close()


class Output:
    """Bytes arriving from a stream, with waits on patterns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = bytearray()
        self.eof = False
        self._changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if data:
            self.data += data
        else:
            self.eof = True
        self._changed.set()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def lines(self) -> list[str]:
        return self.text.splitlines()

    async def wait_for(
        self,
        pattern: str,
        within: float = 10 * UNIT,
        *,
        start: int = 0,
        count: int = 1,
        clean: bool = False,
    ) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) has matched ``count`` times in the text from
        character ``start`` on; return the last match. ``clean`` strips terminal escapes
        first. ``^`` and ``$`` match at line ends. Fails after ``within`` s or at EOF."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            async with asyncio.timeout(within):
                while True:
                    text = self.text
                    if clean:
                        text = strip_ansi(text)
                    found = list(regex.finditer(text, start))
                    if len(found) >= count:
                        return found[count - 1]
                    if self.eof:
                        raise AssertionError(self._describe(pattern, "EOF"))
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(self._describe(pattern, f"{within:g} s passed")) from None

    def _describe(self, pattern: str, why: str) -> str:
        return f"{why} waiting for {pattern!r} on {self.name}; got:\n{self.text[-4000:]}"


async def _pump(stream: asyncio.StreamReader | None, out: Output) -> None:
    if stream is None:
        out.feed(b"")
        return
    while data := await stream.read(65536):
        out.feed(data)
    out.feed(b"")


class Proc:
    """A subprocess with stdout and stderr collected as they arrive (so it never blocks on
    a full pipe). Start with :meth:`start`; always :meth:`stop` (the fixture does)."""

    def __init__(self, proc: asyncio.subprocess.Process, args: Sequence[str]) -> None:
        self.proc = proc
        self.args = list(args)
        self.stdout = Output(f"stdout of {self.title}")
        self.stderr = Output(f"stderr of {self.title}")
        self._pumps = [
            asyncio.ensure_future(_pump(proc.stdout, self.stdout)),
            asyncio.ensure_future(_pump(proc.stderr, self.stderr)),
        ]
        #: Where a server listens (filled by :meth:`wait_ready`).
        self.port = 0

    @property
    def title(self) -> str:
        args = self.args[2:] if self.args[:2] == TWOWAY[:2] else self.args
        return " ".join(args)[:120]

    @classmethod
    async def start(
        cls, *args: str, stdin: Any = asyncio.subprocess.DEVNULL, env: dict[str, str] | None = None
    ) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env if env is not None else child_env(),
        )
        return cls(proc, args)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, within: float = 15 * UNIT) -> int:
        """Wait for ``listening on HOST:PORT`` on stderr; return (and remember) the port."""
        m = await self.stderr.wait_for(_READY.pattern.decode(), within)
        self.port = int(m.group(2))
        return self.port

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    async def wait(self, within: float = 10 * UNIT) -> int:
        """Wait for the exit and the end of both outputs; return the exit code."""
        try:
            async with asyncio.timeout(within):
                code = await self.proc.wait()
                await asyncio.gather(*self._pumps)
        except TimeoutError:
            raise AssertionError(
                f"{self.title} still running after {within:g} s\nstdout: "
                f"{self.stdout.text[-2000:]}\nstderr: {self.stderr.text[-2000:]}"
            ) from None
        return code

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a while; wait; release the pipes."""
        self.close_stdin()
        self.kill(signal.SIGTERM)
        try:
            await self.wait(5 * UNIT)
        except AssertionError:
            self.kill()
            await self.wait(5 * UNIT)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await self.proc.stdin.wait_closed()


def _take_terminal() -> None:
    """In the child: a new session whose controlling terminal is the pty on stdin, so that
    Ctrl-C typed while the terminal is in cooked mode becomes SIGINT, as in a real one."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyProc:
    """A subprocess on a pseudo-terminal (stdin, stdout and stderr), as a person runs it."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int, args: Sequence[str]):
        self.proc = proc
        self.master = master
        self.args = list(args)
        self.screen = Output("the terminal")
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._readable)
        self._reading = True

    @classmethod
    async def start(
        cls, *args: str, rows: int = 24, cols: int = 100, env: dict[str, str] | None = None
    ) -> PtyProc:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        environ = env if env is not None else child_env()
        # A terminal that does not answer cursor-position requests: tell prompt_toolkit.
        environ = {**environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=slave, stdout=slave, stderr=slave, env=environ,
                preexec_fn=_take_terminal,
            )  # fmt: skip
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(proc, master, args)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the other side is closed
            data = b""
        if not data:
            self._stop_reading()
        self.screen.feed(data)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self.master)

    def type(self, data: bytes) -> None:
        """Keystrokes, as the terminal sends them (``\\r`` for Enter, ``\\x04`` Ctrl-D)."""
        os.write(self.master, data)

    async def wait(self, within: float = 10 * UNIT) -> int:
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"still running after {within:g} s; screen:\n{self.screen.text[-3000:]}"
            ) from None

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._stop_reading()
        os.close(self.master)

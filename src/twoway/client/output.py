"""Where received data goes: a writer (stdout, a file, the terminal) and a sink per connection.

Writers never block the event loop on a pipe: standard output that is a pipe or a socket is
written through ``loop.connect_write_pipe``, and when the reader downstream falls behind, the
writer asks the connections to stop reading (the kernel then holds the server back), the way
Node's ``socket.pipe(process.stdout)`` does. Regular files and terminals are written
directly: they do not make a process wait for another one.

Sinks decide the shape: :class:`RawSink` passes bytes through untouched (one connection, like
``nc``); :class:`LineSink` cuts lines to prefix them with the connection's name and, for a
terminal, escapes control characters so nothing a server sends can drive the terminal.
When several connections run, every line one of them prints (received, or its state on
stderr) starts with :func:`prefix`, so a shared terminal or file can be told apart with grep.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Callable
from typing import IO

from twoway.client.lines import LineSplitter
from twoway.sansio.text import escape_controls

__all__ = [
    "ConsoleWriter",
    "FileWriter",
    "LineSink",
    "PipeWriter",
    "RawSink",
    "Sink",
    "TappedSink",
    "Writer",
    "choose_writer",
    "prefix",
]

# Hand a partial line (a prompt, a reply without newline) to the screen after this pause.
PARTIAL_LINE_DELAY = 0.1
# Pipe writer high-water mark: above it the connections stop reading.
PIPE_HIGH = 256 * 1024
# At exit, how long a reader downstream gets to take what is still queued for it.
CLOSE_GRACE = 5.0


def prefix(name: str) -> str:
    """What a connection's output lines start with: ``[Elves] ``, or nothing if unnamed."""
    return f"[{name}] " if name else ""


class Writer:
    """Bytes out, with flow control: ``paused`` is true while the destination is full.

    ``on_pause``/``on_resume`` are called when that changes; ``on_broken`` when the
    destination is gone (a closed pipe). Subclasses implement :meth:`write`.
    """

    def __init__(self) -> None:
        self.paused = False
        self.broken = False
        self.on_pause: Callable[[], None] = _nothing
        self.on_resume: Callable[[], None] = _nothing
        self.on_broken: Callable[[], None] = _nothing

    def write(self, data: bytes) -> None:
        """Queue or write ``data``; never raises for a closed destination (see ``broken``)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Flush and release the destination. Idempotent."""

    def _broke(self) -> None:
        if not self.broken:
            self.broken = True
            self.on_broken()


def _nothing() -> None:
    pass


class FileWriter(Writer):
    """Writes straight to a binary file object (a regular file, a terminal, ``/dev/null``)."""

    def __init__(self, file: IO[bytes], *, owned: bool) -> None:
        super().__init__()
        self.file = file
        self.owned = owned

    def write(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.file.write(data)
            # Flushed per chunk, so that `tail -f` and tests see data as it arrives.
            self.file.flush()
        except (OSError, ValueError):
            self._broke()

    async def aclose(self) -> None:
        if self.owned and not self.file.closed:
            try:
                self.file.close()
            except OSError:
                pass


class ConsoleWriter(Writer):
    """Writes text to whatever ``sys.stdout`` is at the time: the interactive mode replaces it
    with prompt_toolkit's proxy, which prints above the input line."""

    def write(self, data: bytes) -> None:
        try:
            sys.stdout.write(data.decode("utf-8", "replace"))
            sys.stdout.flush()
        except (OSError, ValueError):
            self._broke()


class _PipeProtocol(asyncio.Protocol):
    """The pipe's flow control and loss, handed to the writer as callbacks."""

    def __init__(self, on_pause: Callable[[bool], None], on_broken: Callable[[], None]) -> None:
        self.on_pause = on_pause
        self.on_broken = on_broken
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.on_pause(True)

    def resume_writing(self) -> None:
        self.on_pause(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if exc is not None:
            self.on_broken()


class PipeWriter(Writer):
    """Writes to a pipe or socket without blocking the loop; see the module docstring.

    Works on a duplicate of the descriptor, and puts back its blocking mode when closed
    (the mode belongs to the open file, which the shell and other processes share).
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self._was_blocking = os.get_blocking(fd)
        self._transport: asyncio.WriteTransport | None = None
        self._protocol: _PipeProtocol | None = None

    async def open(self) -> None:
        """Attach to the loop."""
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(os.dup(self.fd), "wb", buffering=0)
        try:
            transport, protocol = await loop.connect_write_pipe(
                lambda: _PipeProtocol(self._set_paused, self._broke), pipe
            )
        except BaseException:
            pipe.close()
            os.set_blocking(self.fd, self._was_blocking)
            raise
        transport.set_write_buffer_limits(high=PIPE_HIGH)
        self._transport = transport
        self._protocol = protocol

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self.on_pause()
        else:
            self.on_resume()

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self.broken or transport.is_closing():
            return
        transport.write(data)

    async def aclose(self) -> None:
        """Flush what is queued (at most :data:`CLOSE_GRACE` seconds), then close."""
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            return
        self._transport = None
        if not transport.is_closing():
            transport.close()  # flushes the buffer first
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await protocol.lost
        except TimeoutError:
            transport.abort()
            await protocol.lost
        finally:
            try:
                os.set_blocking(self.fd, self._was_blocking)
            except OSError:
                pass


def _same_file(fd1: int, fd2: int) -> bool:
    try:
        a, b = os.fstat(fd1), os.fstat(fd2)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def choose_writer(path: str | None) -> tuple[Writer, bool]:
    """The writer for received data: ``path`` if given (truncated), else standard output.

    Returns the writer and whether it is a terminal (then output is shown line by line with
    control characters escaped). A :class:`PipeWriter` must then be opened with
    ``await writer.open()``. Raises ``OSError`` if ``path`` cannot be opened.
    """
    if path is not None:
        return FileWriter(open(path, "wb"), owned=True), False
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return FileWriter(open(os.devnull, "wb"), owned=True), False
    if os.isatty(fd):
        return ConsoleWriter(), True
    # A pipe shared with stderr (2>&1) must stay blocking: non-blocking is a property of the
    # shared open file, and our stderr lines would then fail with EAGAIN.
    if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not _same_file(fd, 2):
        return PipeWriter(fd), False
    return FileWriter(sys.stdout.buffer, owned=False), False


class Sink:
    """What one connection does with the bytes it receives (called from ``data_received``)."""

    def data(self, data: bytes) -> None:
        """Bytes arrived."""
        raise NotImplementedError

    def flush(self) -> None:
        """The connection ended: hand out anything held."""


class TappedSink(Sink):
    """``sink``, with every chunk also shown to ``tap`` (the interactive client's nick
    completion reads what arrives)."""

    def __init__(self, sink: Sink, tap: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.tap = tap

    def data(self, data: bytes) -> None:
        self.sink.data(data)
        self.tap(data)

    def flush(self) -> None:
        self.sink.flush()


class RawSink(Sink):
    """Received bytes go to the writer unchanged."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def data(self, data: bytes) -> None:
        self.writer.write(data)


class LineSink(Sink):
    """Received lines go to the writer, each as ``prefix + line + LF``; with ``escape``,
    decoded as UTF-8 (with replacement) and control characters made visible. A partial line
    is shown after a pause of :data:`PARTIAL_LINE_DELAY`, or when the connection ends."""

    def __init__(self, writer: Writer, prefix: str = "", *, escape: bool = False) -> None:
        self.writer = writer
        self.prefix = prefix.encode()
        self.escape = escape
        self.splitter = LineSplitter()
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def data(self, data: bytes) -> None:
        lines = self.splitter.feed(data)
        if lines:
            self._emit(lines)
        if self.splitter.pending:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._last = self._loop.time()
            if self._timer is None:
                self._timer = self._loop.call_later(PARTIAL_LINE_DELAY, self._partial)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rest = self.splitter.flush()
        if rest is not None:
            self._emit([rest])

    def _partial(self) -> None:
        self._timer = None
        assert self._loop is not None
        wait = self._last + PARTIAL_LINE_DELAY - self._loop.time()
        if wait > 0:  # more of the line arrived meanwhile: give it its own pause
            self._timer = self._loop.call_later(wait, self._partial)
            return
        self.flush()

    def _emit(self, lines: list[bytes]) -> None:
        prefix = self.prefix
        if self.escape:
            out = [
                prefix + escape_controls(line.decode("utf-8", "replace")).encode() + b"\n"
                for line in lines
            ]
        else:
            out = [prefix + line + b"\n" for line in lines]
        self.writer.write(b"".join(out))

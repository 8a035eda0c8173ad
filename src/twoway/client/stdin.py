"""Reading standard input without blocking the event loop.

Which way depends on what fd 0 is:

* a pipe or a socket: ``loop.connect_read_pipe`` (on a duplicate descriptor, whose blocking
  mode is put back at the end because the shell shares it), read through a bounded
  ``StreamReader`` that stops reading when its consumer falls behind;
* a regular file: read directly (a file never makes us wait for another process), and
  exposed as :attr:`Source.regular_fd` so pipe mode can ``sendfile`` it;
* anything else (a terminal, ``/dev/null``, which epoll refuses): a daemon thread doing
  blocking reads, at most a few chunks ahead. A daemon thread, not the loop's executor,
  because a thread blocked reading a terminal cannot be interrupted, and the executor would
  make the process wait for it at exit.
"""

from __future__ import annotations

import asyncio
import collections
import os
import stat
import sys
import threading
from collections.abc import Callable

__all__ = ["CHUNK", "Source", "TappedSource", "open_stdin"]

# Read size: the usual pipe capacity; big enough for throughput, small enough to interleave.
CHUNK = 64 * 1024


class Source:
    """A stream of bytes: :meth:`read` returns the next chunk, ``b""`` at the end (and after)."""

    #: The descriptor of a regular file to ``sendfile`` from, else ``None``.
    regular_fd: int | None = None

    async def read(self) -> bytes:
        """The next chunk of at most :data:`CHUNK` bytes, or ``b""`` at the end."""
        return b""

    async def aclose(self) -> None:
        """Stop reading and release what was opened. Idempotent."""


class TappedSource(Source):
    """``source`` with each chunk shown to ``tap`` as it is read (``-x``'s dump). It has no
    :attr:`regular_fd`: ``sendfile`` would move the bytes where no tap sees them."""

    def __init__(self, source: Source, tap: Callable[[bytes], None]) -> None:
        self.source = source
        self.tap = tap

    async def read(self) -> bytes:
        data = await self.source.read()
        if data:
            self.tap(data)
        return data

    async def aclose(self) -> None:
        await self.source.aclose()


class _FileSource(Source):
    def __init__(self, fd: int) -> None:
        self.regular_fd = fd

    async def read(self) -> bytes:
        assert self.regular_fd is not None
        try:
            return os.read(self.regular_fd, CHUNK)
        except OSError:
            return b""


class _PipeSource(Source):
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._was_blocking = os.get_blocking(fd)
        self._reader: asyncio.StreamReader | None = None
        self._transport: asyncio.ReadTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        # The reader pauses the pipe once it holds twice its limit: bounded read-ahead.
        reader = asyncio.StreamReader(limit=CHUNK)
        pipe = os.fdopen(os.dup(self.fd), "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), pipe
            )
        except BaseException:
            pipe.close()
            self._restore()
            raise
        self._reader = reader
        self._transport = transport

    async def read(self) -> bytes:
        if self._reader is None:
            return b""
        try:
            return await self._reader.read(CHUNK)
        except OSError:
            return b""

    async def aclose(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._reader = None
        transport.close()
        # Let the transport's close callback run (it closes the duplicate descriptor).
        await asyncio.sleep(0)
        self._restore()

    def _restore(self) -> None:
        try:
            os.set_blocking(self.fd, self._was_blocking)
        except OSError:
            pass


class _ThreadSource(Source):
    # Chunks the reading thread may hold ahead of the consumer.
    AHEAD = 4

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._slots = threading.Semaphore(self.AHEAD)
        self._eof = False
        threading.Thread(target=self._run, name="twoway-stdin", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._slots.acquire()
            try:
                data = os.read(self.fd, CHUNK)
            except OSError:
                data = b""
            try:
                self._loop.call_soon_threadsafe(self._deliver, data)
            except RuntimeError:  # the loop is closed: nobody is reading any more
                return
            if not data:
                return

    def _deliver(self, data: bytes) -> None:
        self._chunks.append(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = self._loop.create_future()
            await self._waiter
        data = self._chunks.popleft()
        if data:
            self._slots.release()
        else:
            self._eof = True
        return data


def _pollable(fd: int) -> bool:
    """Whether the loop can watch ``fd`` (epoll refuses regular files and ``/dev/null``)."""
    import selectors

    selector = selectors.DefaultSelector()
    try:
        selector.register(fd, selectors.EVENT_READ)
    except (OSError, ValueError):
        return False
    finally:
        selector.close()
    return True


async def open_stdin() -> Source:
    """A :class:`Source` for standard input (an empty one if there is none)."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return Source()
    if stat.S_ISREG(mode):
        return _FileSource(fd)
    if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and _pollable(fd):
        source = _PipeSource(fd)
        await source.open()
        return source
    return _ThreadSource(fd)

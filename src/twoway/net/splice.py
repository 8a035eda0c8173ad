"""Socket → file in the kernel: ``splice(2)`` through a pipe (``twoway serve dump``).

A read into Python costs two copies per byte (kernel → libuv's buffer → a ``bytes``) and a
write one more. ``splice`` moves the socket's pages into a pipe without a copy and from the
pipe into the page cache with one, and runs in a thread that holds no GIL while it waits.

:class:`SplicePump` is the thread's side: plain blocking code over two descriptors, no event
loop. :class:`SpliceThread` runs one for a transport's socket in a thread of its own and
reports back on the event loop: the only place that takes the socket from the transport.
The pump stops on EOF, on a byte limit (the quota, handed back to the event loop), on a
socket error, on a disk error, or when :meth:`SplicePump.stop` is called from another thread.
The file stays an exact prefix of the stream at every moment: bytes leave the pipe only into
the file, and the pipe is emptied before anything else is read.

Write-behind: every ``window`` bytes the pump starts writeback of what it just wrote
(``sync_file_range(WRITE)``, which does not wait). The disk works while the network does, so
the fsync before the FIN finds little left to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from twoway.sansio.buckets import LATENCY_BOUNDS, Buckets

__all__ = ["PumpResult", "SplicePump", "SpliceThread", "splice_supported"]

StopReason = Literal["eof", "limit", "stopped", "reset", "disk"]

_SYNC_FILE_RANGE_WRITE = 2

# The pipe holds what one splice moves; 1 MiB is Linux's default maximum for a pipe.
PIPE_SIZE = 1024 * 1024
WINDOW = 8 * 1024 * 1024


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load_sync_file_range()


def splice_supported() -> bool:
    """True where ``os.splice`` exists (Linux, Python 3.10+)."""
    return hasattr(os, "splice") and hasattr(os, "pipe2")


class PumpResult:
    """How a pump ended: ``reason``, ``moved`` (bytes now in the file), ``error``."""

    __slots__ = ("dir_synced", "error", "moved", "reason", "sync_times", "synced")

    def __init__(self) -> None:
        self.reason: StopReason = "eof"
        self.moved = 0
        self.error: OSError | None = None
        #: Everything moved was fsynced before the pump returned.
        self.synced = False
        #: The directory entry was fsynced (with the first fsync of the file).
        self.dir_synced = False
        #: How long each sync took (for the metrics; read once the pump ended).
        self.sync_times = Buckets(LATENCY_BOUNDS)


class SplicePump:
    """Moves bytes from ``sock_fd`` to ``file_fd`` until EOF, ``limit`` bytes, an error or
    :meth:`stop`. Owns ``sock_fd`` (a ``dup`` of the connection's socket) and closes it.

    ``fsync``: ``always`` syncs after each splice round (what one wake-up read, up to the
    pipe's size), ``interval`` at least once a second while there is unsynced data, and
    every policy but ``never`` before returning. ``dirpath``: the file's path, whose
    directory is synced with the first fsync. ``progress`` is called with the running total
    after each round (from the pump's thread: keep it to an assignment).
    """

    def __init__(
        self,
        sock_fd: int,
        file_fd: int,
        *,
        offset: int,
        limit: int | None = None,
        fsync: str = "close",
        dirpath: Path | None = None,
        progress: Callable[[int], None] | None = None,
        pipe_size: int = PIPE_SIZE,
        window: int = WINDOW,
    ) -> None:
        self.sock_fd = sock_fd
        self.file_fd = file_fd
        self.offset = offset  # where the file ends now: write-behind ranges start here
        self.limit = limit
        self.fsync = fsync
        self.dirpath = dirpath
        self.progress = progress
        self.pipe_size = pipe_size
        self.window = window
        # The wake-up pipe: stop() writes a byte so a pump waiting in poll() returns.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = False
        #: How the pump ended, filled in as it runs (``moved`` is readable meanwhile).
        self.result = PumpResult()
        self._kicked = 0  # bytes of this pump whose writeback was started

    def stop(self) -> None:
        """Ask the pump to stop reading: what is in its pipe still goes to the file, then it
        syncs (per policy) and returns ``stopped``. Safe from any thread; idempotent."""
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # already woken (the pipe is full) or already closed
            pass

    def discard(self) -> None:
        """Release the wake-up pipe and ``sock_fd`` of a pump that will never :meth:`run`
        (its thread could not start). Idempotent."""
        for fd in (self.sock_fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self.sock_fd = self._wake_r = self._wake_w = -1

    def run(self) -> PumpResult:
        """Pump until done. Never raises for I/O errors: they are in the result."""
        result = self.result
        pipe_r = pipe_w = -1
        try:
            pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
            try:
                fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, self.pipe_size)
            except OSError:  # over the per-user pipe budget: the default 64 KiB still works
                pass
            self._pump(result, pipe_r, pipe_w)
        except OSError as exc:  # pragma: no cover - pipe2 itself failed (out of descriptors)
            result.reason, result.error = "disk", exc
        finally:
            for fd in (pipe_r, pipe_w, self.sock_fd, self._wake_r, self._wake_w):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        return result

    # -- the thread's loop ------------------------------------------------------------

    def _pump(self, result: PumpResult, pipe_r: int, pipe_w: int) -> None:
        poller = select.poll()
        poller.register(self.sock_fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        flags_in = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        always = self.fsync == "always"
        interval = self.fsync == "interval"
        last_sync = time.monotonic()
        unsynced = False
        while True:
            if self._stop:
                result.reason = "stopped"
                break
            want = self.pipe_size
            if self.limit is not None:
                want = min(want, self.limit - result.moved)
                if want <= 0:
                    result.reason = "limit"
                    break
            try:
                n = os.splice(self.sock_fd, pipe_w, want, flags=flags_in)
            except BlockingIOError:
                timeout = -1
                if interval and unsynced:
                    timeout = max(0, int((last_sync + 1.0 - time.monotonic()) * 1000))
                    if timeout == 0:
                        if not self._sync(result):
                            return
                        last_sync, unsynced = time.monotonic(), False
                        continue
                poller.poll(timeout)
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:  # pragma: no cover - Python retries EINTR itself
                    continue
                result.reason, result.error = "reset", exc
                break
            if n == 0:
                result.reason = "eof"
                break
            if not self._drain(result, pipe_r, n):
                return
            unsynced = True
            if self.progress is not None:
                self.progress(result.moved)
            if always or (interval and time.monotonic() - last_sync >= 1.0):
                if not self._sync(result):
                    return
                last_sync, unsynced = time.monotonic(), False
            elif self.fsync != "never" and result.moved - self._kicked >= self.window:
                self._write_behind(result.moved)
        if self.fsync == "never":
            return
        if unsynced or (self.dirpath is not None and not result.dir_synced):
            self._sync(result)
        else:
            result.synced = True

    def _drain(self, result: PumpResult, pipe_r: int, n: int) -> bool:
        """Move ``n`` bytes from the pipe into the file; False after a disk error."""
        while n:
            try:
                m = os.splice(pipe_r, self.file_fd, n, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                result.reason, result.error = "disk", exc
                return False
            if m == 0:  # pragma: no cover - a regular file never does this
                result.reason, result.error = "disk", OSError(errno.EIO, "splice wrote 0 bytes")
                return False
            n -= m
            result.moved += m
        return True

    def _sync(self, result: PumpResult) -> bool:
        """fsync the file (and its directory the first time); False after an error, which
        is reported and never retried as if the data were safe."""
        try:
            start = time.perf_counter()
            os.fsync(self.file_fd)
            if self.dirpath is not None and not result.dir_synced:
                dfd = os.open(self.dirpath.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                result.dir_synced = True
        except OSError as exc:
            result.reason, result.error = "disk", exc
            result.synced = False
            return False
        result.synced = True
        result.sync_times.observe(time.perf_counter() - start)
        return True

    def _write_behind(self, end: int) -> None:
        """Start writeback of what was written since the last call, without waiting for it:
        the disk works while the network does. (Waiting for the window before, which would
        cap this file's dirty pages at two windows, held push to the disk's own speed: 1.2x
        Node instead of 1.6x. The kernel's dirty-page throttling bounds them anyway.)"""
        func = _sync_file_range
        if func is None:
            return
        start, self._kicked = self._kicked, end
        func(self.file_fd, self.offset + start, end - start, _SYNC_FILE_RANGE_WRITE)


class SpliceThread:
    """A :class:`SplicePump` moving a transport's socket into a file, in a daemon thread of
    its own; ``done(result)`` is called on the event loop when it stops.

    While it runs, nothing else may read the socket: the caller stops the transport's
    reading first (``Connection.hand_off_reading``) and takes it back after ``done``.
    """

    __slots__ = ("_done", "_loop", "pump")

    def __init__(
        self, pump: SplicePump, loop: asyncio.AbstractEventLoop, done: Callable[[PumpResult], None]
    ) -> None:
        self.pump = pump
        self._loop = loop
        self._done = done

    @classmethod
    def start(
        cls,
        transport: asyncio.BaseTransport | None,
        file_fd: int,
        done: Callable[[PumpResult], None],
        *,
        offset: int,
        limit: int | None = None,
        fsync: str = "close",
        dirpath: Path | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SpliceThread | None:
        """Start pumping ``transport``'s socket into ``file_fd`` (the options as for
        :class:`SplicePump`).

        Returns ``None`` where there is no plain socket to splice from (no transport, no
        socket behind it, TLS: ciphertext must never reach the file). Raises ``OSError``
        (out of descriptors) or ``RuntimeError`` (no thread to be had) with nothing started
        and nothing left open; the caller then reads as usual."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or transport is None or transport.get_extra_info("sslcontext"):
            return None
        sock_fd = os.dup(sock.fileno())
        try:
            pump = SplicePump(
                sock_fd,
                file_fd,
                offset=offset,
                limit=limit,
                fsync=fsync,
                dirpath=dirpath,
                progress=progress,
            )
        except BaseException:
            os.close(sock_fd)
            raise
        self = cls(pump, asyncio.get_running_loop(), done)
        thread = threading.Thread(target=self._run, name="twoway-splice", daemon=True)
        try:
            thread.start()
        except BaseException:
            pump.discard()
            raise
        return self

    @property
    def moved(self) -> int:
        """Bytes in the file so far (read from another thread: a snapshot)."""
        return self.pump.result.moved

    def stop(self) -> None:
        """Ask the pump to stop (see :meth:`SplicePump.stop`); ``done`` follows."""
        self.pump.stop()

    def _run(self) -> None:
        """The thread."""
        result = self.pump.run()
        try:
            self._loop.call_soon_threadsafe(self._done, result)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

"""``twoway serve dump``: every byte a client sends, appended to a file; nothing lost.

The promise: every byte the server read is in the file, in order, with no gap. The server
sends its FIN only after the file is complete and synced (per ``--fsync``), so a client that
half-closes and then reads EOF knows everything it sent is stored. After ``kill -9`` the file
is an exact prefix of what was sent. On a disk error (ENOSPC, EIO, a failed fsync) the
connection is aborted with an RST, never a FIN: the client is never told "stored" for bytes
that were not.

Writes run in worker threads so a slow disk never stalls the event loop: each connection has
at most one write in flight, and what arrives meanwhile is gathered into the next write (group
commit). Above ``buffer_high`` bytes waiting, reading from that client pauses, so memory stays
bounded whatever the client sends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from twoway.errors import ConfigError, describe_oserror
from twoway.net.handlers import Service

if TYPE_CHECKING:
    from twoway.net.connection import Connection

__all__ = ["FSYNC_POLICIES", "DumpService", "FsyncPolicy"]

log = logging.getLogger("twoway.dump")

FsyncPolicy = Literal["never", "interval", "close", "always"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("never", "interval", "close", "always")


class _Sink:
    """One connection's upload: a buffer, the file it goes to, at most one write in flight."""

    __slots__ = (
        "buf",
        "conn",
        "dir_pending",
        "done",
        "failed",
        "fd",
        "finishing",
        "inflight",
        "over_quota",
        "path",
        "received",
        "service",
        "shared",
        "sync_due",
        "written",
    )

    def __init__(self, service: DumpService, conn: Connection, fd: int, path: Path) -> None:
        self.service = service
        self.conn = conn
        self.fd = fd
        self.path = path
        self.shared = service.file is not None
        self.buf = bytearray()
        self.received = 0
        self.written = 0
        self.inflight = False
        self.finishing = False
        self.failed = False
        self.over_quota = False
        self.sync_due = False
        # A new file's directory entry must be durable too (policies other than never): the
        # first fsync of the file also syncs its directory.
        self.dir_pending = service.fsync != "never" and not self.shared
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- loop side ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.failed or self.over_quota:
            return
        limit = self.service.max_bytes
        if limit is not None and self.received + len(data) >= limit:
            data = data[: limit - self.received]
            self.over_quota = True
            self.conn.pause_reading()
        self.received += len(data)
        self.buf += data
        if self.over_quota:
            self.finish()
            return
        if not self.inflight:
            self.submit()
        if len(self.buf) > self.service.buffer_high:
            self.conn.pause_reading()

    def finish(self) -> None:
        """No more data will come (EOF, quota, or the connection is gone): flush and sync."""
        if self.finishing:
            return
        self.finishing = True
        if not self.inflight:
            self.submit()

    def submit(self) -> None:
        service = self.service
        final = self.finishing
        chunk: bytes | bytearray
        if self.shared and service.lines and not final:
            cut = self.buf.rfind(b"\n") + 1  # only whole lines go to a shared file
            chunk = bytes(self.buf[:cut])
            del self.buf[:cut]
        else:
            chunk, self.buf = self.buf, bytearray()
        sync = (service.fsync == "always" and bool(chunk)) or self.sync_due
        if final and service.fsync != "never":
            sync = True
        if not chunk and not sync and not final:
            return
        self.sync_due = False
        dirpath = None
        if sync and self.dir_pending:
            dirpath, self.dir_pending = self.path, False
        self.inflight = True
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            service.executor_for(self), _write, self.fd, chunk, sync, dirpath
        )
        fut.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future[int]) -> None:
        self.inflight = False
        exc = fut.exception()
        if exc is not None:
            self._fail(exc)
            return
        self.written += fut.result()
        conn = self.conn
        if self.finishing:
            if self.buf or self.sync_due:
                self.submit()
                return
            self._complete()
            return
        if self.buf or self.sync_due:
            self.submit()
        if len(self.buf) <= self.service.buffer_low and not self.over_quota:
            conn.resume_reading()

    def _complete(self) -> None:
        service = self.service
        if not self.shared:
            os.close(self.fd)
        log.info("dump: %s: stored %d bytes from %s", self.path, self.written, self.conn.peer)
        if self.over_quota:
            self.conn.write(f"error: quota exceeded ({service.max_bytes} bytes)\n".encode())
            self.conn.close(reason="quota exceeded")
        else:
            self.conn.close()  # the FIN that says "stored"
        service.sinks.discard(self)
        if not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        self.buf = bytearray()
        log.error("dump: %s: %s (wrote %d bytes)", self.path, _strerror(exc), self.written)
        self.conn.abort(reason="disk error")  # an RST: never let the client think it is stored
        if not self.shared:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.service.sinks.discard(self)
        if not self.done.done():
            self.done.set_result(None)


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _write(fd: int, chunk: bytes | bytearray, sync: bool, dirpath: Path | None) -> int:
    """Worker thread: append all of ``chunk``, then fsync if asked (and the directory)."""
    view = memoryview(chunk)
    total = 0
    while total < len(view):
        n = os.write(fd, view[total:])
        if n == 0:  # pragma: no cover - a regular file never does this
            raise OSError(errno.EIO, "write returned 0")
        total += n
    if sync:
        os.fsync(fd)  # an error here is reported, never retried as if the data were safe
        if dirpath is not None:
            dfd = os.open(dirpath.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    return total


class DumpService(Service):
    """Appends each connection's bytes to its own file in ``directory`` (or all to ``file``).

    ``fsync``: ``never``; ``interval`` (at least once a second); ``close`` (before the FIN,
    the default); ``always`` (after every write, each write gathering what arrived meanwhile).
    ``max_bytes`` caps each connection: the file keeps exactly the first N bytes and the
    client reads ``error: quota exceeded (N bytes)``. With ``file``, connections interleave
    by whole received chunks, or by whole lines with ``lines=True``.
    """

    name = "dump"

    def __init__(
        self,
        directory: str | os.PathLike[str] = "dumps",
        *,
        file: str | os.PathLike[str] | None = None,
        lines: bool = False,
        fsync: FsyncPolicy = "close",
        max_bytes: int | None = None,
        buffer_high: int = 4 * 1024 * 1024,
        buffer_low: int = 1024 * 1024,
        workers: int = 4,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync = {fsync!r}: not one of {', '.join(FSYNC_POLICIES)}")
        self.directory = Path(directory)
        self.file = Path(file) if file is not None else None
        self.lines = lines
        self.fsync: FsyncPolicy = fsync
        self.max_bytes = max_bytes
        self.buffer_high = buffer_high
        self.buffer_low = buffer_low
        self.sinks: set[_Sink] = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "twoway-dump")
        # One thread for the shared file keeps its chunks in the order they were submitted.
        self._shared_pool = concurrent.futures.ThreadPoolExecutor(1, "twoway-dump-shared")
        self._shared_fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._prepare()

    def _prepare(self) -> None:
        try:
            if self.file is not None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                self._shared_fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                if not os.access(self.directory, os.W_OK | os.X_OK):
                    raise PermissionError(errno.EACCES, "permission denied")
        except OSError as exc:
            where = self.file if self.file is not None else self.directory
            raise ConfigError(f"dump: cannot write to {where}: {describe_oserror(exc)}") from None

    def executor_for(self, sink: _Sink) -> concurrent.futures.Executor:
        return self._shared_pool if sink.shared else self._pool

    def _open(self, conn: Connection) -> tuple[int, Path]:
        if self._shared_fd is not None and self.file is not None:
            return self._shared_fd, self.file
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        host, port = "unknown", 0
        if isinstance(conn.remote_address, tuple):
            from twoway.net.server import normalize_ip

            host, port = normalize_ip(str(conn.remote_address[0])), conn.remote_address[1]
        base = f"{stamp}_{host.replace(':', '-')}_{port}"
        for n in range(100):
            path = self.directory / (f"{base}.dump" if n == 0 else f"{base}-{n}.dump")
            try:
                return os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644
                ), path
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "too many files with the same name")

    def on_connect(self, conn: Connection) -> None:
        try:
            fd, path = self._open(conn)
        except OSError as exc:
            log.error("dump: cannot create a file in %s: %s", self.directory, _strerror(exc))
            conn.write(f"error: cannot store data ({describe_oserror(exc)})\n".encode())
            conn.close(reason="cannot create file")
            return
        sink = _Sink(self, conn, fd, path)
        conn.state = sink
        self.sinks.add(sink)
        if self.fsync == "interval" and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self._sync_tick)

    def on_data(self, conn: Connection, data: bytes) -> None:
        sink: _Sink | None = conn.state
        if sink is not None:
            sink.feed(data)

    def on_eof(self, conn: Connection) -> None:
        sink: _Sink | None = conn.state
        if sink is None:
            conn.close()
            return
        sink.finish()

    def on_close(self, conn: Connection, exc: BaseException | None) -> None:
        sink: _Sink | None = conn.state
        if sink is None or sink.finishing or sink.failed:
            return
        # Reset by the client or aborted at the end of a shutdown: what was read still goes
        # to the file (nothing already read is lost), but no FIN can say so.
        log.info(
            "dump: %s: connection from %s ended early after %d bytes",
            sink.path,
            conn.peer,
            sink.received,
        )
        sink.finish()

    def on_shutdown(self, conn: Connection, reason: str) -> None:
        """Let uploads finish within the grace period; the server aborts the rest."""

    async def on_stopped(self) -> None:
        pending = [s.done for s in self.sinks]
        if pending:
            await asyncio.wait(pending, timeout=30)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._shared_fd is not None:
            if self.fsync != "never":
                await asyncio.get_running_loop().run_in_executor(
                    self._shared_pool, os.fsync, self._shared_fd
                )
            os.close(self._shared_fd)
            self._shared_fd = None
        self._pool.shutdown(wait=False)
        self._shared_pool.shutdown(wait=False)

    def _sync_tick(self) -> None:
        for sink in list(self.sinks):
            if not sink.failed and sink.received:
                sink.sync_due = True
                if not sink.inflight:
                    sink.submit()
        self._timer = (
            asyncio.get_running_loop().call_later(1.0, self._sync_tick) if self.sinks else None
        )

"""``twoway serve dump``: every byte a client sends, appended to a file; nothing lost.

The promise: every byte the server read is in the file, in order, with no gap. The server
sends its FIN only after the file is complete and synced (per ``--fsync``), so a client that
half-closes and then reads EOF knows everything it sent is stored. After ``kill -9`` the file
is an exact prefix of what was sent. On a disk error (ENOSPC, EIO, a failed fsync) the
connection is aborted with an RST, never a FIN: the client is never told "stored" for bytes
that were not.

Writes run in worker threads so a slow disk never stalls the event loop: each connection has
at most one write in flight, and what arrives meanwhile is gathered into the next write (group
commit). Creating a connection's file is its first operation in flight, in a worker thread
too: creating a file on a stalled disk blocks like a write. Above ``buffer_high`` bytes
waiting, reading from that client pauses, so memory stays bounded whatever the client sends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import errno
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from twoway.errors import ConfigError, describe_oserror
from twoway.net.handlers import Service
from twoway.services.splice import PumpResult, SplicePump, splice_supported

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
        "buf_size",
        "conn",
        "dir_pending",
        "done",
        "durable",
        "failed",
        "fd",
        "final_sent",
        "finishing",
        "inflight",
        "line_open",
        "lines",
        "over_quota",
        "path",
        "pump",
        "received",
        "service",
        "shared",
        "sync_due",
        "syncing",
        "want_splice",
        "written",
    )

    def __init__(self, service: DumpService, conn: Connection, fd: int, path: Path) -> None:
        self.service = service
        self.conn = conn
        self.fd = fd  # -1 until the file is created (see open())
        self.path = path
        self.shared = service.file is not None
        # Whole lines only (a shared file with --lines): a line never meets another
        # connection's bytes, and the connection's last line always ends with a newline.
        self.lines = self.shared and service.lines
        # Part of a line was written without its end (a line longer than buffer_high): the
        # final write closes it with a newline.
        self.line_open = False
        # Received chunks not yet handed to a write, kept as they came: os.writev takes the
        # list as it is, with no copy into one growing buffer.
        self.buf: list[bytes] = []
        self.buf_size = 0
        self.received = 0
        self.written = 0
        # Bytes known to be on disk (written, then fsynced): the interval tick skips a file
        # with nothing newer, instead of syncing idle files every second.
        self.durable = 0
        self.syncing = False  # the write in flight ends with an fsync
        self.inflight = False
        self.finishing = False
        # The final write (with the policy's sync) has been submitted: only after it may
        # the FIN say "stored". A write in flight when the EOF came was not that write.
        self.final_sent = False
        self.failed = False
        self.over_quota = False
        self.sync_due = False
        # A new file's directory entry must be durable too (policies other than never): the
        # first fsync of the file also syncs its directory.
        self.dir_pending = service.fsync != "never" and not self.shared
        # None until the first data decides whether a splice pump takes over the socket.
        self.want_splice: bool | None = None
        self.pump: SplicePump | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- loop side ----------------------------------------------------------------------

    def open(self, base: str) -> None:
        """Create the file in a worker thread; data that arrives meanwhile is buffered (and
        reading pauses above ``buffer_high``) as it is behind a write in flight."""
        self.inflight = True
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.service._pool, _create, self.service.directory, base)
        fut.add_done_callback(self._opened)

    def _opened(self, fut: asyncio.Future[tuple[int, Path]]) -> None:
        self.inflight = False
        exc = fut.exception()
        if exc is not None:
            self.failed = True
            self.buf, self.buf_size = [], 0
            log.error(
                "dump: cannot create a file in %s: %s", self.service.directory, _strerror(exc)
            )
            self.conn.write(f"error: cannot store data ({describe_oserror(exc)})\n".encode())
            self.conn.close(reason="cannot create file")
            self._forget()
            return
        self.fd, self.path = fut.result()
        if self.finishing or self.buf_size or self.sync_due:
            self.submit()
        self._read_on()

    def feed(self, data: bytes) -> None:
        if self.failed or self.over_quota:
            return
        limit = self.service.max_bytes
        # Exactly ``limit`` bytes is within the quota; only a byte beyond it exceeds it.
        if limit is not None and self.received + len(data) > limit:
            data = data[: limit - self.received]
            self.over_quota = True
            self.conn.pause_reading()
        self.received += len(data)
        if data:
            self.buf.append(data)
            self.buf_size += len(data)
        if self.over_quota:
            if self.lines:
                self._drop_partial_line()
            self.finish()
            return
        if self.want_splice is None:
            self.want_splice = self.service._may_splice(self)
            if self.want_splice:
                # Until the pump starts (after what is buffered is written), nobody reads.
                self.conn.hand_off_reading()
        if not self.inflight:
            self.submit()
            if not self.inflight:
                self._read_on()
        if self.buf_size > self.service.buffer_high:
            self.conn.pause_reading()

    def _drop_partial_line(self) -> None:
        """The quota cut a line: only whole lines are stored, so the part of the cut line
        that is still buffered is dropped. (A line already partly written, being longer than
        buffer_high, keeps what is buffered of it and is closed with a newline.)"""
        joined = b"".join(self.buf)
        cut = joined.rfind(b"\n") + 1
        keep = joined[: cut if cut or not self.line_open else len(joined)]
        self.buf, self.buf_size = ([keep] if keep else []), len(keep)

    def finish(self) -> None:
        """No more data will come (EOF, quota, or the connection is gone): flush and sync."""
        if self.finishing:
            return
        self.finishing = True
        if self.pump is not None:
            self.pump.stop()  # it syncs and reports back; then this finishes
        elif not self.inflight:
            self.submit()

    def submit(self) -> None:
        service = self.service
        final = self.finishing
        chunk: list[bytes]
        if self.lines:
            chunk = self._whole_lines(final)
        else:
            chunk, self.buf, self.buf_size = self.buf, [], 0
        sync = (service.fsync == "always" and bool(chunk)) or self.sync_due
        if final and service.fsync != "never":
            sync = True
        if not chunk and not sync and not final:
            return
        self.final_sent = final
        self.sync_due = False
        self.syncing = sync
        dirpath = None
        if sync and self.dir_pending:
            dirpath, self.dir_pending = self.path, False
        self.inflight = True
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(
            service.executor_for(self), _write, self.fd, chunk, sync, dirpath
        )
        fut.add_done_callback(self._written)

    def _whole_lines(self, final: bool) -> list[bytes]:
        """Take from the buffer what may go to a shared file with ``--lines``: the whole
        lines, keeping a line's start until its end arrives. At the end of the connection an
        unterminated last line is closed with a newline, so the next connection's bytes
        never glue onto it. Above buffer_high (where reading pauses) a line without its end
        is written as it is: held back, it would hold the client forever."""
        joined = b"".join(self.buf)
        if final:
            cut = len(joined)
            if (joined and not joined.endswith(b"\n")) or (not joined and self.line_open):
                joined += b"\n"
                cut += 1
        else:
            cut = joined.rfind(b"\n") + 1
            if not cut and self.buf_size > self.service.buffer_high:
                cut = len(joined)
        rest = joined[cut:]
        self.buf, self.buf_size = ([rest] if rest else []), len(rest)
        if not cut:
            return []
        self.line_open = joined[cut - 1] != 0x0A
        return [joined[:cut]]

    def _written(self, fut: asyncio.Future[int]) -> None:
        self.inflight = False
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, _WriteFailed):  # part of the chunk may be in the file
                self.written += exc.written
                exc = exc.error
            self._fail(exc)
            return
        self.written += fut.result()
        if self.syncing:
            self.durable = self.written
        if self.finishing:
            if self.buf_size or self.sync_due or not self.final_sent:
                self.submit()
                return
            self._complete()
            return
        if self.buf_size or self.sync_due:
            self.submit()
        self._read_on()

    def _read_on(self) -> None:
        """Nothing in flight and not finishing: go on reading, by splice pump or as usual."""
        if self.finishing or self.failed or self.over_quota:
            return
        if self.want_splice:
            if not self.inflight and not self.buf_size and self.fd >= 0:
                self._start_pump()
        elif self.buf_size <= self.service.buffer_low:
            self.conn.resume_reading()

    # -- splice pump (see twoway.services.splice) ----------------------------------------

    def _start_pump(self) -> None:
        conn, service = self.conn, self.service
        limit = None if service.max_bytes is None else service.max_bytes - self.received
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        sock_fd = -1
        if sock is not None and limit != 0:
            try:
                sock_fd = os.dup(sock.fileno())
            except OSError as exc:  # out of descriptors: read as usual
                log.debug("dump: %s: no splice: %s", conn.peer, exc)
        if sock_fd < 0:
            self._no_pump()
            return
        base = conn.bytes_read

        def progress(moved: int) -> None:
            # From the pump's thread; the idle sweeper and the counters see the bytes.
            conn.bytes_read = base + moved

        pump = SplicePump(
            sock_fd,
            self.fd,
            offset=self.written,
            limit=limit,
            fsync=service.fsync,
            dirpath=self.path if self.dir_pending else None,
            progress=progress,
        )
        self.pump = pump
        self.inflight = True
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._run_pump, args=(pump, loop), name="twoway-splice", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: read as usual
            log.debug("dump: %s: no splice: %s", conn.peer, exc)
            os.close(sock_fd)
            self.pump, self.inflight = None, False
            self._no_pump()

    def _no_pump(self) -> None:
        self._release_splice()
        self.conn.take_back_reading()
        self._read_on()

    def _release_splice(self) -> None:
        """Give back this sink's place among the service's ``splice_max``."""
        if self.want_splice:
            self.want_splice = False
            self.service._pumps -= 1

    def _run_pump(self, pump: SplicePump, loop: asyncio.AbstractEventLoop) -> None:
        """The pump's thread."""
        result = pump.run()
        try:
            loop.call_soon_threadsafe(self._pumped, result)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    def _pumped(self, result: PumpResult) -> None:
        """Back on the loop: the pump stopped (see :class:`PumpResult`)."""
        self.pump = None
        self.inflight = False
        self._release_splice()
        self.received += result.moved
        self.written += result.moved
        if result.synced:
            self.durable = self.written
        if result.dir_synced:
            self.dir_pending = False
        reason = result.reason
        if reason == "disk":
            assert result.error is not None
            self._fail(result.error)
            return
        if reason == "limit":
            # Exactly the quota is stored; one more byte exceeds it, EOF completes it.
            self.conn.take_back_reading()
            return
        if reason == "reset":
            log.info(
                "dump: %s: connection from %s ended early after %d bytes (%s)",
                self.path,
                self.conn.peer,
                self.received,
                _strerror(result.error) if result.error is not None else "reset",
            )
            self.conn.abort(reason="reset by peer")
        elif reason == "eof":
            self.conn.take_back_reading()
        # eof, reset or stopped (the connection was closed here): what was read is stored.
        self.finishing = True
        self.final_sent = result.synced or self.service.fsync == "never"
        if self.buf_size or self.sync_due or not self.final_sent:
            self.submit()
            return
        self._complete()

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
        self._forget()

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        self.buf, self.buf_size = [], 0
        log.error("dump: %s: %s (wrote %d bytes)", self.path, _strerror(exc), self.written)
        self.conn.abort(reason="disk error")  # an RST: never let the client think it is stored
        if not self.shared:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self._forget()

    def _forget(self) -> None:
        self._release_splice()
        self.service.sinks.discard(self)
        if not self.done.done():
            self.done.set_result(None)


def _create(directory: Path, base: str) -> tuple[int, Path]:
    """Worker thread: create a new file named ``base`` (``base-1``, ... if taken)."""
    for n in range(100):
        path = directory / (f"{base}.dump" if n == 0 else f"{base}-{n}.dump")
        try:
            # Not O_APPEND: the file is new and only this connection writes it, and splice(2)
            # refuses a file opened for appending.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(errno.EEXIST, "too many files with the same name")


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _WriteFailed(Exception):
    """A write or fsync failed after ``written`` bytes of the chunk had reached the file
    (a disk that fills up mid-chunk takes part of it), so the log can say what is there."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(error, written)
        self.error = error
        self.written = written


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _write(fd: int, chunks: list[bytes], sync: bool, dirpath: Path | None) -> int:
    """Worker thread: append all of ``chunks`` (with ``writev``, no joining copy), then fsync
    if asked (and the directory).

    Raises :class:`_WriteFailed`, with the count of bytes that did reach the file."""
    total = 0
    try:
        i = 0
        while i < len(chunks):
            batch = chunks[i : i + _IOV_MAX]
            want = sum(map(len, batch))
            n = os.writev(fd, batch)
            total += n
            if n == want:
                i += len(batch)
                continue
            if n == 0:  # pragma: no cover - a regular file never does this
                raise OSError(errno.EIO, "write returned 0")
            # A short write (rare on a regular file: a full disk, a signal): continue from
            # the first byte not written.
            for j, piece in enumerate(batch):
                if n < len(piece):
                    chunks = [piece[n:], *batch[j + 1 :], *chunks[i + len(batch) :]]
                    i = 0
                    break
                n -= len(piece)
        if sync:
            # An error here is reported, never retried as if the data were safe.
            os.fsync(fd)
            if dirpath is not None:
                dfd = os.open(dirpath.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
    except OSError as exc:
        raise _WriteFailed(exc, total) from exc
    return total


class DumpService(Service):
    """Appends each connection's bytes to its own file in ``directory`` (or all to ``file``).

    ``fsync``: ``never``; ``interval`` (at least once a second); ``close`` (before the FIN,
    the default); ``always`` (after every write, each write gathering what arrived meanwhile).
    ``max_bytes`` caps each connection: the file keeps exactly the first N bytes and the
    client reads ``error: quota exceeded (N bytes)``. With ``file``, connections interleave
    by whole received chunks, or by whole lines with ``lines=True``: a connection's last line
    without its newline is closed with one, a quota cut keeps only the whole lines before it,
    and a line longer than ``buffer_high`` is written in pieces (other connections' lines may
    fall between them).

    ``splice`` (Linux): a connection with its own file is moved into it by ``splice(2)`` in
    a thread of its own, up to ``splice_max`` at once (the rest are read as usual): no copy
    in user space, and writeback starts while the upload runs (see
    :mod:`twoway.services.splice`). The promise is the same either way.
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
        splice: bool = True,
        splice_max: int = 64,
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
        self.splice = splice and splice_supported()
        self.splice_max = splice_max
        self._pumps = 0
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

    def _may_splice(self, sink: _Sink) -> bool:
        """A connection's own file, while pump threads are free: splice it (and count it
        from now on, though its pump starts only after what is buffered is written)."""
        if self.splice and not sink.shared and self._pumps < self.splice_max:
            self._pumps += 1
            return True
        return False

    def executor_for(self, sink: _Sink) -> concurrent.futures.Executor:
        return self._shared_pool if sink.shared else self._pool

    @staticmethod
    def _base_name(conn: Connection) -> str:
        """``<UTC time>_<ip>_<port>``: when and from where (the connection time)."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        host, port = "unknown", 0
        if isinstance(conn.remote_address, tuple):
            from twoway.net.server import normalize_ip

            host, port = normalize_ip(str(conn.remote_address[0])), conn.remote_address[1]
        return f"{stamp}_{host.replace(':', '-')}_{port}"

    def on_connect(self, conn: Connection) -> None:
        if self._shared_fd is not None and self.file is not None:
            sink = _Sink(self, conn, self._shared_fd, self.file)
        else:
            base = self._base_name(conn)
            sink = _Sink(self, conn, -1, self.directory / f"{base}.dump")
            sink.open(base)  # completes in a later callback, never inside this one
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
            sink.received + (sink.pump.result.moved if sink.pump is not None else 0),
        )
        sink.finish()

    def on_shutdown(self, conn: Connection, reason: str) -> None:
        """Let uploads finish within the grace period; the server aborts the rest."""

    def on_idle(self, conn: Connection) -> None:
        """An upload idle for ``idle_timeout``: what was read is stored (see
        :meth:`on_close`) and the connection is reset. Not closed: a client that half-closes
        after our FIN would read it as "stored", even for bytes sent after it."""
        conn.abort(reason="idle")

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
            if sink.pump is not None:
                continue  # a pump syncs on its own clock
            if not sink.failed and sink.received > sink.durable:
                sink.sync_due = True
                if not sink.inflight:
                    sink.submit()
        self._timer = (
            asyncio.get_running_loop().call_later(1.0, self._sync_tick) if self.sinks else None
        )

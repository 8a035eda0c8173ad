"""One connection's upload in ``twoway serve dump``: its buffer, its file, its quota, its
writes and syncs (each in a worker thread, at most one in flight) or its splice pump.

The life of a sink: :meth:`Sink.open` creates the file (per-connection files), :meth:`Sink.
feed` takes what the connection read, :meth:`Sink.finish` says no more will come (EOF, the
quota, the connection gone); the last write carries the policy's sync, and only then does
the connection get its FIN ("stored"). A disk error aborts the connection instead (RST).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING

from twoway.errors import describe_oserror
from twoway.net.splice import PumpResult, SpliceThread
from twoway.services.dump.disk import WriteFailed, create_file, strerror, write_chunks
from twoway.services.dump.lines import whole_lines, without_partial_line
from twoway.services.dump.shared import DiskFigures, SinkSettings, SpliceSlots
from twoway.services.dump.turn import LineTurn

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["Sink"]

log = logging.getLogger("twoway.dump")


class Sink:
    """One connection's upload: a buffer, the file it goes to, at most one write in flight.

    Handed what it may use, not the service: its settings, the executors for its disk work,
    the splice slots (``None``: never splice) and ``forget``, called once when it is done."""

    __slots__ = (
        "buf",
        "buf_size",
        "conn",
        "creator",
        "cut_line",
        "dir_pending",
        "disk",
        "done",
        "durable",
        "failed",
        "fd",
        "final_sent",
        "finishing",
        "forget",
        "inflight",
        "line_open",
        "lines",
        "over_quota",
        "path",
        "pump",
        "received",
        "settings",
        "shared",
        "slots",
        "sync_due",
        "syncing",
        "turn",
        "want_splice",
        "writer",
        "written",
    )

    def __init__(
        self,
        conn: Conn,
        fd: int,
        path: Path,
        settings: SinkSettings,
        *,
        shared: bool,
        creator: Executor,
        writer: Executor,
        slots: SpliceSlots | None,
        forget: Callable[[Sink], None],
        turn: LineTurn | None = None,
        disk: DiskFigures | None = None,
    ) -> None:
        self.conn = conn
        #: Where fsync timings and disk errors are counted (the service's).
        self.disk = disk if disk is not None else DiskFigures()
        self.fd = fd  # -1 until the file is created (see open())
        self.path = path
        self.settings = settings
        self.shared = shared
        self.creator = creator
        # One thread for a shared file keeps its chunks in the order they were submitted.
        self.writer = writer
        self.slots = None if shared else slots
        self.forget = forget
        # Whole lines only (a shared file with --lines): a line never meets another
        # connection's bytes, and the connection's last line always ends with a newline.
        self.lines = shared and settings.lines
        # With --lines, whose line the shared file is writing (see LineTurn).
        self.turn = turn if self.lines else None
        # The turn's time is up: the open line is ended with a newline at the next write.
        self.cut_line = False
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
        self.dir_pending = settings.fsync != "never" and not shared
        # None until the first data decides whether a splice pump takes over the socket.
        self.want_splice: bool | None = None
        self.pump: SpliceThread | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- loop side ----------------------------------------------------------------------

    def open(self, base: str) -> None:
        """Create the file in a worker thread; data that arrives meanwhile is buffered (and
        reading pauses above ``buffer_high``) as it is behind a write in flight."""
        self.inflight = True
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.creator, create_file, self.settings.directory, base)
        fut.add_done_callback(self._opened)

    def _opened(self, fut: asyncio.Future[tuple[int, Path]]) -> None:
        self.inflight = False
        exc = fut.exception()
        if exc is not None:
            self.failed = True
            self.disk.disk_errors += 1
            self.buf, self.buf_size = [], 0
            log.error(
                "dump: cannot create a file in %s: %s", self.settings.directory, strerror(exc)
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
        """Bytes the connection read: buffered, and written when no write is in flight
        (the quota cuts them first; reading pauses above ``buffer_high``)."""
        if self.failed or self.over_quota:
            return
        limit = self.settings.max_bytes
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
            self.want_splice = self.slots is not None and self.slots.take()
            if self.want_splice:
                # Until the pump starts (after what is buffered is written), nobody reads.
                self.conn.hand_off_reading()
        if not self.inflight:
            self.submit()
            if not self.inflight:
                self._read_on()
        if self.buf_size > self.settings.buffer_high:
            self.conn.pause_reading()

    def _drop_partial_line(self) -> None:
        """The quota cut a line: keep what :func:`~twoway.services.dump.lines.
        without_partial_line` keeps of the buffer."""
        keep = without_partial_line(self.buf, line_open=self.line_open)
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
        """Hand what is buffered (and the sync the policy asks for) to a write in a worker
        thread; nothing when there is nothing to do. At most one write is in flight."""
        settings = self.settings
        final = self.finishing
        if self.turn is not None and self.turn.blocks(self):
            return  # another connection's line is being written: resume() comes after it
        chunk: list[bytes]
        if self.lines:
            chunk = self._whole_lines(final)
        else:
            chunk, self.buf, self.buf_size = self.buf, [], 0
        sync = (settings.fsync == "always" and bool(chunk)) or self.sync_due
        if final and settings.fsync != "never":
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
        fut = loop.run_in_executor(self.writer, write_chunks, self.fd, chunk, sync, dirpath)
        fut.add_done_callback(self._written)
        if self.turn is not None and not self.line_open:
            # Only now: the waiters' writes must queue behind the one that ends the line.
            self.turn.release(self)

    def _whole_lines(self, final: bool) -> list[bytes]:
        """Take from the buffer what may go to a shared file with ``--lines`` (see
        :func:`~twoway.services.dump.lines.whole_lines`); the rest stays buffered."""
        chunk, rest = whole_lines(
            self.buf,
            final=final,
            line_open=self.line_open,
            cut_line=self.cut_line,
            over_high=self.buf_size > self.settings.buffer_high,
        )
        self.cut_line = False
        self.buf, self.buf_size = ([rest] if rest else []), len(rest)
        if not chunk:
            return []
        self.line_open = chunk[-1] != 0x0A
        if self.turn is not None and self.line_open:
            self.turn.take(self)
        return [chunk]

    @property
    def wants_turn(self) -> bool:
        """Still has something to write (a waiter to wake)."""
        return not self.failed and self.fd >= 0 and not self.done.done()

    def resume(self) -> None:
        """The shared file is free again (see :class:`LineTurn`): write what waited."""
        if self.wants_turn and not self.inflight:
            self.submit()
            if not self.inflight:
                self._read_on()

    def end_line(self) -> None:
        """The turn's time is up (see :class:`LineTurn`): end the open line at the next
        write, now if none is in flight."""
        if not self.line_open or self.failed:
            return
        log.warning(
            "dump: %s: a line from %s held the file for %g s without its end: ended it with "
            "a newline",
            self.path,
            self.conn.peer,
            self.turn.hold if self.turn is not None else 0,
        )
        self.cut_line = True
        if not self.inflight:
            self.submit()

    def _written(self, fut: asyncio.Future[tuple[int, float | None]]) -> None:
        self.inflight = False
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, WriteFailed):  # part of the chunk may be in the file
                self.written += exc.written
                exc = exc.error
            self._fail(exc)
            return
        written, took = fut.result()
        self.written += written
        if took is not None:
            self.disk.fsync.observe(took)
        if self.syncing:
            self.durable = self.written
        if self.finishing:
            if self.buf_size or self.sync_due or not self.final_sent:
                self.submit()
                return
            self._complete()
            return
        if self.buf_size or self.sync_due or self.cut_line:
            self.submit()
        self._read_on()

    def _read_on(self) -> None:
        """Nothing in flight and not finishing: go on reading, by splice pump or as usual."""
        if self.finishing or self.failed or self.over_quota:
            return
        if self.want_splice:
            if not self.inflight and not self.buf_size and self.fd >= 0:
                self._start_pump()
        elif self.buf_size <= self.settings.buffer_low:
            self.conn.resume_reading()

    # -- splice pump (see twoway.net.splice) ---------------------------------------------

    def _start_pump(self) -> None:
        conn, settings = self.conn, self.settings
        limit = None if settings.max_bytes is None else settings.max_bytes - self.received
        if limit == 0:  # the quota is reached: the next byte read exceeds it
            self._no_pump()
            return
        base = conn.bytes_read

        def progress(moved: int) -> None:
            # From the pump's thread; the idle sweeper and the counters see the bytes.
            conn.bytes_read = base + moved

        try:
            pump = SpliceThread.start(
                conn.transport,
                self.fd,
                self._pumped,
                offset=self.written,
                limit=limit,
                fsync=settings.fsync,
                dirpath=self.path if self.dir_pending else None,
                progress=progress,
            )
        except (OSError, RuntimeError) as exc:  # out of descriptors or threads
            log.debug("dump: %s: no splice: %s", conn.peer, exc)
            pump = None
        if pump is None:
            self._no_pump()
            return
        self.pump = pump
        self.inflight = True

    def _no_pump(self) -> None:
        self._release_splice()
        self.conn.take_back_reading()
        self._read_on()

    def _release_splice(self) -> None:
        """Give back this sink's splice slot."""
        if self.want_splice:
            self.want_splice = False
            assert self.slots is not None
            self.slots.give_back()

    def _pumped(self, result: PumpResult) -> None:
        """Back on the loop: the pump stopped (see :class:`PumpResult`)."""
        self.pump = None
        self.inflight = False
        self._release_splice()
        self.received += result.moved
        self.written += result.moved
        self.disk.fsync.add(result.sync_times)
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
                strerror(result.error) if result.error is not None else "reset",
            )
            self.conn.abort(reason="reset by peer")
        elif reason == "eof":
            self.conn.take_back_reading()
        # eof, reset or stopped (the connection was closed here): what was read is stored.
        self.finishing = True
        self.final_sent = result.synced or self.settings.fsync == "never"
        if self.buf_size or self.sync_due or not self.final_sent:
            self.submit()
            return
        self._complete()

    def _complete(self) -> None:
        if not self.shared:
            os.close(self.fd)
        log.info("dump: %s: stored %d bytes from %s", self.path, self.written, self.conn.peer)
        if self.over_quota:
            self.conn.write(f"error: quota exceeded ({self.settings.max_bytes} bytes)\n".encode())
            self.conn.close(reason="quota exceeded")
        else:
            self.conn.close()  # the FIN that says "stored"
        self._forget()

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        self.disk.disk_errors += 1
        self.buf, self.buf_size = [], 0
        log.error("dump: %s: %s (wrote %d bytes)", self.path, strerror(exc), self.written)
        self.conn.abort(reason="disk error")  # an RST: never let the client think it is stored
        if not self.shared:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self._forget()

    def _forget(self) -> None:
        self._release_splice()
        if self.turn is not None:
            self.turn.release(self)
        self.forget(self)
        if not self.done.done():
            self.done.set_result(None)

"""The ``dump`` service: each connection's bytes to its own file, or all to one file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from twoway.errors import ConfigError, describe_oserror
from twoway.net.service import Service
from twoway.net.splice import splice_supported
from twoway.services.dump.disk import strerror, timed_fsync
from twoway.services.dump.shared import (
    FSYNC_POLICIES,
    DiskFigures,
    FsyncPolicy,
    SinkSettings,
    SpliceSlots,
)
from twoway.services.dump.sink import Sink
from twoway.services.dump.turn import LineTurn

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.sansio.buckets import Buckets

__all__ = ["DumpService"]

log = logging.getLogger("twoway.dump")


class DumpService(Service):
    """Appends each connection's bytes to its own file in ``directory`` (or all to ``file``).

    ``fsync``: ``never``; ``interval`` (at least once a second); ``close`` (before the FIN,
    the default); ``always`` (after every write, each write gathering what arrived meanwhile).
    ``max_bytes`` caps each connection: the file keeps exactly the first N bytes and the
    client reads ``error: quota exceeded (N bytes)``. With ``file``, connections interleave
    by whole received chunks, or by whole lines with ``lines=True``: a connection's last line
    without its newline is closed with one, a quota cut keeps only the whole lines before it,
    and a line longer than ``buffer_high`` is written in pieces, the others' writes waiting
    until its end, for at most ``line_hold`` seconds (then it is ended with a newline where it
    stands: see :class:`~twoway.services.dump.turn.LineTurn`).

    ``splice`` (Linux): a connection with its own file is moved into it by ``splice(2)`` in
    a thread of its own, up to ``splice_max`` at once (the rest are read as usual): no copy
    in user space, and writeback starts while the upload runs (see
    :mod:`twoway.net.splice`). The promise is the same either way.
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
        line_hold: float = 10.0,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync = {fsync!r}: not one of {', '.join(FSYNC_POLICIES)}")
        self.directory = Path(directory)
        self.file = Path(file) if file is not None else None
        self.settings = SinkSettings(
            directory=self.directory,
            fsync=fsync,
            max_bytes=max_bytes,
            buffer_high=buffer_high,
            buffer_low=buffer_low,
            lines=lines,
        )
        self.splice = splice and splice_supported()
        #: Uploads spliced now, of at most ``splice_max``.
        self.splice_slots = SpliceSlots(splice_max)
        # With --lines, a line written in pieces keeps the shared file for at most
        # line_hold seconds: long enough for a line of hundreds of MiB at network speed,
        # short enough that a stalled client does not stall every other upload for long.
        self._turn = LineTurn(line_hold) if lines and self.file is not None else None
        #: The uploads in progress.
        self.sinks: set[Sink] = set()
        #: Bytes written to disk by the uploads that ended (the open ones count their own).
        self.bytes_stored_done = 0
        #: fsync timings and disk errors, counted by the sinks (for the metrics).
        self.disk = DiskFigures()
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

    @property
    def fsync(self) -> FsyncPolicy:
        """The sync policy (see the class docstring)."""
        return self.settings.fsync

    @property
    def max_bytes(self) -> int | None:
        """The per-connection quota in bytes; ``None``: none."""
        return self.settings.max_bytes

    def _sink(self, conn: Conn, fd: int, path: Path) -> Sink:
        shared = self.file is not None
        return Sink(
            conn,
            fd,
            path,
            self.settings,
            shared=shared,
            creator=self._pool,
            writer=self._shared_pool if shared else self._pool,
            slots=self.splice_slots if self.splice else None,
            forget=self._forget,
            turn=self._turn,
            disk=self.disk,
        )

    def _forget(self, sink: Sink) -> None:
        self.sinks.discard(sink)
        self.bytes_stored_done += sink.written

    def figures(self) -> dict[str, float]:
        """Uploads in progress, bytes stored and disk errors (see :meth:`Service.figures`)."""
        stored = self.bytes_stored_done + sum(sink.written for sink in self.sinks)
        return {
            "dump_uploads": len(self.sinks),
            "dump_bytes_stored_total": stored,
            "dump_disk_errors_total": self.disk.disk_errors,
        }

    def histograms(self) -> dict[str, Buckets]:
        """How long each fsync took (see :meth:`Service.histograms`)."""
        return {"dump_fsync_seconds": self.disk.fsync}

    @staticmethod
    def _base_name(conn: Conn) -> str:
        """``<UTC time>_<ip>_<port>``: when and from where (the connection time)."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        host, port = "unknown", 0
        if isinstance(conn.remote_address, tuple):
            from twoway.net.address import normalize_ip

            host, port = normalize_ip(str(conn.remote_address[0])), conn.remote_address[1]
        return f"{stamp}_{host.replace(':', '-')}_{port}"

    def on_connect(self, conn: Conn) -> None:
        if self._shared_fd is not None and self.file is not None:
            sink = self._sink(conn, self._shared_fd, self.file)
        else:
            base = self._base_name(conn)
            sink = self._sink(conn, -1, self.directory / f"{base}.dump")
            sink.open(base)  # completes in a later callback, never inside this one
        conn.state = sink
        self.sinks.add(sink)
        if self.fsync == "interval" and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(1.0, self._sync_tick)

    def progress(self, conn: Conn) -> tuple[int, None] | None:
        """``(bytes received, None)`` while ``conn`` is sending (the size is not known), else
        None (for the bars of :mod:`twoway.transfers`)."""
        sink: Sink | None = conn.state
        if sink is None or sink.finishing or sink.failed:
            return None
        return conn.bytes_read, None

    def on_data(self, conn: Conn, data: bytes) -> None:
        sink: Sink | None = conn.state
        if sink is not None:
            sink.feed(data)

    def on_eof(self, conn: Conn) -> None:
        sink: Sink | None = conn.state
        if sink is None:
            conn.close()
            return
        sink.finish()

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        sink: Sink | None = conn.state
        if sink is None or sink.finishing or sink.failed:
            return
        # Reset by the client or aborted at the end of a shutdown: what was read still goes
        # to the file (nothing already read is lost), but no FIN can say so.
        log.info(
            "dump: %s: connection from %s ended early after %d bytes",
            sink.path,
            conn.peer,
            sink.received + (sink.pump.moved if sink.pump is not None else 0),
        )
        sink.finish()

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        """Let uploads finish within the grace period; the server aborts the rest."""

    def on_idle(self, conn: Conn) -> None:
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
                try:
                    took = await asyncio.get_running_loop().run_in_executor(
                        self._shared_pool, timed_fsync, self._shared_fd
                    )
                    self.disk.fsync.observe(took)
                except OSError as exc:
                    self.disk.disk_errors += 1
                    log.error("dump: %s: %s (the last sync)", self.file, strerror(exc))
            os.close(self._shared_fd)
            self._shared_fd = None
        self._pool.shutdown(wait=False)
        self._shared_pool.shutdown(wait=False)

    def _sync_tick(self) -> None:
        for sink in list(self.sinks):
            if sink.pump is not None:
                continue  # a pump syncs on its own clock
            # With --lines, a line's start held back until its end arrives cannot be synced
            # yet: only what was written counts (else a held line meant a sync a second).
            unsynced = sink.written if sink.lines else sink.received
            if not sink.failed and unsynced > sink.durable:
                sink.sync_due = True
                if not sink.inflight:
                    sink.submit()
        self._timer = (
            asyncio.get_running_loop().call_later(1.0, self._sync_tick) if self.sinks else None
        )

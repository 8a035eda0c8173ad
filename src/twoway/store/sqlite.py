"""The chat's durable store: room history and records in one SQLite database.

The standard library's :mod:`sqlite3`, in WAL mode, with the database locked for this process
alone (``locking_mode=EXCLUSIVE``: a second server on the same ``--data-dir`` is refused at
start-up instead of interleaving its numbers with ours).

**Threads.** :meth:`SqliteStore.open` and the loading methods run at start-up, on the caller's
thread, before the event loop serves anyone. From then on one *writer thread* owns the
connection, and the event loop never waits for it: :meth:`journal`, :meth:`put` and
:meth:`delete` append to a list the two threads share
(:class:`~twoway.store.linequeue.LineQueue`: one ``append`` per line, no lock, the writer
woken once per commit). The writer takes everything in the list at once, writes it in one
transaction and commits — *group commit*. Commits are at least :data:`COMMIT_INTERVAL`
apart, so a line acknowledged (delivered to the room) is in the database file within about
that long after it was said, and a server saying thousands of lines a second commits at most
1 / COMMIT_INTERVAL times a second (the disk write rate is bounded by the lines, not by their
count). ``synchronous=NORMAL`` in WAL mode: a committed transaction survives the process
being killed (``kill -9``: what is on disk is an exact prefix of what was said, records
included: one list keeps their order); a power cut may lose the last commits, never corrupt
the file.

**Rows.** A room's lines are stored as *chunks*: one row per room per commit holding that
commit's run of consecutive lines, joined by newlines (``first`` and ``last`` number its
ends; a chat line never holds a newline: the chat escapes control characters, and so does
the writer if one ever came). A busy room costs one row per commit, not one per line, and
``--keep`` deletes whole chunks (at least a tenth of the count at once): the store holds a
room's newest ``--keep`` lines and at most that tenth plus one commit's lines more, which
loading leaves out.

**Failures.** At start-up a corrupt, locked, read-only or full database raises
:class:`~twoway.errors.ServiceError` with one line (the server does not start). At run time
the writer reports the first failure once through ``on_failure`` and stops writing: the chat
goes on in memory (its history will not survive a restart), it never crashes.

**Schema.** ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` takes a
database from each version to the next, in one transaction each. A database from a newer
twoway (a version above the last known) is refused.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twoway.errors import ServiceError
from twoway.sansio.chat.keep import KeepPolicy
from twoway.sansio.chat.state import Journal
from twoway.store.linequeue import LineQueue, Run
from twoway.store.records import JSONValue

__all__ = ["COMMIT_INTERVAL", "MIGRATIONS", "SCHEMA_VERSION", "SavedRoom", "SqliteStore"]

#: The least time between two commits, in seconds: a said line is on disk within about this
#: long (plus the time of the write itself), and a busy server commits at most 20 times a
#: second, whatever its rate of lines.
COMMIT_INTERVAL = 0.05
#: Bytes of lines queued for the writer at most (as much as the default history budget): a
#: chat that says more than the disk takes (a flood of long lines) would otherwise pile them
#: up in memory. Past it, lines are not written (counted, one error line); the disk then has
#: a gap, and what is loaded at the next start is the newest unbroken run. (Measured every
#: 16 lines: it may be passed by 16 lines.)
MAX_BACKLOG = 4 * 1024 * 1024
#: How long start-up waits for a lock another process holds before refusing (seconds).
_BUSY_TIMEOUT_MS = 500
#: How often the writer deletes lines older than ``--keep``'s age (seconds).
_AGE_SWEEP = 60.0
#: JSON without the spaces.
_TIGHT = (",", ":")


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last INTEGER NOT NULL)"
    )
    db.execute(
        "CREATE TABLE lines (room TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, "
        "text TEXT NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID"
    )
    # No index on ts: it would double what each commit writes, for a sweep once a minute.
    db.execute(
        "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
        "PRIMARY KEY (kind, key)) WITHOUT ROWID"
    )


def _v2(db: sqlite3.Connection) -> None:
    # Lines in chunks, one row per room per commit (see the module docstring). A rowid table:
    # a chunk may be far bigger than a page. Each line of version 1 becomes a chunk of one
    # (escaped as the chat escapes it: a newline, which the chat never stores, reads ^J).
    db.execute(
        "CREATE TABLE chunks (room TEXT NOT NULL, first INTEGER NOT NULL, "
        "last INTEGER NOT NULL, ts REAL NOT NULL, texts TEXT NOT NULL, "
        "PRIMARY KEY (room, first))"
    )
    db.execute(
        "INSERT INTO chunks SELECT room, seq, seq, ts, replace(text, char(10), '^J') "
        "FROM lines ORDER BY room, seq"
    )
    db.execute("DROP TABLE lines")


#: Schema migrations: ``MIGRATIONS[n]`` takes a database at version ``n`` to ``n + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _v1, 1: _v2}
#: The version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class SavedRoom:
    """A room as the store has it: its numbering and its newest lines (oldest first,
    numbered up to ``last``)."""

    name: str
    epoch: str
    last: int
    lines: list[str]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return text + " (does the directory exist and may this user write there?)"
    if "locked" in text:
        return text + " (is another twoway server using this --data-dir?)"
    if "not a database" in text or "malformed" in text:
        return text + " (move the file away to start afresh, or use --ephemeral)"
    if "readonly" in text:
        return text + " (the file or its directory is read-only)"
    return text


class SqliteStore:
    """Room history and :class:`~twoway.store.records.Records` in the SQLite database
    ``path``. Open it with :meth:`open`; :meth:`start` starts the writer; :meth:`close`
    writes what is queued and stops it (idempotent)."""

    def __init__(self, db: sqlite3.Connection, path: Path, keep: KeepPolicy) -> None:
        self.path = path
        self.keep = keep
        #: The first failure at run time, once the writer stopped writing (None: healthy).
        self.failed: str | None = None
        #: Lines and records written, and commits made (for the figures and the tests).
        self.lines_written = 0
        self.commits = 0
        #: When the first and the last commit were made (monotonic seconds; 0: none yet).
        self.first_commit = 0.0
        self.last_commit = 0.0
        self.on_failure: Callable[[str], None] = lambda message: None
        self._db = db
        # Wakes the writer (True) or stops it (None).
        self._wake: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        self._lines = LineQueue(lambda: self._wake.put(True), self._behind, MAX_BACKLOG)
        #: Line ``seq`` of ``room`` in numbering ``epoch`` (see ChatCore.set_journal): kept
        #: for the writer (the event loop's hot path: the queue's own method, no call between).
        self.journal: Journal = self._lines.journal
        self._thread: threading.Thread | None = None
        self._epochs: dict[str, str] = {}
        # The oldest line kept of each room after its last trim (see _trim).
        self._trimmed: dict[str, int] = {}
        self._closed = False

    # -- start-up (caller's thread) --------------------------------------------------------

    @classmethod
    def open(cls, path: Path, keep: KeepPolicy) -> SqliteStore:
        """Open (creating it if needed) the database at ``path``, migrate it to
        :data:`SCHEMA_VERSION` and check it can be written. Raises
        :class:`~twoway.errors.ServiceError` with one line if it cannot be used."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"history store {path.parent}: {exc.strerror or exc}") from None
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=0
            )
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
            db.execute("PRAGMA synchronous = NORMAL")
            cls._migrate(db, path)
            # Take the write lock now: a locked or read-only database is refused at start-up.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({ok})")
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise ServiceError(f"history store {path}: {_describe(exc)}") from None
        return cls(db, path, keep)

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: Path) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ServiceError(
                f"history store {path}: schema version {version} is newer than this twoway "
                f"knows ({SCHEMA_VERSION}): upgrade twoway, or use another --data-dir"
            )
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[version](db)
                db.execute(f"PRAGMA user_version = {version + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            version += 1

    def load_rooms(self, tail: int) -> list[SavedRoom]:
        """Every room the store knows, with its newest ``tail`` lines (a run of consecutive
        numbers ending at the room's last; no more than ``--keep`` keeps). Start-up only."""
        limit = tail if self.keep.lines is None else min(tail, self.keep.lines)
        out = []
        try:
            rows = self._db.execute("SELECT name, epoch, last FROM rooms ORDER BY name")
            for name, epoch, last in rows.fetchall():
                self._epochs[name] = epoch
                chunks = self._db.execute(
                    "SELECT first, texts FROM chunks WHERE room = ? ORDER BY first DESC",
                    (name,),
                )
                # Newest first, only the run that ends at ``last`` with no gap: the numbers
                # must hold.
                run: list[str] = []
                expected = last
                for first, texts in chunks:
                    if len(run) >= limit:
                        break
                    got = texts.split("\n")
                    if first + len(got) - 1 < expected:
                        break
                    run.extend(reversed(got[: expected - first + 1]))
                    expected = first - 1
                chunks.close()
                del run[limit:]
                run.reverse()
                out.append(SavedRoom(name, epoch, last, run))
        except sqlite3.Error as exc:
            raise ServiceError(f"history store {self.path}: {_describe(exc)}") from None
        return out

    def load(self, kind: str) -> dict[str, JSONValue]:
        """Every record of ``kind`` (:class:`~twoway.store.records.Records`). Start-up only
        (before :meth:`start`): it reads on the caller's thread."""
        try:
            rows = self._db.execute("SELECT key, value FROM records WHERE kind = ?", (kind,))
            return {key: json.loads(value) for key, value in rows.fetchall()}
        except sqlite3.Error as exc:
            raise ServiceError(f"history store {self.path}: {_describe(exc)}") from None

    # -- the event loop: append only -------------------------------------------------------

    @property
    def lines_dropped(self) -> int:
        """Lines not written because the writer was too far behind (see MAX_BACKLOG)."""
        return self._lines.lines_dropped

    def put(self, kind: str, key: str, value: JSONValue) -> None:
        """Create or replace one record (written by the writer thread)."""
        self._lines.record(kind, key, json.dumps(value, separators=_TIGHT))

    def delete(self, kind: str, key: str) -> None:
        """Remove one record, if it is there (written by the writer thread)."""
        self._lines.record(kind, key, "")

    def _behind(self) -> None:
        self.on_failure(
            f"history store {self.path}: the disk cannot keep up with the chat "
            f"(over {MAX_BACKLOG >> 20} MiB queued): lines said now are not written"
        )

    # -- the writer thread -----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="twoway-store", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer and close the database (idempotent). Call
        it once nothing is said any more (it may run on another thread than the loop)."""
        if self._closed:
            return
        self._closed = True
        self._wake.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        elif self.failed is None:
            runs, records = self._lines.take()
            if runs or records:
                self._write(runs, records)
        if self._thread is None or not self._thread.is_alive():
            self._db.close()

    def describe_writes(self) -> str:
        """What the writer did, for the log at exit: lines, commits, the time between the
        first and the last commit, and what the process wrote to disk in all (Linux's
        ``/proc/self/io`` ``write_bytes``: the figure the benchmark reads)."""
        span = self.last_commit - self.first_commit
        text = f"{self.lines_written} lines in {self.commits} commits over {span:.1f} s"
        try:
            with open("/proc/self/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
            text += f"; the process wrote {int(io['write_bytes'])} bytes to disk"
        except (OSError, KeyError, ValueError):
            pass
        if self.lines_dropped:
            text += f"; {self.lines_dropped} lines not written (the disk fell behind)"
        return text

    def _run(self) -> None:
        wake = self._wake
        last_commit = 0.0
        last_sweep = time.monotonic()
        stopping = False
        while not stopping:
            signal = wake.get()
            wait = last_commit + COMMIT_INTERVAL - time.monotonic()
            if wait > 0 and signal is not None:
                time.sleep(wait)  # gather what comes meanwhile: one commit for all of it
            # Every wake-up so far is answered by the take below (a later one by the next).
            while signal is not None:
                try:
                    signal = wake.get_nowait()
                except queue.Empty:
                    break
            stopping = signal is None
            runs, records = self._lines.take()
            if self.failed is not None:
                continue  # in memory only from now on: drop what is queued
            now = time.monotonic()
            sweep = self.keep.age is not None and now - last_sweep > _AGE_SWEEP
            if runs or records or sweep:
                self._write(runs, records, sweep=sweep)
                last_commit = time.monotonic()
                if sweep:
                    last_sweep = now
        self._db.close()

    def _write(
        self, runs: list[Run], records: list[tuple[str, str, str]], *, sweep: bool = False
    ) -> None:
        """One transaction for ``runs`` and ``records``; on failure, report once and stop
        writing."""
        db = self._db
        lasts: dict[str, int] = {}
        written = 0
        ts = time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            # Records and lines are in tables of their own: within one transaction their
            # order does not matter, only each one's own.
            for kind, key, value in records:
                if value:
                    db.execute("INSERT OR REPLACE INTO records VALUES (?,?,?)", (kind, key, value))
                else:
                    db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
            for room, epoch, first, count, chunk in runs:
                if self._epochs.get(room) != epoch:
                    # A new numbering: the old lines belong to a history that was lost.
                    db.execute("DELETE FROM chunks WHERE room = ?", (room,))
                    db.execute(
                        "INSERT OR REPLACE INTO rooms VALUES (?,?,?)", (room, epoch, first - 1)
                    )
                    self._epochs[room] = epoch
                    self._trimmed.pop(room, None)
                last = first + count - 1
                db.execute(
                    "INSERT OR REPLACE INTO chunks VALUES (?,?,?,?,?)",
                    (room, first, last, ts, chunk),
                )
                lasts[room] = last
                written += count
            for room, last in lasts.items():
                db.execute("UPDATE rooms SET last = ? WHERE name = ?", (last, room))
                self._trim(room, last)
            oldest = self.keep.oldest_time(time.time())
            if sweep and oldest is not None:
                db.execute("DELETE FROM chunks WHERE ts < ?", (oldest,))
            db.execute("COMMIT")
            self.lines_written += written
            self.commits += 1
            self.last_commit = time.monotonic()
            if not self.first_commit:
                self.first_commit = self.last_commit
        except sqlite3.Error as exc:
            self.failed = _describe(exc)
            self._lines.closed = True
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.on_failure(
                f"history store {self.path}: {self.failed}: chat goes on in memory, history "
                "said from now on will not survive a restart"
            )

    def _trim(self, room: str, last: int) -> None:
        """Delete the chunks of ``room`` wholly older than ``--keep``'s count, once the
        oldest line kept moved by a tenth of the count since the last trim (since 0 in this
        run: a room with a long past is trimmed at its first commit)."""
        count = self.keep.lines
        if count is None or last <= count:
            return
        oldest = self.keep.oldest_seq(last)
        if oldest - self._trimmed.get(room, 0) < max(1, count // 10):
            return
        self._trimmed[room] = oldest
        self._db.execute(
            "DELETE FROM chunks WHERE room = ? AND first < ? AND last < ?", (room, oldest, oldest)
        )

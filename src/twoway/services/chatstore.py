"""Where chat keeps what it remembers: the choice of store, made once at start-up.

* ``--ephemeral`` — memory only, for this run (tests and benchmarks where persistence is not
  the point): ``history in memory (--ephemeral)``;
* ``--bus redis://...`` — the servers share history through the Redis stream, every server
  sees it, and moderation's records in Redis hashes beside it (:mod:`twoway.bus.records`);
  no file is written: ``history in redis``;
* otherwise — SQLite in ``--data-dir`` (default ``$XDG_DATA_HOME/twoway``, that is
  ``~/.local/share/twoway``): ``history in /path/chat.db``.

:func:`open_memory` opens it (a database that cannot be used is a
:class:`~twoway.errors.ServiceError`: the server does not start) and loads what it holds into
the chat core; the ready line says which store is in use.

**Resume sessions** outlive a restart too. With a bus they are in Redis
(:class:`~twoway.bus.sessions.RedisSessions`: any server takes a ticket, once). With SQLite
each departed client's ticket is a record of kind ``"session"`` (:class:`RecordSessions`,
keyed by the token's hash: the file holds no usable token), written when its connection is
lost — a graceful stop ends every connection, so it writes every live client's session —
and removed when it is claimed or expires; :func:`load_sessions` gives them back to the core
at the next start, with what is left of their window. ``kill -9`` keeps the tickets already
written. With ``--ephemeral`` they live in memory, as the history does.

**Topics** are records of kind ``"topic"`` keyed by room name (``{"topic", "by", "at"}``:
the text, who set it and when, wall clock), in SQLite or, with a bus, in Redis where every
server reads them at start-up. A topic set on one server reaches the others on the bus as
before; only its server writes it. :func:`load_topics` gives them to the core at start.
With ``--ephemeral`` a topic goes with its room, as it always did.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twoway.config import Settings
from twoway.errors import ConfigError
from twoway.sansio.chat import ChatCore
from twoway.sansio.chat.keep import KeepPolicy, parse_keep
from twoway.sansio.chat.resume import Ticket, ticket_from_record, ticket_record
from twoway.store import MemoryRecords, Records
from twoway.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from twoway.bus.sessions import RedisSessions

__all__ = [
    "DB_NAME",
    "SESSION_KIND",
    "TOPIC_KIND",
    "ChatMemory",
    "RecordSessions",
    "RecordTopics",
    "default_data_dir",
    "keep_policy",
    "load_sessions",
    "load_topics",
    "open_memory",
]

#: The records kind of resume sessions.
SESSION_KIND = "session"

#: The records kind of room topics (keyed by room name).
TOPIC_KIND = "topic"

#: The database file in the data directory.
DB_NAME = "chat.db"


@dataclass(slots=True)
class ChatMemory:
    """The store chosen: ``store`` (None: nothing on disk), the records moderation uses, the
    words for the ready line, and the shared resume sessions (with a bus)."""

    store: SqliteStore | None
    records: Records
    describe: str
    #: Resume tickets every server shares (with a bus), None otherwise.
    sessions: RedisSessions | None = None


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/twoway``, or ``~/.local/share/twoway`` (the XDG default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "twoway"


def keep_policy(settings: Settings) -> KeepPolicy:
    """``--keep`` parsed; a bad value is a :class:`~twoway.errors.ConfigError`."""
    try:
        return parse_keep(settings.keep)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class RecordSessions:
    """A :class:`~twoway.sansio.chat.resume.SessionSink` that keeps resume tickets as
    :class:`~twoway.store.records.Records` of kind :data:`SESSION_KIND` (a write is queued:
    the event loop never waits). ``wall`` is the wall clock (a ticket is saved when it is
    made, so its time is now)."""

    def __init__(self, records: Records, wall: Callable[[], float] = time.time) -> None:
        self.records = records
        self.wall = wall

    def saved(self, ticket: Ticket) -> None:
        """Write ``ticket`` (made now)."""
        self.records.put(SESSION_KIND, ticket.key, ticket_record(ticket, self.wall()))

    def dropped(self, key: str) -> None:
        """Remove the ticket ``key``."""
        self.records.delete(SESSION_KIND, key)


class RecordTopics:
    """A :data:`~twoway.sansio.chat.state.TopicSink` that keeps room topics as
    :class:`~twoway.store.records.Records` of kind :data:`TOPIC_KIND` (queued writes)."""

    def __init__(self, records: Records, wall: Callable[[], float] = time.time) -> None:
        self.records = records
        self.wall = wall

    def __call__(self, room: str, topic: str | None, nick: str) -> None:
        """``nick`` set the topic of ``room`` now (None: the topic is forgotten)."""
        if topic is None:
            self.records.delete(TOPIC_KIND, room)
        else:
            self.records.put(TOPIC_KIND, room, {"topic": topic, "by": nick, "at": self.wall()})


def load_topics(records: Records, core: ChatCore) -> int:
    """Give ``core`` the topics ``records`` kept (start-up) and keep the topics it sets from
    now on; a record that is not a topic is ignored. Returns how many were restored."""
    topics: list[tuple[str, str]] = []
    for room, value in records.load(TOPIC_KIND).items():
        text = value.get("topic") if isinstance(value, dict) else None
        if isinstance(text, str):
            topics.append((room, text))
    restored = core.restore_topics(topics)
    core.set_topics(RecordTopics(records))
    return restored


def load_sessions(records: Records, core: ChatCore, window: float, wall: float) -> int:
    """Give ``core`` the resume tickets ``records`` kept (start-up), at wall-clock time
    ``wall``: those still within ``window``; the others, and records that are not tickets,
    are removed. Returns how many were restored."""
    tickets: list[Ticket] = []
    for key, value in records.load(SESSION_KIND).items():
        ticket = ticket_from_record(key, value, wall)
        if ticket is None or -ticket.left_at > window:
            records.delete(SESSION_KIND, key)
            continue
        tickets.append(ticket)
    return core.restore_sessions(tickets)


def open_memory(settings: Settings, core: ChatCore, tail: int) -> ChatMemory:
    """Open the store ``settings`` choose, load its rooms (their newest ``tail`` lines) into
    ``core`` and journal the core's lines to it. Raises ConfigError / ServiceError."""
    keep = keep_policy(settings)
    if settings.ephemeral:
        return ChatMemory(None, MemoryRecords(), "history in memory (--ephemeral)")
    if settings.bus != "local":
        # Accounts and bans where every server sees them and they outlive a restart; resume
        # tickets too, taken once by whichever server the client comes back to.
        from twoway.bus.records import RedisRecords
        from twoway.bus.sessions import RedisSessions

        sessions = RedisSessions(settings.bus, settings.resume_window)
        core.set_sessions(sessions, shared=True)
        records = RedisRecords(settings.bus)
        load_topics(records, core)
        return ChatMemory(None, records, "history in redis", sessions)
    data_dir = Path(settings.data_dir).expanduser() if settings.data_dir else default_data_dir()
    store = SqliteStore.open(data_dir / DB_NAME, keep)
    for room in store.load_rooms(tail):
        core.restore(room.name, room.epoch, room.last, room.lines)
    core.set_journal(store.journal)
    load_topics(store, core)
    restored = load_sessions(store, core, settings.resume_window, time.time())
    core.set_sessions(RecordSessions(store))
    describe = f"history in {store.path} (keep {keep.describe()})"
    if restored:  # (said in the ready line: logging is not set up yet)
        describe += f", {restored} resume session(s) kept from the last run"
    return ChatMemory(store, store, describe)

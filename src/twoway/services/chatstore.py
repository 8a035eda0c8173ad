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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twoway.config import Settings
from twoway.errors import ConfigError
from twoway.sansio.chat import ChatCore
from twoway.sansio.chat.keep import KeepPolicy, parse_keep
from twoway.store import MemoryRecords, Records
from twoway.store.sqlite import SqliteStore

__all__ = ["DB_NAME", "ChatMemory", "default_data_dir", "keep_policy", "open_memory"]

#: The database file in the data directory.
DB_NAME = "chat.db"


@dataclass(slots=True)
class ChatMemory:
    """The store chosen: ``store`` (None: nothing on disk), the records moderation uses, and
    the words for the ready line."""

    store: SqliteStore | None
    records: Records
    describe: str


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


def open_memory(settings: Settings, core: ChatCore, tail: int) -> ChatMemory:
    """Open the store ``settings`` choose, load its rooms (their newest ``tail`` lines) into
    ``core`` and journal the core's lines to it. Raises ConfigError / ServiceError."""
    keep = keep_policy(settings)
    if settings.ephemeral:
        return ChatMemory(None, MemoryRecords(), "history in memory (--ephemeral)")
    if settings.bus != "local":
        # Accounts and bans where every server sees them and they outlive a restart.
        from twoway.bus.records import RedisRecords

        return ChatMemory(None, RedisRecords(settings.bus), "history in redis")
    data_dir = Path(settings.data_dir).expanduser() if settings.data_dir else default_data_dir()
    store = SqliteStore.open(data_dir / DB_NAME, keep)
    for room in store.load_rooms(tail):
        core.restore(room.name, room.epoch, room.last, room.lines)
    core.set_journal(store.journal)
    return ChatMemory(store, store, f"history in {store.path} (keep {keep.describe()})")

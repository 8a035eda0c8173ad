"""``SqliteStore`` on its own: records and history written by the writer thread, read back
after a reopen; the schema version; group commit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from twoway.errors import ServiceError
from twoway.sansio.chat.keep import KeepPolicy
from twoway.store import Records
from twoway.store.sqlite import SCHEMA_VERSION, SqliteStore


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(100))
    records: Records = store  # the contract moderation codes against
    assert records.load("ban") == {}
    store.start()
    records.put("ban", "mallory", {"until": 123, "by": "alice"})
    records.put("ban", "eve", None)
    records.put("account", "alice", ["x", 1, 2.5, True])
    records.delete("ban", "eve")
    records.delete("ban", "nobody")  # not an error
    store.close()
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(100))
    try:
        assert again.load("ban") == {"mallory": {"until": 123, "by": "alice"}}
        assert again.load("account") == {"alice": ["x", 1, 2.5, True]}
    finally:
        again.close()


def test_lines_are_grouped_into_few_commits_and_read_back(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(50))
    store.start()
    for seq in range(1, 2001):
        store.journal("#lobby", "e1", seq, f"a: {seq}")
    store.close()
    assert store.lines_written == 2000
    assert store.commits < 50  # grouped, not one commit per line
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(50))
    try:
        (room,) = again.load_rooms(tail=20)
        assert (room.name, room.epoch, room.last) == ("#lobby", "e1", 2000)
        assert room.lines == [f"a: {n}" for n in range(1981, 2001)]
        assert len(again.load_rooms(tail=1000)[0].lines) == 50  # --keep 50
    finally:
        again.close()


def test_a_new_epoch_replaces_the_old_lines(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    store.start()
    for seq in range(1, 6):
        store.journal("#dev", "old", seq, f"o {seq}")
    store.journal("#dev", "new", 1, "n 1")
    store.close()
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    try:
        (room,) = again.load_rooms(tail=100)
        assert (room.epoch, room.last, room.lines) == ("new", 1, ["n 1"])
    finally:
        again.close()


def test_schema_is_versioned(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None)).close()
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ServiceError, match="newer than this twoway knows"):
        SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))

"""``SqliteStore`` on its own: records and history written by the writer thread, read back
after a reopen; the schema version; group commit."""

from __future__ import annotations

import sqlite3
import time
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


def test_a_version_1_database_is_migrated_with_its_lines(tmp_path: Path) -> None:
    from twoway.store.sqlite import MIGRATIONS

    db = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    MIGRATIONS[0](db)  # version 1: one row per line
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO rooms VALUES ('#dev', 'e1', 4)")
    db.executemany(
        "INSERT INTO lines VALUES ('#dev', ?, 0, ?)",
        [(2, "two"), (3, "three\nlines"), (4, "four")],
    )
    db.execute("INSERT INTO records VALUES ('ban', 'eve', 'null')")
    db.close()
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    try:
        (room,) = store.load_rooms(tail=100)
        assert (room.name, room.epoch, room.last) == ("#dev", "e1", 4)
        assert room.lines == ["two", "three^Jlines", "four"]  # as the chat shows it
        assert store.load("ban") == {"eve": None}
        store.start()
        store.journal("#dev", "e1", 5, "five")
    finally:
        store.close()
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    try:
        assert again.load_rooms(tail=100)[0].lines == ["two", "three^Jlines", "four", "five"]
    finally:
        again.close()
    db = sqlite3.connect(tmp_path / "chat.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "lines" not in tables and "chunks" in tables
    db.close()


def test_rooms_said_in_turn_numberings_and_records_read_back(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    store.start()
    store.journal("#a", "e1", 1, "a1")
    store.journal("#b", "f1", 1, "b1")
    store.put("topic", "#a", {"topic": "hi"})
    store.journal("#a", "e1", 2, "a2")
    store.journal("#b", "f1", 2, "b2")
    store.journal("#b", "f2", 1, "new b1")  # #b's history was lost: a new numbering
    store.delete("topic", "#a")
    store.put("topic", "#b", {"topic": "yo"})
    store.close()
    assert store.lines_written == 5
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    try:
        rooms = {r.name: r for r in again.load_rooms(tail=100)}
        assert (rooms["#a"].epoch, rooms["#a"].last, rooms["#a"].lines) == ("e1", 2, ["a1", "a2"])
        assert (rooms["#b"].epoch, rooms["#b"].last, rooms["#b"].lines) == ("f2", 1, ["new b1"])
        assert again.load("topic") == {"#b": {"topic": "yo"}}
    finally:
        again.close()


def test_keep_trims_whole_chunks_and_loading_keeps_no_more_than_keep(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(100))
    store.start()
    for seq in range(1, 1001):
        store.journal("#a", "e1", seq, f"a {seq}")
        if seq % 37 == 0:  # several commits, chunks of many sizes
            time.sleep(0.06)
    store.close()
    assert store.commits > 10
    db = sqlite3.connect(tmp_path / "chat.db")
    lo, hi = db.execute("SELECT min(first), max(last) FROM chunks").fetchone()
    db.close()
    assert hi == 1000
    assert lo <= 901  # every line --keep keeps is there...
    assert 1000 - lo < 100 + 10 + 37 * 3  # ...and little more (a tenth, and a chunk or so)
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(100))
    try:
        (room,) = again.load_rooms(tail=1000)
        assert room.lines == [f"a {n}" for n in range(901, 1001)]
    finally:
        again.close()


def test_lines_said_while_the_writer_writes_are_all_written_in_order(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    store.start()
    total = 100_000
    for seq in range(1, total + 1):
        store.journal("#a", "e1", seq, f"n {seq}")
        if seq % 5000 == 0:
            time.sleep(0.01)  # the writer commits meanwhile, and again while we say more
    store.close()
    assert store.lines_written == total
    assert store.commits > 3
    again = SqliteStore.open(tmp_path / "chat.db", KeepPolicy(None))
    try:
        (room,) = again.load_rooms(tail=total)
        assert room.last == total
        assert room.lines == [f"n {n}" for n in range(1, total + 1)]
    finally:
        again.close()

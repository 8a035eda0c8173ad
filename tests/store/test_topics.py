"""Room topics survive a restart: with the SQLite store a topic set before a SIGTERM is shown
to a client joining after it (on join and by ``/topic``), a room that emptied keeps its
topic, the owner's topic lock still holds, and ``--ephemeral`` forgets topics as before."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from services.chat.chatkit import ChatServer, Client


def start(data: Path) -> ChatServer:
    return ChatServer(("--flood-rate", "0", "--data-dir", str(data)), loop="asyncio")


def client(srv: ChatServer, name: str) -> Client:
    c = Client(srv.port, name=name)
    c.welcome()
    return c


def test_topics_survive_a_sigterm_restart(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with client(srv, "a") as a:
            a.send("/nick alice")
            a.expect("now known as alice")
            a.send("/topic welcome, be kind")
            a.expect("*** alice set the topic: welcome, be kind")
            a.send("/join dev")
            a.expect("*** you are in #dev")
            a.send("/topic release on friday")
            a.expect("set the topic: release on friday")
            # #dev empties before the restart: its topic is kept all the same, and shown
            # when the room is created again in this run.
            a.send("/join ops")
            a.expect("*** you are in #ops")
            a.send("/join dev")
            a.expect("*** you are in #dev")
            assert a.expect("*** topic:") == "*** topic: release on friday"
    finally:
        assert srv.stop() == 0
    srv = start(tmp_path)
    try:
        with client(srv, "b") as b:
            assert "*** topic: welcome, be kind" in b.history  # the lobby, on welcome
            b.send("/topic")
            assert b.expect("*** topic for") == "*** topic for #lobby: welcome, be kind"
            b.send("/join dev")
            b.expect("*** you are in #dev")
            assert b.expect("*** topic:") == "*** topic: release on friday"
            b.send("/topic")
            assert b.expect("*** topic for") == "*** topic for #dev: release on friday"
            b.send("/join ops")
            b.expect("*** you are in #ops")
            b.send("/topic")
            assert b.expect("*** no topic") == "*** no topic set for #ops"
    finally:
        assert srv.stop() == 0
    # One record of kind "topic" per room: the text, who set it and when.
    db = sqlite3.connect(tmp_path / "chat.db")
    try:
        rows = dict(db.execute("SELECT key, value FROM records WHERE kind = 'topic'"))
    finally:
        db.close()
    assert set(rows) == {"#lobby", "#dev"}
    dev = json.loads(rows["#dev"])
    assert dev["topic"] == "release on friday" and dev["by"] == "alice"
    assert abs(dev["at"] - time.time()) < 60
    srv = start(tmp_path)
    try:
        with client(srv, "c") as c:
            c.send("/topic changed after two restarts")
            c.expect("set the topic: changed after two restarts")
    finally:
        assert srv.stop() == 0
    srv = start(tmp_path)
    try:
        with client(srv, "d") as d:
            assert "*** topic: changed after two restarts" in d.history
    finally:
        assert srv.stop() == 0


def test_a_locked_topic_stays_locked_after_a_restart(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        with client(srv, "owner") as owner:
            owner.send("/nick dana")
            owner.send("/register dana-pw-1")
            owner.expect("registered to you")
            owner.send("/join dev")
            assert owner.expect("own") == "*** you own #dev"
            owner.send("/topic release notes")
            owner.expect("set the topic: release notes")
            owner.send("/topic lock")
            owner.expect("is locked")
    finally:
        assert srv.stop() == 0
    srv = start(tmp_path)
    try:
        with client(srv, "other") as other:
            other.send("/join dev")
            other.expect("you are in #dev")
            assert other.expect("*** topic:") == "*** topic: release notes"
            other.send("/topic mine now")
            assert other.expect("error:") == "error: the topic of #dev is locked"
            other.send("/topic")
            assert other.expect("*** topic for") == "*** topic for #dev: release notes"
    finally:
        assert srv.stop() == 0


def test_ephemeral_forgets_topics() -> None:
    for run in range(2):
        srv = ChatServer(("--flood-rate", "0", "--ephemeral"), loop="asyncio")
        try:
            with client(srv, f"e{run}") as e:
                e.send("/topic")  # the first run's topic is not there in the second
                assert e.expect("*** no topic") == "*** no topic set for #lobby"
                e.send("/topic gone at exit")
                e.expect("set the topic: gone at exit")
        finally:
            assert srv.stop() == 0

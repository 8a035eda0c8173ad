"""Protections with their defaults: flood control, idle timeout, connections per IP."""

from __future__ import annotations

import re
import time

from .chatkit import TIMEOUT, UNIT, Harness


def test_a_flood_is_slowed_then_dropped_then_kicked(chat: Harness) -> None:
    srv = chat.start()  # defaults: burst 10, 5 messages/s, pastes of 20 lines count as one
    flooder = chat.client(srv, name="flooder")
    others = [chat.client(srv, name=f"o{i}") for i in range(2)]
    others[0].expect("*** guest3 joined")
    flooder.expect("*** guest3 joined")
    # 3000 lines at once: 150 messages of 20 lines. 10 pass, 10 more are slowed (reading
    # pauses), then 50 are dropped (one notice each) and the next kicks.
    flooder.send(b"".join(b"flood %d\n" % i for i in range(3000)), end=b"")
    lines = flooder.read_to_end()
    assert lines[-1] == "error: flooding, disconnecting"
    assert set(lines[:-1]) == {"error: slow down (lines dropped)"}
    assert 40 <= len(lines) - 1 <= 52, len(lines)
    for o in others:
        got = o.lines_until("*** guest1 left", timeout=2 * UNIT)  # not after close_timeout
        assert o.history[-1] == "*** guest1 left #lobby (flooding)"
        numbers = [int(line.split()[-1]) for line in got if line.startswith("guest1: ")]
        assert numbers == sorted(numbers)  # in order, whatever was dropped
        assert numbers[:200] == list(range(200))  # the burst's 10 messages, whole
    srv.wait_log(r"guest1 left #lobby \(flooding\)")
    # Forgotten at once, though the flooder's socket is still open on this side.
    others[0].send("/who")
    assert others[0].expect("* in") == "*** in #lobby: guest2, guest3"


def test_a_15_line_paste_arrives_whole_and_in_order(chat: Harness) -> None:
    srv = chat.start("--flood-burst", "1", "--flood-rate", "0.5")  # a strict limit
    talker = chat.client(srv, name="talker")
    other = chat.client(srv, name="other")
    talker.expect("*** guest2 joined")
    for paste in range(2):  # two pastes: the second is slowed, not cut
        talker.send(b"".join(b"paste %d line %d\n" % (paste, i) for i in range(15)), end=b"")
        got = other.lines_until(f"guest1: paste {paste} line 14")
        assert [line for line in got if line.startswith("guest1:")] == [
            f"guest1: paste {paste} line {i}"
            for i in range(14)  # then the 15th, matched
        ]
    assert not [line for line in talker.sync() if line.startswith("error")]


def test_fast_typing_is_slowed_not_dropped(chat: Harness) -> None:
    srv = chat.start()
    talker = chat.client(srv, name="talker")
    other = chat.client(srv, name="other")
    talker.expect("*** guest2 joined")
    for i in range(30):  # one line per send: well past the burst of 10
        talker.send(f"fast {i}")
    got = other.lines_until("guest1: fast 29")
    assert [line for line in got if line.startswith("guest1:")] == [
        f"guest1: fast {i}"
        for i in range(29)  # then the 30th, matched
    ]
    assert not [line for line in talker.sync() if line.startswith("error")]


def test_flood_rate_zero_lets_all_200_lines_through(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    talker = chat.client(srv, name="talker")
    other = chat.client(srv, name="other")
    talker.expect("*** guest2 joined")
    talker.send(b"".join(b"line %d\n" % i for i in range(200)), end=b"")
    talker.send("done")
    got = other.lines_until("guest1: done")
    assert got == [f"guest1: line {i}" for i in range(200)]
    assert not [line for line in talker.sync() if line.startswith("error")]


def test_idle_timeout_kicks_with_a_notice(chat: Harness) -> None:
    srv = chat.start("--idle-timeout", "1")
    idle = chat.client(srv, name="idle")
    active = chat.client(srv, name="active")
    idle_nick = idle.nick
    started = time.monotonic()
    # The active client keeps talking (a command every 0.3 s) while the idle one says nothing.
    deadline = started + TIMEOUT
    while True:
        active.send("/peers")
        line = active.expect(re.compile(r"^(You have|\*\*\* guest1 left)"))
        if line.startswith("*** guest1 left"):
            break
        assert time.monotonic() < deadline, active.history
        time.sleep(0.3 * UNIT)  # a person typing, not a synchronisation
    assert line == f"*** {idle_nick} left #lobby (idle)"
    lines = idle.read_to_end()
    assert lines[-1] == "error: idle for 1 s, disconnecting"
    assert idle.end == "eof"
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed <= 3.0 * UNIT
    # The active client was never idle.
    active.send("/peers")
    assert active.expect("You have") == "You have 0 peers on this server"


def test_max_conns_per_ip(chat: Harness) -> None:
    srv = chat.start("--max-conns-per-ip", "2")
    chat.client(srv, name="one")
    chat.client(srv, name="two")
    third = chat.client(srv, name="three", welcome=False)
    assert third.read_to_end() == ["error: too many connections from 127.0.0.1 (max 2)"]
    other_ip = chat.client(srv, name="other-ip", source="127.0.0.2")
    assert other_ip.nick == "guest3"
    srv.wait_log(r"rejected: too many connections from 127\.0\.0\.1 \(max 2\)")
    # The refused connection never joined: the room has the three others only.
    other_ip.send("/who")
    assert other_ip.expect("* in") == "*** in #lobby: guest1, guest2, guest3"


def test_history_of_100_flooded_rooms_stays_within_its_budget(chat: Harness) -> None:
    # Each client fills a room of its own with 20 lines of 60 KB: without a global budget
    # that pinned ~125 MB; --history-bytes (default 4 MiB) holds all history.
    srv = chat.start("--flood-rate", "0")
    clients = [chat.client(srv, name=f"f{i}") for i in range(100)]
    for c in clients:
        c.sync(timeout=10 * UNIT)
    base = srv.rss()
    for i, c in enumerate(clients):
        c.send(f"/join flood{i}")
    for i, c in enumerate(clients):
        c.expect(f"*** you are in #flood{i}")
    flood = b"".join(b"%d %s\n" % (n, b"x" * 60_000) for n in range(20))
    for c in clients:
        c.send(flood, end=b"")
    for c in clients:
        c.sync(timeout=20 * UNIT)  # every line of every client handled
    growth = srv.rss() - base
    assert growth < 16 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB"
    # What is kept is the newest: a newcomer to a flooded room gets its last lines, if any.
    late = chat.client(srv, name="late")
    late.send("/join flood99")
    replay = [line for line in late.lines_until("*** you are in #flood99") if "[history]" in line]
    late.sync()
    assert all(line.startswith("[history] ") for line in replay)


def test_one_room_past_max_rooms_gets_one_clear_line(chat: Harness) -> None:
    srv = chat.start("--max-rooms", "2")
    a, b = chat.client(srv, name="a"), chat.client(srv, name="b")
    a.send("/join one")
    a.expect("*** you are in #one")
    b.send("/join two")
    assert b.expect("error:") == "error: too many rooms (max 2): join one of /rooms"
    b.send("/join one")
    b.expect("*** you are in #one")

"""Protections with their defaults: flood control, idle timeout, connections per IP."""

from __future__ import annotations

import re
import time

from .chatkit import TIMEOUT, UNIT, Harness


def test_a_burst_of_200_lines_is_throttled_then_kicked(chat: Harness) -> None:
    srv = chat.start()  # defaults: burst 10, then 5 lines/s; 50 refusals per refill kick
    flooder = chat.client(srv, name="flooder")
    others = [chat.client(srv, name=f"o{i}") for i in range(2)]
    others[0].expect("*** guest3 joined")
    flooder.expect("*** guest3 joined")
    flooder.send(b"".join(b"flood %d\n" % i for i in range(200)), end=b"")
    lines = flooder.read_to_end()
    slow_downs = lines.count("error: slow down")
    assert lines[-1] == "error: flooding, disconnecting"
    assert set(lines[:-1]) == {"error: slow down"}
    # 10 lines pass, then the next 50 are refused (one strike each) and the 61st kicks:
    # a refill of a token or two while the burst is handled may shift that by a line or two.
    assert 45 <= slow_downs <= 52, lines
    for o in others:
        got = o.lines_until("*** guest1 left", timeout=2 * UNIT)  # not after close_timeout
        assert o.history[-1] == "*** guest1 left #lobby (flooding)"
        delivered = [line for line in got if line.startswith("guest1: ")]
        assert 10 <= len(delivered) <= 12, got
        assert delivered == [f"guest1: flood {i}" for i in range(len(delivered))]
    srv.wait_log(r"guest1 left #lobby \(flooding\)")
    # Forgotten at once, though the flooder's socket is still open on this side.
    others[0].send("/who")
    assert others[0].expect("* in") == "*** in #lobby: guest2, guest3"


def test_a_short_burst_is_throttled_without_a_kick(chat: Harness) -> None:
    srv = chat.start()
    talker = chat.client(srv, name="talker")
    other = chat.client(srv, name="other")
    talker.expect("*** guest2 joined")
    talker.send(b"".join(b"fast %d\n" % i for i in range(30)), end=b"")
    refused = 0
    while refused < 18:  # 20 give or take a refilled token
        talker.expect("error: slow down")
        refused += 1
    # After a pause (the bucket refills at 5 lines/s) the talker may speak again; /topic is
    # answered to the sender too, so it knows whether the line was accepted.
    deadline = time.monotonic() + TIMEOUT
    while True:
        talker.send("/topic calm again")
        line = talker.expect(re.compile(r"^(\*\*\* guest1 set the topic|error: slow down)"))
        if line.startswith("*** guest1"):
            break
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.1 * UNIT)  # let time pass: the refill is what is being tested
    got = other.lines_until("*** guest1 set the topic: calm again")
    delivered = [line for line in got if line.startswith("guest1: ")]
    assert 10 <= len(delivered) <= 12
    assert delivered == [f"guest1: fast {i}" for i in range(len(delivered))]


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

"""Nicks held for resumes, on a server that was not there when they were held (chat servers
on one redis-server): it reads the held tickets from Redis when it starts, refuses those nicks
to others with the usual one line, gives a nick back to its client's ``/resume`` and frees it
a window after the client left (not a window after the server started). The same for a lone
server restarted: the nicks its last run held are still held."""

from __future__ import annotations

import asyncio
import json
import time

from twoway.bus.sessions import RedisSessions
from twoway.sansio.chat.resume import Ticket, ticket_record

from .buskit import UNIT, Cluster, RedisServer
from .test_resume_cluster import reset, resume, token_of

TAKEN = 'error: nick "{}" is already taken'


def test_a_server_started_after_a_drop_holds_the_nick_until_the_window_ends(
    cluster: Cluster,
) -> None:
    window = 6 * UNIT
    late = 3.5 * UNIT  # B starts this long after the drops: half the window and more
    short = ("--resume-window", f"{window:g}")
    a = cluster.server(*short)
    alice = cluster.client(a, "alice")
    dora = cluster.client(a, "dora")
    carol = cluster.client(a, "carol")  # a witness on A
    token = token_of(alice)
    reset(alice)
    reset(dora)
    carol.saw("*** alice left #lobby")
    carol.saw("*** dora left #lobby")
    left = time.monotonic()  # (a little after A made their tickets)
    time.sleep(max(left + late - time.monotonic(), 0.0))  # the scenario: B comes later
    b = cluster.server(*short)
    b_up = time.monotonic()
    bob = cluster.client(b, "bob")
    for nick in ("alice", "dora", "ALICE"):
        assert bob.ask(f"/nick {nick}", "error:") == TAKEN.format(nick)
        assert bob.sync() == []  # one line, nothing else
    back = resume(cluster, b, token)
    back.expect("*** resumed as alice in #lobby")
    carol.expect("is now known as alice")  # A hears of her on B
    # Dora never came back: her nick is free on B a window after she left, which is well
    # before a window after B started.
    time.sleep(max(left + window + 1.8 * UNIT - time.monotonic(), 0.0))
    asked = time.monotonic()
    bob.rename("dora")
    assert asked < b_up + window, "too slow to tell when the hold ended"
    carol.expect("*** bob is now known as dora")


def test_a_lone_server_restarted_holds_the_nicks_its_last_run_held(cluster: Cluster) -> None:
    a = cluster.server()
    alice = cluster.client(a, "alice")
    token = token_of(alice)
    assert a.stop() == 0  # SIGTERM: her session goes to redis, her nick held
    a2 = cluster.server()  # nobody else to hear it from: only redis knows
    assert a2.wait_for(r"resume: 1 nick\(s\) held for clients that may resume")
    bob = cluster.client(a2, "bob")
    assert bob.ask("/nick alice", "error:") == TAKEN.format("alice")
    back = resume(cluster, a2, token)
    back.expect("*** resumed as alice in #lobby")
    assert back.ask("/nick alice", "error:") == "error: you are already known as alice"


def test_the_held_tickets_are_read_under_the_prefix_only(redis: RedisServer) -> None:
    """``RedisSessions.held``: the tickets under its prefix (matched literally, glob
    characters and all) whose nick is held and whose window has not passed, with their
    age; anything else is skipped."""
    clock = [1000.0]
    prefix = "t[1]*:"
    sessions = RedisSessions(redis.url, 60.0, prefix=prefix, wall=lambda: clock[0])
    try:
        sessions.saved(Ticket("k1", "alice", "#lobby", "e", 4, 0.0, True, 9))
        sessions.saved(Ticket("k2", "carol", "#lobby", "e", 0, 0.0, False, 10))  # not held
        clock[0] = 1030.0
        sessions.saved(Ticket("k3", "dave", "#dev", "e", 0, 0.0, True, 11))
        old = ticket_record(Ticket("k4", "erin", "#lobby", "e", 0, 0.0), 900.0)
        redis.command("SET", f"{prefix}session:k4", json.dumps(old))  # past its window
        redis.command("SET", f"{prefix}session:k5", "not json")
        redis.command("SET", f"{prefix}session:k6", json.dumps({"nick": 3}))
        decoy = ticket_record(Ticket("k7", "mallory", "#lobby", "e", 0, 0.0), 1030.0)
        redis.command("SET", "t1xx:session:k7", json.dumps(decoy))  # the glob, unescaped
        clock[0] = 1040.0
        got = sorted(asyncio.run(sessions.held()) or [], key=lambda t: t.key)
        assert [(t.key, t.nick, t.room, t.last, t.left_at) for t in got] == [
            ("k1", "alice", "#lobby", 4, -40.0),
            ("k3", "dave", "#dev", 0, -10.0),
        ]
    finally:
        sessions.close()

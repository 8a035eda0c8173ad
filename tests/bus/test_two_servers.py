"""Two chat servers on one Redis, clients on each: everything a user sees spans both."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from helpers import CliServer

from .buskit import REDIS_SERVER, UNIT, Cluster, RedisServer, make_certificates

Pair = tuple[Cluster, CliServer, CliServer]


def test_messages_joins_parts_and_actions_span_servers(pair: Pair) -> None:
    c, a, b = pair
    alice = c.client(a, "alice1")
    bob = c.client(b, "bob1")
    alice.ask("/join t1", "* you are in #t1")
    bob.expect("* alice1 left #lobby")  # B knows where alice is now
    bob.send("/join t1")
    alice.expect("* bob1 joined #t1")
    bob.expect("* you are in #t1")
    assert bob.expect("peer") == "*** 1 peer here: alice1"
    alice.send("hello from a")
    bob.expect("alice1: hello from a")
    bob.send("/me waves")
    alice.expect("* bob1 waves")
    bob.send("/part")
    alice.expect("* bob1 left #t1")
    bob.send("/join t1")
    alice.expect("* bob1 joined #t1")
    bob.send("/quit see you")
    bob.expect("Bye Bye!")
    alice.expect("* bob1 left #t1 (quit: see you)")


def test_nick_changes_and_uniqueness_span_servers(pair: Pair) -> None:
    c, a, b = pair
    alice = c.client(a, "alice2")
    bob = c.client(b, "bob2")
    bob.knows("alice2")
    alice.ask("/join t2", "* you are in #t2")
    bob.expect("* alice2 left #lobby")
    bob.ask("/join t2", "* you are in #t2")
    alice.expect("* bob2 joined #t2")
    bob.send("/nick robert2")
    alice.expect("* bob2 is now known as robert2")
    # A nick held on the other server is taken, in any case; free again once released.
    assert alice.ask("/nick ROBERT2", "error:") == 'error: nick "ROBERT2" is already taken'
    bob.send("/nick bob2")
    alice.expect("* robert2 is now known as bob2")
    alice.ask("/nick robert2", "* alice2 is now known as robert2")
    bob.expect("* alice2 is now known as robert2")


def test_private_messages_span_servers(pair: Pair) -> None:
    c, a, b = pair
    alice = c.client(a, "alice3")
    bob = c.client(b, "bob3")
    alice.knows("bob3")  # A knows bob3 now
    bob.knows("alice3")
    alice.ask("/msg Bob3 psst, over here", "[msg to bob3] psst, over here")
    bob.expect("[msg from alice3] psst, over here")
    bob.ask("/msg alice3 hi", "[msg to alice3] hi")
    alice.expect("[msg from bob3] hi")
    assert bob.ask("/msg nobody3 x", "error:") == 'error: no such nick "nobody3"'


def test_who_rooms_and_peers_count_both_servers(pair: Pair) -> None:
    c, a, b = pair
    a1 = c.client(a, "ann4")
    a2 = c.client(a, "amy4")
    b1 = c.client(b, "ben4")
    a1.ask("/join t4", "* you are in #t4")
    a2.ask("/join t4", "* you are in #t4")
    b1.expect("* amy4 left #lobby")  # B has seen both move
    b1.ask("/join t4", "* you are in #t4")
    assert b1.expect("peers here") == "*** 2 peers here: amy4, ann4"
    a1.expect("* ben4 joined #t4")
    for cl in (a1, a2, b1):
        assert cl.ask("/who", "*** in #t4") == "*** in #t4: amy4, ann4, ben4"
        assert re.search(r"#t4 \(3\)", cl.ask("/rooms", "* rooms:"))
    # /peers counts everyone on every server (the other tests' clients included), and says
    # how many of them are on the asker's own server.
    answers = [cl.ask("/peers", "You have") for cl in (a1, a2, b1)]
    shape = re.compile(r"^You have (\d+) peers on 2 servers \((\d+) on this one\)$")
    parsed = [shape.match(a) for a in answers]
    assert all(parsed), answers
    totals = {int(m.group(1)) for m in parsed if m}
    assert len(totals) == 1, answers
    [total] = totals
    here = [int(m.group(2)) for m in parsed if m]
    # Everyone but the asker: (own server - 1) + the other server, from either side.
    assert here[0] == here[1] and here[0] + 1 + here[2] + 1 == total + 1, answers
    b1.send("/quit")
    a1.expect("* ben4 left #t4 (quit)")
    assert a1.ask("/who", "*** in #t4") == "*** in #t4: amy4, ann4"
    assert re.search(r"#t4 \(2\)", a2.ask("/rooms", "* rooms:"))


def test_history_and_topic_span_servers(pair: Pair) -> None:
    c, a, b = pair
    carol = c.client(a, "carol5")
    dave = c.client(b, "dave5")
    carol.ask("/join t5", "* you are in #t5")
    dave.expect("* carol5 left #lobby")
    dave.ask("/join t5", "* you are in #t5")
    carol.expect("* dave5 joined #t5")
    carol.send("one from a")
    dave.expect("carol5: one from a")
    dave.send("two from b")
    carol.expect("dave5: two from b")
    carol.send("/topic across servers")
    dave.expect("* carol5 set the topic: across servers")
    # dave leaves: on server B nobody is in #t5 any more, but carol (on A) keeps the room
    # (and its history) alive there too.
    dave.ask("/part", "* you are in #lobby")
    carol.send("three from a, dave gone")
    carol.send("/msg dave5 sync")  # B handles A's items in order: a barrier
    dave.expect("[msg from carol5] sync")
    eve = c.client(b, "eve5")
    eve.send("/join t5")
    welcome = eve.lines_until("[history] carol5: three from a, dave gone")
    assert "*** topic: across servers" in welcome
    assert "[history] carol5: one from a" in welcome
    assert "[history] dave5: two from b" in welcome
    assert eve.ask("/topic", "*** topic") == "*** topic for #t5: across servers"


def test_500_lines_arrive_once_in_order(pair: Pair) -> None:
    c, a, b = pair
    sender = c.client(a, "sender6")
    receiver = c.client(b, "receiver6")
    other = c.client(b, "other6")  # a second sender interleaving, on the other server
    sender.ask("/join t6", "* you are in #t6")
    receiver.saw("* sender6 left #lobby")  # B knows where sender6 is
    receiver.ask("/join t6", "* you are in #t6")
    other.ask("/join t6", "* you are in #t6")
    sender.expect("* other6 joined #t6")  # and A knows both (B publishes in order)
    sender.sock.sendall(b"".join(b"line %d\n" % i for i in range(1, 501)))
    other.sock.sendall(b"".join(b"noise %d\n" % i for i in range(1, 101)))
    got: list[str] = []
    noise: list[str] = []
    while len(got) < 500 or len(noise) < 100:
        line = receiver.expect(re.compile(r"^(sender6|other6): "), 20 * UNIT)
        (got if line.startswith("sender6") else noise).append(line)
    assert got == [f"sender6: line {i}" for i in range(1, 501)]
    assert noise == [f"other6: noise {i}" for i in range(1, 101)]
    # Nothing more (no duplicate) arrived before a barrier on the sending side's server.
    sender.send("end6")
    rest = receiver.lines_until("sender6: end6")
    assert [x for x in rest if x.startswith(("sender6", "other6"))] == []


def test_server_stop_removes_its_clients_elsewhere(cluster: Cluster) -> None:
    a = cluster.server()
    b = cluster.server()
    alice = cluster.client(a, "alice7")
    bob = cluster.client(b, "bob7")
    alice.knows("bob7")
    assert alice.ask("/who", "*** in #lobby") == "*** in #lobby: alice7, bob7"
    b.signal()  # SIGTERM: a graceful stop
    bob.wait_closed()
    bob.close()
    assert b.wait_exit() == 0
    alice.expect(re.compile(r"^\*\*\* bob7 left #lobby \("), 5 * UNIT)
    assert alice.ask("/who", "*** in #lobby") == "*** in #lobby: alice7"
    assert "bus: redis" in b.stderr


def test_two_servers_over_a_unix_socket(tmp_path: Path) -> None:
    """``--bus unix:///path``: the same chat through Redis's Unix socket."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(unix_socket=tmp_path / "redis.sock")
    redis.start()
    cluster = Cluster(redis, url=redis.unix_url)
    try:
        a, b = cluster.server(), cluster.server()
        alice, bob = cluster.client(a, "alice9"), cluster.client(b, "bob9")
        alice.knows("bob9")
        alice.send("over the socket")
        assert bob.expect(re.compile(r"^alice9: ")) == "alice9: over the socket"
        assert "bus: redis at unix://" in a.stderr
    finally:
        assert cluster.close() == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_two_servers_over_tls_and_an_untrusted_one_is_refused(tmp_path: Path) -> None:
    """``--bus rediss://...?ssl_ca_certs=CA``: the chat through Redis's TLS port. A server
    that does not trust the certificate says so in one line, retries, and keeps its own
    clients chatting."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    (tmp_path / "good").mkdir()
    (tmp_path / "other").mkdir()
    cert, key, ca = make_certificates(tmp_path / "good")
    *_, other_ca = make_certificates(tmp_path / "other", "some other CA")
    redis = RedisServer(tls=(cert, key, ca))
    redis.start()
    cluster = Cluster(redis, url=redis.tls_url(ca))
    untrusting = Cluster(redis, url=redis.tls_url(other_ca))
    try:
        a, b = cluster.server(), cluster.server()
        alice, bob = cluster.client(a, "alice10"), cluster.client(b, "bob10")
        alice.knows("bob10")
        alice.send("over tls")
        assert bob.expect(re.compile(r"^alice10: ")) == "alice10: over tls"
        assert "bus: redis at rediss://" in a.stderr

        c = untrusting.server()
        line = c.wait_for(r"bus: redis unreachable \((.*)\), retrying", 5 * UNIT)
        assert line.group(1).startswith("TLS certificate verify failed: "), line.group(0)
        carol, dan = untrusting.client(c, "carol10"), untrusting.client(c, "dan10")
        carol.send("local still works")
        assert dan.expect(re.compile(r"^carol10: ")) == "carol10: local still works"
    finally:
        # Both, whatever happened: a failed assertion must not leave a server running.
        problems = untrusting.close() + cluster.close()
    assert problems == []


def test_a_server_that_joins_late_shows_recent_history(cluster: Cluster) -> None:
    """History from before a server joined comes from the log: its clients see the recent
    lines of the lobby at once, and of another room when they join it."""
    a = cluster.server()
    alice = cluster.client(a, "alice11")
    for i in range(3):
        alice.send(f"early {i}")
    alice.send("/join dev11")
    alice.send("in dev")
    alice.sync()

    def logged() -> bool:
        return b"in dev" in cluster.redis.command("XREVRANGE", "twoway:chat:log", "+", "-")

    deadline = time.monotonic() + 5 * UNIT
    while not logged():
        assert time.monotonic() < deadline, "alice's lines never reached the log"
        time.sleep(0.05)
    b = cluster.server()
    bob = cluster.client(b, "bob11")
    assert [x for x in bob.history if x.startswith("[history]")] == [
        f"[history] alice11: early {i}" for i in range(3)
    ]
    bob.send("/join dev11")
    bob.expect("[history] alice11: in dev")
    alice.expect("* bob11 joined #dev11")


def test_since_with_another_servers_epoch_says_the_history_was_reset(pair: Pair) -> None:
    """Numbers and epochs are each server's own: another server's epoch is not taken for
    this one's (which could replay the wrong lines), it reads as a reset."""
    c, a, b = pair
    alice = c.client(a, "alice9")
    bob = c.client(b, "bob9")
    alice.ask("/join t9", "* you are in #t9")
    bob.ask("/join t9", "* you are in #t9")
    alice.expect("* bob9 joined #t9")
    for text in ("one", "two", "three"):
        alice.send(text)
        bob.expect(f"alice9: {text}")
    seen_on_a = re.search(r"seq (\d+) epoch (\S+)", alice.ask("/seq", "at #t9 seq"))
    seen_on_b = re.search(r"seq (\d+) epoch (\S+)", bob.ask("/seq", "at #t9 seq"))
    assert seen_on_a is not None and seen_on_b is not None
    assert seen_on_a.group(2) != seen_on_b.group(2)
    bob.ask(f"/since 1 {seen_on_a.group(2)}", "*** history of #t9 was reset")
    summary = bob.expect("*** replayed")
    replay = [*bob.skipped, summary]
    assert replay == [
        "[history] alice9: one",
        "[history] alice9: two",
        "[history] alice9: three",
        "*** replayed 3 lines; 0 missed",
    ]
    bob.ask(f"/since 1 {seen_on_b.group(2)}", "[history] alice9: two")  # its own: exact
    assert bob.expect("*** replayed") == "*** replayed 2 lines; 0 missed"

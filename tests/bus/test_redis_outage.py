"""Redis goes away during chat traffic: killed and restarted empty, or paused. Local chat keeps
working, cross-server lines wait and arrive once, in order, and the log says it once."""

from __future__ import annotations

import re
import signal
import time

from helpers import CliServer

from .buskit import UNIT, ChatClient, Cluster

UNREACHABLE = r"bus: redis unreachable \("
BACK = r"bus: redis back, \d+ messages sent"


def _setup(cluster: Cluster) -> tuple[CliServer, CliServer, ChatClient, ChatClient, ChatClient]:
    a = cluster.server()
    b = cluster.server()
    alice = cluster.client(a, "alice")
    carol = cluster.client(a, "carol")  # alice's neighbour on the same server
    bob = cluster.client(b, "bob")
    alice.knows("bob")
    bob.knows("carol")
    alice.send("before")
    bob.expect("alice: before")
    return a, b, alice, carol, bob


class Ticker:
    """alice's chat traffic: numbered lines, ``tick 1``, ``tick 2``..."""

    def __init__(self, alice: ChatClient) -> None:
        self.alice = alice
        self.sent = 0

    def burst(self, n: int) -> None:
        for _ in range(n):
            self.sent += 1
            self.alice.send(f"tick {self.sent}")

    def until(self, deadline: float, every: float = 0.02) -> None:
        """Keep talking until ``deadline`` (the outage's length is the scenario's)."""
        while time.monotonic() < deadline:
            self.burst(1)
            time.sleep(every)  # pacing the traffic, not waiting for anything

    def received(self, client: ChatClient, timeout: float = 15 * UNIT) -> list[int]:
        """Read until the last tick; return the tick numbers read, in order."""
        got: list[int] = []
        while not got or got[-1] != self.sent:
            line = client.expect(re.compile(r"^alice: tick \d+$"), timeout)
            got.append(int(line.rsplit(" ", 1)[1]))
        return got


def _during_outage(alice: ChatClient, bob: ChatClient) -> None:
    """Nobody is wrongly seen leaving; bob's line waits on B. (carol receiving every tick
    at once is checked afterwards: local chat is not interrupted.)"""
    bob.send("bob during")
    assert alice.ask("/who", "*** in #lobby") == "*** in #lobby: alice, bob, carol"


def _after(a: CliServer, b: CliServer, alice: ChatClient, bob: ChatClient) -> None:
    alice.expect("bob: bob during", 15 * UNIT)  # queued on B during the outage
    for srv in (a, b):
        srv.wait_for(BACK, 15 * UNIT)
    bob.send("after")
    alice.expect("bob: after")
    assert bob.ask("/who", "*** in #lobby") == "*** in #lobby: alice, bob, carol"
    for srv in (a, b):  # one line per change of state, not one per message or retry
        assert srv.count(UNREACHABLE) == 1, srv.stderr
        assert srv.count(BACK) == 1, srv.stderr


def test_redis_restarted_empty_after_3_s(cluster: Cluster) -> None:
    a, b, alice, carol, bob = _setup(cluster)
    ticker = Ticker(alice)
    ticker.burst(20)  # in flight when Redis goes: these may be lost, never silently
    cluster.redis.terminate()  # SIGTERM; no persistence: it comes back empty
    before = ticker.sent
    ticker.until(time.monotonic() + 3.0)
    _during_outage(alice, bob)
    local = ticker.received(carol, 2 * UNIT)  # read before Redis is back: no wait locally
    cluster.redis.start()
    ticker.burst(20)  # while the servers reconnect
    assert local + ticker.received(carol) == list(range(1, ticker.sent + 1))
    got = ticker.received(bob)
    lines = bob.history
    assert got == sorted(set(got)), got  # once each, in order
    missing = set(range(1, ticker.sent + 1)) - set(got)
    assert missing <= set(range(1, before + 1)), sorted(missing)  # queued lines all arrive
    assert "*** notice: messages from other servers may have been missed" in lines
    # Logged once the backlog's last publish has returned, which can be after bob got it.
    back = r"bus: redis back, [1-9]\d* messages sent"
    a.wait_for(back, 5 * UNIT)
    assert a.count(back) == 1, a.stderr
    _after(a, b, alice, bob)
    assert not any(" left #lobby" in x for x in lines), lines


def test_redis_paused_for_5_s(cluster: Cluster) -> None:
    a, b, alice, carol, bob = _setup(cluster)
    ticker = Ticker(alice)
    ticker.burst(20)
    cluster.redis.signal(signal.SIGSTOP)
    ticker.until(time.monotonic() + 5.0)
    for srv in (a, b):  # noticed through timeouts: the connections stay open
        srv.wait_for(UNREACHABLE, 1 * UNIT)
    _during_outage(alice, bob)
    local = ticker.received(carol, 2 * UNIT)  # read while Redis is still paused
    cluster.redis.signal(signal.SIGCONT)
    ticker.burst(20)
    assert local + ticker.received(carol) == list(range(1, ticker.sent + 1))
    # Nothing lost, nothing twice (Redis ran the publications it had received before the
    # pause when it resumed, and dropped the repeats sent after reconnecting).
    assert ticker.received(bob) == list(range(1, ticker.sent + 1))
    _after(a, b, alice, bob)
    extra = bob.sync()
    assert not any(x.startswith("alice: tick") for x in extra), extra
    for srv in (a, b):
        assert srv.count("may have been missed") == 0, srv.stderr
    assert not any(" left #lobby" in x for x in bob.history), bob.history


def test_server_starts_while_redis_is_down(cluster: Cluster) -> None:
    cluster.redis.terminate()
    a = cluster.server()  # starts anyway, says so once
    a.wait_for(UNREACHABLE)
    alice = cluster.client(a, "alice")
    carol = cluster.client(a, "carol")
    alice.send("local works")
    carol.expect("alice: local works")
    cluster.redis.start()
    a.wait_for(BACK, 15 * UNIT)
    b = cluster.server()
    # B asks every server for its state when it joins: A's clients reach its directory,
    # before bob connects (listed in his welcome) or after (announced as they arrive).
    bob = ChatClient(b.port, "bob")
    cluster.clients.append(bob)
    welcome = bob.lines_until("* type /help")
    known = set(re.findall(r"\b(alice|carol)\b", " ".join(x for x in welcome if "peer" in x)))
    while known != {"alice", "carol"}:
        known.add(bob.expect(re.compile(r"^\*\*\* (alice|carol) joined #lobby$")).split()[1])
    bob.rename("bob")
    alice.knows("bob")
    bob.send("hello a")
    alice.expect("bob: hello a")
    assert a.count(UNREACHABLE) == 1

"""Bursts: many clients joining at once, many clients reset at once.

A burst of joins is batched like room lines (one write per member per loop iteration, not
one per join), and must still tell each client exactly the joins that came after its own.
A burst of resets must not make the server write departures to connections that are
already lost (asyncio logs a warning for each such write: 1,500 resets made 1.1 million
log lines), and the server must still stop within its grace.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time

from .chatkit import TIMEOUT, UNIT, ChatServer, Harness

WELCOME_END = b"*** type /help for commands\n"


class Burst:
    """``n`` sockets connected to ``port`` at once (non-blocking connects, all issued before
    any is waited on), read together with one selector."""

    def __init__(self, port: int, n: int) -> None:
        self.socks: list[socket.socket] = []
        self.data: list[bytearray] = [bytearray() for _ in range(n)]
        self.sel = selectors.DefaultSelector()
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, i)

    def read_until(self, done: bytes, timeout: float) -> None:
        """Read every socket until each has received ``done`` (fails at the deadline)."""
        waiting = {i for i, d in enumerate(self.data) if done not in d}
        deadline = time.monotonic() + timeout
        while waiting:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(waiting)} of {len(self.socks)} never read {done!r}"
            for key, _ in self.sel.select(min(left, 1.0)):
                i = key.data
                try:
                    chunk = self.socks[i].recv(1 << 16)
                except BlockingIOError:
                    continue
                assert chunk, f"client {i} was closed: {bytes(self.data[i][-200:])!r}"
                self.data[i] += chunk
                if i in waiting and done in self.data[i]:
                    waiting.discard(i)

    def reset_all(self) -> None:
        """Close every socket with an RST (``SO_LINGER`` 0), as fast as possible."""
        linger = struct.pack("ii", 1, 0)
        for s in self.socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.close()

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()


def test_a_burst_of_joins_tells_each_client_exactly_the_later_joins(chat: Harness) -> None:
    n = 600
    srv = chat.start()
    burst = Burst(srv.port, n)
    try:
        burst.read_until(WELCOME_END, 20 * UNIT)
        # A last client joins: once each has its join line, each has every join before it.
        probe = chat.client(srv, name="probe")
        burst.read_until(f"*** {probe.nick} joined #lobby\n".encode(), TIMEOUT)
        for i, data in enumerate(burst.data):
            lines = data.decode().splitlines()
            # Nothing queued before this client joined reaches it: the welcome comes first.
            assert lines[:2] == ["*** welcome to twoway chat", lines[1]], (i, lines[:3])
            me = int(lines[1].removeprefix("*** you are guest"))
            peers = next(line for line in lines if " here" in line)
            count = 0 if "alone" in peers else int(peers.split()[1])
            # Guest numbers follow the order of admission: guestK had K-1 people before it.
            assert count == me - 1, (i, peers)
            joins = [line for line in lines if line.endswith(" joined #lobby")]
            later = [f"*** guest{g} joined #lobby" for g in range(me + 1, n + 1)]
            assert joins == [*later, f"*** {probe.nick} joined #lobby"], (i, me, joins[:5])
    finally:
        burst.close()


def test_1500_resets_at_once_cost_few_log_lines_and_sigterm_stays_within_the_grace(
    chat: Harness,
) -> None:
    n = 1500
    srv: ChatServer = chat.start("--grace", "3")
    watchers = [chat.client(srv, name=f"w{i}") for i in range(2)]
    burst = Burst(srv.port, n)
    try:
        burst.read_until(WELCOME_END, 30 * UNIT)
        for w in watchers:
            w.sync(timeout=30 * UNIT)  # every join is read: the departures come next
        before = len(srv.log_lines)
    finally:
        burst.reset_all()
    # Every reset client is forgotten, and the watchers are told of each departure once.
    srv.wait_for(r"INFO    closed ", timeout=60 * UNIT, start=before, count=n)
    for w in watchers:
        lefts = [line for line in w.sync(timeout=30 * UNIT) if " left #lobby (" in line]
        assert len(lefts) == n and len(set(lefts)) == n, lefts[:3]
    noise = [line for line in srv.log_lines[before:] if " INFO " not in line]
    assert len(noise) < 50, noise[:5]
    # The watchers stay connected: SIGTERM must not need more than the grace.
    started = time.monotonic()
    assert srv.stop() == 0
    took = time.monotonic() - started
    assert took < 3 + 2 * UNIT, f"exit took {took:.1f} s with --grace 3"


def test_a_client_leaving_a_room_first_gets_what_was_queued_for_it_there(chat: Harness) -> None:
    # A join notice waits a few milliseconds to be delivered with others (see services/chat);
    # a member who leaves meanwhile must still read it, before what it reads in its new room.
    srv = chat.start()
    for round_ in range(5):
        mover = chat.client(srv, name=f"mover{round_}")
        newcomer = chat.client(srv, name=f"newcomer{round_}")  # its join is queued now...
        mover.send(f"/join elsewhere{round_}")  # ...and this read comes before it is sent
        got = mover.lines_until(f"*** you are in #elsewhere{round_}")
        assert f"*** {newcomer.nick} joined #lobby" in got, got
        mover.send("/quit")
        newcomer.send("/quit")

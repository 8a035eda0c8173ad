"""Write groups (net/groups.py) with the coalescer: every member sees exactly the lines sent
while it was a member, never its own, and in the order of the calls, whatever mix of group
lines, direct writes (in and out of callbacks), joins and departures happened in between.
Real connections over in-memory transports (twoway.testing), no sockets."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

import twoway
from helpers import wait_until
from twoway.net.coalesce import coalescer
from twoway.net.conn import Conn
from twoway.net.groups import Group
from twoway.net.service import LineService
from twoway.testing import Peer, open_peer


class Quiet(LineService):
    """A line service that answers nothing: the test writes."""

    name = "quiet"

    def on_line(self, conn: Conn, line: str) -> None:
        pass


@dataclass
class Tally:
    lines_out: int = 0


async def _settle() -> None:
    """Let the end-of-iteration flush and any presence delay run (bounded: 1 s)."""
    for _ in range(1000):
        await asyncio.sleep(0.001)
        if not coalescer.groups and not coalescer.dirty and coalescer.presence_timer is None:
            return


def _lines(peer: Peer) -> list[str]:
    return peer.read().decode().splitlines()


async def test_member_order_with_direct_writes_joins_and_departures() -> None:
    tally = Tally()
    room = Group("#r", tally)
    a, b, c = (open_peer(Quiet()) for _ in range(3))
    room.add(1, a.conn)
    room.add(2, b.conn)
    room.send("one", exclude=1)  # a said it: a does not get it back
    b.conn.send_line("direct to b")  # after "one", though "one" is still queued
    room.add(3, c.conn)  # c joins: it gets only what is sent from now on
    room.send("two")
    room.remove(2)  # b leaves: it takes "two" now, and nothing later
    room.send("three", exclude=3)
    await _settle()
    assert _lines(a) == ["two", "three"]
    assert _lines(b) == ["one", "direct to b", "two"]
    assert _lines(c) == ["two"]
    assert tally.lines_out == 1 + 3 + 1  # one to b; two to a, b, c; three to a
    assert b.conn.group is None and a.conn.group is room


async def test_a_connection_is_in_one_group_at_a_time() -> None:
    tally = Tally()
    first, second = Group("#a", tally), Group("#b", tally)
    p = open_peer(Quiet())
    first.add(7, p.conn)
    first.send("in a")
    second.add(7, p.conn)  # moves: takes what #a queued for it first
    first.send("not for p")
    second.send("in b")
    await _settle()
    assert _lines(p) == ["in a", "in b"]
    assert len(first) == 0 and len(second) == 1


async def test_closing_member_gets_what_was_queued_before_its_close() -> None:
    room = Group("#r", Tally())
    p, q = open_peer(Quiet()), open_peer(Quiet())
    room.add(1, p.conn)
    room.add(2, q.conn)
    room.send("last words")
    p.conn.close()  # flushes what is queued for it, group lines included
    room.send("after the close")
    await _settle()
    assert _lines(p) == ["last words"]
    assert _lines(q) == ["last words", "after the close"]


async def test_crlf_member_gets_crlf() -> None:
    room = Group("#r", Tally())
    crlf, lf = open_peer(Quiet()), open_peer(Quiet())
    crlf.send(b"hello\r\n")  # its replies now end the way its lines do
    room.add(1, crlf.conn)
    room.add(2, lf.conn)
    room.send("x")
    room.send("y", exclude=2)
    await _settle()
    assert crlf.read() == b"x\r\ny\r\n"
    assert lf.read() == b"x\n"


# -- the property: any interleaving keeps every member's lines exact and in order ---------

PEERS = 4
GROUPS = 2

op = st.one_of(
    st.tuples(st.just("send"), st.integers(0, GROUPS - 1), st.none() | st.integers(0, PEERS - 1)),
    st.tuples(st.just("write"), st.integers(0, PEERS - 1), st.booleans()),
    st.tuples(st.just("move"), st.integers(0, PEERS - 1), st.none() | st.integers(0, GROUPS - 1)),
    st.tuples(st.just("tick"), st.booleans(), st.none()),
    st.tuples(st.just("presence"), st.integers(0, GROUPS - 1), st.none()),
)


@dataclass
class Model:
    where: list[int | None] = field(default_factory=lambda: [None] * PEERS)
    seen: list[list[str]] = field(default_factory=lambda: [[] for _ in range(PEERS)])


async def _run(ops: list[tuple[str, object, object]]) -> None:
    tally = Tally()
    groups = [Group(f"#g{i}", tally) for i in range(GROUPS)]
    peers = [open_peer(Quiet()) for _ in range(PEERS)]
    model = Model()
    for n, (kind, x, y) in enumerate(ops):
        text = f"{kind}{n}"
        if kind in ("send", "presence"):
            g = int(x)  # type: ignore[call-overload]
            exclude = None if y is None else int(y)  # type: ignore[call-overload]
            groups[g].send(text, exclude, soon=kind == "send")
            for i in range(PEERS):
                if model.where[i] == g and i != exclude:
                    model.seen[i].append(text)
        elif kind == "write":
            i = int(x)  # type: ignore[call-overload]
            conn = peers[i].conn
            if y:  # inside a service callback: queued and coalesced
                conn.run_callback(lambda c, t=text: c.send_line(t))
            else:
                conn.send_line(text)
            model.seen[i].append(text)
        elif kind == "move":
            i = int(x)  # type: ignore[call-overload]
            old = model.where[i]
            if old is not None:
                groups[old].remove(i)
            if y is not None:
                groups[int(y)].add(i, peers[i].conn)  # type: ignore[call-overload]
            model.where[i] = None if y is None else int(y)  # type: ignore[call-overload]
        elif x:
            await asyncio.sleep(0)
    await _settle()
    for i, peer in enumerate(peers):
        assert _lines(peer) == model.seen[i], f"peer {i}"
    assert tally.lines_out == sum(len(s) for s in model.seen) - sum(
        1 for kind, _, _ in ops if kind == "write"
    )
    assert not coalescer.groups and not coalescer.dirty


@settings(max_examples=150)
@given(st.lists(op, max_size=40))
def test_any_interleaving_keeps_each_members_lines_exact_and_in_order(
    ops: list[tuple[str, object, object]],
) -> None:
    asyncio.run(_run(ops))


def test_lines_left_by_a_closed_loop_do_not_stop_the_next_loops_lines() -> None:
    room = Group("#r", Tally())
    loop = asyncio.new_event_loop()

    def say_then_stop() -> None:
        loop.stop()  # the loop ends with this iteration, before the flush it schedules
        p = open_peer(Quiet())
        room.add(1, p.conn)
        room.send("lost with its loop")

    loop.call_soon(say_then_stop)
    loop.run_forever()
    loop.close()
    assert coalescer.groups == [room]  # left behind

    async def next_loop() -> list[str]:
        # A new server's room on the next loop (tests run one loop after another): what
        # the closed loop left scheduled must not stop these lines.
        p = open_peer(Quiet())
        room2 = Group("#r", Tally())
        room2.add(2, p.conn)
        room2.send("delivered")
        await _settle()
        return _lines(p)

    assert asyncio.run(next_loop()) == ["delivered"]
    assert room.batch is None  # the stale lines were dropped with their loop


async def test_a_member_removed_during_delivery_does_not_break_it() -> None:
    room = Group("#r", Tally())
    peers = [open_peer(Quiet()) for _ in range(3)]
    for i, p in enumerate(peers):
        room.add(i, p.conn)
    transport = peers[0].transport
    write = transport.write

    def write_then_drop_a_member(data: bytes | bytearray | memoryview) -> None:
        room.remove(2)  # what a slow-consumer policy may do from inside a write
        transport.write = write  # type: ignore[method-assign]
        write(data)

    transport.write = write_then_drop_a_member  # type: ignore[method-assign]
    room.send("x")
    await _settle()
    # Every member of the moment the line was sent gets it, the one that left meanwhile too.
    assert [_lines(p) for p in peers] == [["x"], ["x"], ["x"]]
    assert len(room) == 2


class Broadcast(LineService):
    """The README's broadcast service, verbatim."""

    name = "broadcast"

    def __init__(self) -> None:
        self.everyone = twoway.Group("everyone")
        self.ids = itertools.count()

    def on_connect(self, conn: Conn) -> None:
        self.everyone.add(next(self.ids), conn)

    def on_line(self, conn: Conn, line: str) -> None:
        self.everyone.send(f"{conn.peer}: {line}", exclude=conn.group_key)

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        self.everyone.remove(conn.group_key)


async def test_a_broadcast_service_over_real_sockets() -> None:
    server = await twoway.serve(Broadcast(), "127.0.0.1", 0).start()
    port = server.sockets[0].getsockname()[1]
    try:
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await wait_until(lambda: server.connection_count == 3)
        (r0, w0), (r1, w1), (r2, w2) = clients
        w0.write(b"hello\nworld\n")
        me = f"127.0.0.1:{w0.get_extra_info('sockname')[1]}"
        for r in (r1, r2):
            assert await asyncio.wait_for(r.readline(), 5) == f"{me}: hello\n".encode()
            assert await asyncio.wait_for(r.readline(), 5) == f"{me}: world\n".encode()
        w2.close()
        await w2.wait_closed()
        w1.write(b"still here\n")
        you = f"127.0.0.1:{w1.get_extra_info('sockname')[1]}"
        assert await asyncio.wait_for(r0.readline(), 5) == f"{you}: still here\n".encode()
        for _, w in clients[:2]:
            w.close()
    finally:
        await server.shutdown(0)

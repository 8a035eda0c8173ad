"""The directory of remote members in ChatCore, and the effects a clustered core returns."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.chat import (
    ChatCore,
    Effect,
    Gone,
    Log,
    Presence,
    Said,
    Send,
    TopicSet,
    ToRoom,
)

A = 1 << 32  # node 1's first client id is A | 1
B = 2 << 32  # node 2's
C = 3 << 32  # node 3's


def sent(effects: Sequence[Effect], cid: int) -> list[str]:
    return [e.text for e in effects if isinstance(e, Send) and e.cid == cid]


def to_room(effects: Sequence[Effect]) -> list[tuple[str, str, int | None]]:
    return [(e.room, e.text, e.exclude) for e in effects if isinstance(e, ToRoom)]


def bus(effects: Sequence[Effect]) -> list[Effect]:
    return [e for e in effects if isinstance(e, Presence | Gone | Said | TopicSet)]


def last_send(core: ChatCore, cid: int, line: str) -> str:
    return sent(core.line(cid, line, 0.0), cid)[-1]


@pytest.fixture
def core() -> ChatCore:
    """Node 1 with one local client, alice (A|1), and bob (B|1) of node 2 in the lobby."""
    c = ChatCore(cluster=True)
    c.connect(A | 1, 0.0)
    c.line(A | 1, "/nick alice", 0.0)
    c.remote_presence(B | 1, "bob", "#lobby", 2)
    return c


# -- effects for the bus -------------------------------------------------------------------


def test_without_cluster_no_bus_effects() -> None:
    c = ChatCore()
    out = c.connect(1, 0.0)
    out += c.line(1, "hi", 0.0)
    out += c.line(1, "/nick x", 0.0)
    out += c.line(1, "/join r", 0.0)
    out += c.line(1, "/topic t", 0.0)
    out += c.line(1, "/me waves", 0.0)
    out += c.disconnect(1, "closed")
    assert bus(out) == []


def test_cluster_effects_for_every_change() -> None:
    c = ChatCore(cluster=True)
    assert bus(c.connect(A | 1, 0.0)) == [Presence(A | 1, "guest1", "#lobby")]
    assert c.line(A | 1, "hi", 0.0) == [
        ToRoom("#lobby", "guest1: hi", A | 1),
        Said("#lobby", "guest1: hi"),
    ]
    assert bus(c.line(A | 1, "/me waves", 0.0)) == [Said("#lobby", "* guest1 waves")]
    assert bus(c.line(A | 1, "/nick ann", 0.0)) == [Presence(A | 1, "ann", "#lobby")]
    assert bus(c.line(A | 1, "/join Dev", 0.0)) == [Presence(A | 1, "ann", "#dev")]
    assert bus(c.line(A | 1, "/topic ship it", 0.0)) == [TopicSet("#dev", "ship it", "ann")]
    assert bus(c.line(A | 1, "/part", 0.0)) == [Presence(A | 1, "ann", "#lobby")]
    assert bus(c.line(A | 1, "/quit bye", 0.0)) == [Gone(A | 1, "quit: bye")]
    assert c.connect(A | 2, 0.0)
    assert bus(c.disconnect(A | 2, "idle")) == [Gone(A | 2, "idle")]
    # Errors change nothing: nothing to publish.
    c.connect(A | 3, 0.0)
    assert bus(c.line(A | 3, "/nick", 0.0)) == []
    assert bus(c.line(A | 3, "/join #lobby", 0.0)) == []


# -- the directory in commands ---------------------------------------------------------------


def test_remote_join_announced_to_local_members() -> None:
    c = ChatCore(cluster=True)
    c.connect(A | 1, 0.0)
    assert c.remote_presence(B | 1, "bob", "#lobby", 2) == [
        ToRoom("#lobby", "*** bob joined #lobby", None)
    ]
    assert c.remote_presence(B | 1, "bob", "#lobby", 2) == []  # a repeat: nothing new
    assert c.is_remote(B | 1) and not c.is_remote(A | 1)
    assert list(c.members("#lobby")) == [A | 1]  # delivery stays local
    assert c.remote_count == 1


def test_who_rooms_peers_count_remote_members(core: ChatCore) -> None:
    core.remote_presence(B | 2, "carol", "#dev", 2)
    assert last_send(core, A | 1, "/who") == "*** in #lobby: alice, bob"
    assert last_send(core, A | 1, "/rooms") == "*** rooms: #dev (1), #lobby (2)"
    assert last_send(core, A | 1, "/peers") == "You have 2 peers on 2 servers (0 on this one)"
    core.connect(A | 2, 0.0)
    core.remote_presence(C | 1, "dave", "#dev", 3)
    assert last_send(core, A | 1, "/peers") == "You have 4 peers on 3 servers (1 on this one)"
    for gone in (B | 1, B | 2, C | 1):
        core.remote_gone(gone, "quit")
    assert last_send(core, A | 1, "/peers") == "You have 1 peer on this server"
    core.remote_presence(B | 1, "bob", "#lobby", 2)
    core.remote_presence(B | 2, "carol", "#dev", 2)
    out = core.line(A | 1, "/join dev", 0.0)
    assert "*** 1 peer here: carol" in sent(out, A | 1)


def test_nick_held_remotely_is_taken(core: ChatCore) -> None:
    assert last_send(core, A | 1, "/nick Bob") == 'error: nick "Bob" is already taken'
    core.remote_gone(B | 1, "quit")
    out = core.line(A | 1, "/nick Bob", 0.0)
    assert to_room(out) == [("#lobby", "*** alice is now known as Bob", None)]


def test_guest_numbers_skip_remote_guest_nicks() -> None:
    c = ChatCore(cluster=True)
    # Its block (after Redis lost its data, say, the others' guests may hold its numbers).
    c.lease_guests(1, 4)
    c.remote_presence(B | 1, "guest1", "#lobby", 2)
    c.remote_presence(B | 2, "guest2", "#lobby", 2)
    assert "*** you are guest3" in sent(c.connect(A | 1, 0.0), A | 1)
    c.remote_gone(B | 1, "closed")  # guest1 is free again
    assert "*** you are guest1" in sent(c.connect(A | 2, 0.0), A | 2)


def test_msg_to_remote_nick_is_a_send_for_the_bus(core: ChatCore) -> None:
    out = core.line(A | 1, "/msg BOB hi \x1b there", 0.0)
    assert out == [
        Send(B | 1, "[msg from alice] hi ^[ there"),
        Send(A | 1, "[msg to bob] hi ^[ there"),
    ]
    assert last_send(core, A | 1, "/msg nobody x") == 'error: no such nick "nobody"'


def test_remote_rename_and_moves_are_announced(core: ChatCore) -> None:
    assert core.remote_presence(B | 1, "robert", "#lobby", 2) == [
        ToRoom("#lobby", "*** bob is now known as robert", None)
    ]
    assert core.remote_presence(B | 1, "rob", "#dev", 2) == [
        ToRoom("#lobby", "*** robert is now known as rob", None),
        ToRoom("#lobby", "*** rob left #lobby", None),
        ToRoom("#dev", "*** rob joined #dev", None),
    ]
    assert core.rooms() == ["#dev", "#lobby"]
    core.remote_presence(B | 1, "rob", "#lobby", 2)
    assert core.rooms() == ["#lobby"]  # the remote-only room went with its last member


def test_remote_gone(core: ChatCore) -> None:
    assert core.remote_gone(B | 1, "quit: later") == [
        ToRoom("#lobby", "*** bob left #lobby (quit: later)", None)
    ]
    assert core.remote_gone(B | 1, "quit") == []  # idempotent
    assert last_send(core, A | 1, "/who") == "*** in #lobby: alice"


def test_history_spans_nodes_and_survives_with_remote_members_only() -> None:
    c = ChatCore(cluster=True, history=3)
    c.remote_presence(B | 1, "bob", "#dev", 2)
    assert c.remote_message("#dev", "bob: one") == [ToRoom("#dev", "bob: one", None)]
    c.remote_message("#dev", "bob: two\x07")
    c.connect(A | 1, 0.0)
    c.line(A | 1, "/join dev", 0.0)
    c.line(A | 1, "mine", 0.0)
    c.line(A | 1, "/part", 0.0)  # nobody local left: the room stays, bob is in it
    out = c.connect(A | 2, 0.0) + c.line(A | 2, "/join dev", 0.0)
    assert [t for t in sent(out, A | 2) if t.startswith("[history]")] == [
        "[history] bob: one",
        "[history] bob: two^G",
        "[history] guest1: mine",
    ]
    assert c.remote_message("#nowhere", "x: y") == []  # no such room here: ignored
    assert c.counters.remote_messages == 2


def test_remote_topic(core: ChatCore) -> None:
    assert core.remote_topic("#lobby", "news", "bob") == [
        ToRoom("#lobby", "*** bob set the topic: news", None)
    ]
    assert last_send(core, A | 1, "/topic") == "*** topic for #lobby: news"
    assert core.remote_topic("#nowhere", "x", "bob") == []


def test_drop_node(core: ChatCore) -> None:
    core.remote_presence(B | 2, "carol", "#dev", 2)
    core.remote_presence((3 << 32) | 1, "dave", "#lobby", 3)
    out = core.drop_node(2, "server lost")
    assert to_room(out) == [
        ("#lobby", "*** bob left #lobby (server lost)", None),
        ("#dev", "*** carol left #dev (server lost)", None),
    ]
    assert [e for e in out if isinstance(e, Log)] == [
        Log("2 client(s) of server 2 gone (server lost)")
    ]
    assert last_send(core, A | 1, "/who") == "*** in #lobby: alice, dave"
    assert core.rooms() == ["#lobby"]
    assert core.drop_node(2, "server lost") == []


def test_snapshot_replaces_what_was_known_of_a_node(core: ChatCore) -> None:
    core.remote_presence(B | 2, "carol", "#lobby", 2)
    out = core.remote_snapshot(
        2, [(B | 1, "bob", "#dev"), (B | 3, "erin", "#lobby")], [("#dev", "remote topic")]
    )
    assert to_room(out) == [
        ("#lobby", "*** bob left #lobby", None),
        ("#dev", "*** bob joined #dev", None),
        ("#lobby", "*** erin joined #lobby", None),
        ("#lobby", "*** carol left #lobby (left)", None),
    ]
    assert core.remote_snapshot(2, [(B | 1, "bob", "#dev"), (B | 3, "erin", "#lobby")]) == []
    core.line(A | 1, "/join dev", 0.0)
    assert last_send(core, A | 1, "/topic") == "*** topic for #dev: remote topic"


def test_local_snapshot() -> None:
    c = ChatCore(cluster=True)
    c.connect(A | 1, 0.0)
    c.connect(A | 2, 0.0)
    c.line(A | 2, "/join dev", 0.0)
    c.line(A | 2, "/topic t", 0.0)
    c.remote_presence(B | 1, "bob", "#lobby", 2)
    assert c.local_presence() == [(A | 1, "guest1", "#lobby"), (A | 2, "guest2", "#dev")]
    assert c.local_topics() == [("#dev", "t")]
    assert c.local_rooms() == ["#dev", "#lobby"]


def test_malformed_remote_values_are_ignored() -> None:
    c = ChatCore(cluster=True)
    c.connect(A | 1, 0.0)
    assert c.remote_presence(B | 1, "bad nick", "#lobby", 2) == []
    assert c.remote_presence(B | 1, "bob", "#bad room", 2) == []
    assert c.remote_presence(A | 1, "bob", "#lobby", 1) == []  # a local id
    assert c.remote_count == 0
    # Room names are normalised as the local commands do.
    assert c.remote_presence(B | 1, "bob", "Dev", 2) == [
        ToRoom("#dev", "*** bob joined #dev", None)
    ]


def test_notice_goes_to_rooms_with_local_members(core: ChatCore) -> None:
    core.remote_presence(B | 2, "carol", "#dev", 2)
    assert core.notice("*** notice: x") == [ToRoom("#lobby", "*** notice: x", None)]
    assert core.notice("*** notice: y", "#dev") == []  # nobody local there
    assert core.notice("*** notice: z", "#lobby") == [ToRoom("#lobby", "*** notice: z", None)]


# -- nick collisions after a partition ------------------------------------------------------


def test_collision_lower_remote_id_wins() -> None:
    c = ChatCore(cluster=True)
    c.connect(B | 1, 0.0)  # this node is node 2: its ids are higher than node 1's
    c.line(B | 1, "/nick zed", 0.0)
    c.connect(B | 2, 0.0)
    out = c.remote_presence(A | 1, "ZED", "#lobby", 1)
    assert out == [
        ToRoom("#lobby", "*** ZED joined #lobby", None),
        Send(B | 1, "*** nick collision: you are now guest1"),
        ToRoom("#lobby", "*** zed is now known as guest1", B | 1),
        Log("nick collision: zed is now known as guest1"),
        Presence(B | 1, "guest1", "#lobby"),
    ]
    assert c.nick(B | 1) == "guest1"
    assert last_send(c, B | 2, "/msg zed hi") == "[msg to ZED] hi"


def test_collision_higher_remote_id_loses_locally_nothing_changes() -> None:
    c = ChatCore(cluster=True)
    c.connect(A | 1, 0.0)
    c.line(A | 1, "/nick zed", 0.0)
    out = c.remote_presence(B | 1, "zed", "#lobby", 2)
    assert out == [ToRoom("#lobby", "*** zed joined #lobby", None)]
    assert c.nick(A | 1) == "zed"
    # /msg reaches the local holder while the other node renames its client.
    assert c.line(A | 1, "/msg zed me", 0.0)[0] == Send(A | 1, "[msg from zed] me")
    out = c.remote_presence(B | 1, "guest7", "#lobby", 2)
    assert out == [ToRoom("#lobby", "*** zed is now known as guest7", None)]
    assert last_send(c, A | 1, "/who") == "*** in #lobby: guest7, zed"


def test_collision_on_guest_nicks_gives_a_fresh_guest() -> None:
    c = ChatCore(cluster=True)
    c.lease_guests(1, 4)  # its block (the remote guests hold numbers of it after a reset)
    c.connect(B | 1, 0.0)  # guest1, on node 2
    c.remote_presence((3 << 32) | 9, "guest2", "#lobby", 3)
    out = c.remote_presence(A | 1, "guest1", "#lobby", 1)
    assert sent(out, B | 1) == ["*** nick collision: you are now guest3"]
    assert bus(out) == [Presence(B | 1, "guest3", "#lobby")]
    # guest1 comes back to the pool when the remote holder lets it go.
    c.remote_gone(A | 1, "closed")
    assert "*** you are guest1" in sent(c.connect(B | 2, 0.0), B | 2)


def test_two_remote_holders_of_one_nick() -> None:
    c = ChatCore(cluster=True)
    c.connect(B | 1, 0.0)
    c.remote_presence((3 << 32) | 1, "x", "#lobby", 3)
    c.remote_presence(A | 1, "x", "#lobby", 1)
    assert c.line(B | 1, "/msg x hi", 0.0)[0].cid == A | 1  # type: ignore[union-attr]
    c.remote_gone(A | 1, "quit")
    assert c.line(B | 1, "/msg x hi", 0.0)[0].cid == (3 << 32) | 1  # type: ignore[union-attr]
    c.remote_gone((3 << 32) | 1, "quit")
    assert to_room(c.line(B | 1, "/nick x", 0.0)) == [
        ("#lobby", "*** guest1 is now known as x", None)
    ]


# -- two cores joined by a perfect (but slow) bus agree ---------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),  # which node acts
        st.sampled_from(["connect", "nick", "join", "part", "quit", "deliver"]),
        st.integers(0, 5),  # which client, or which nick/room
    ),
    max_size=60,
)


class _Node:
    def __init__(self, node: int) -> None:
        self.node = node
        self.core = ChatCore(cluster=True)
        self.next = 0
        self.outbox: list[Effect] = []  # published, not yet delivered to the other node

    def local(self) -> list[int]:
        return sorted(cid for cid, _, _ in self.core.local_presence())

    def do(self, effects: list[Effect]) -> None:
        self.outbox += [e for e in effects if isinstance(e, Presence | Gone)]


def _deliver(src: _Node, dst: _Node, n: int | None = None) -> None:
    """Hand ``n`` (all if None) of src's published effects to dst, in order."""
    batch = src.outbox[:] if n is None else src.outbox[:n]
    del src.outbox[: len(batch)]
    for e in batch:
        if isinstance(e, Presence):
            dst.do(dst.core.remote_presence(e.cid, e.nick, e.room, src.node))
        else:
            assert isinstance(e, Gone)
            dst.do(dst.core.remote_gone(e.cid, e.reason))


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_two_nodes_converge_with_unique_nicks(ops: list[tuple[int, str, int]]) -> None:
    nodes = {1: _Node(1), 2: _Node(2)}
    for who, op, k in ops:
        me, other = nodes[who], nodes[3 - who]
        cids = me.local()
        if op == "connect":
            me.next += 1
            me.do(me.core.connect((who << 32) | me.next, 0.0))
        elif op == "deliver":
            _deliver(me, other, k)
        elif cids:
            cid = cids[k % len(cids)]
            line = {"nick": f"/nick n{k}", "join": f"/join r{k % 3}", "part": "/part"}.get(
                op, "/quit"
            )
            me.do(me.core.line(cid, line, 0.0))
    while nodes[1].outbox or nodes[2].outbox:  # the partition heals
        _deliver(nodes[1], nodes[2])
        _deliver(nodes[2], nodes[1])
    views = []
    for n in nodes.values():
        everyone = n.core.local_presence() + [
            (cid, nick, room) for cid, nick, room in nodes[3 - n.node].core.local_presence()
        ]
        views.append(sorted(everyone))
        # What this node's /who would show for each room equals the cluster's truth.
        for cid in n.local():
            room = n.core.room_of(cid)
            who = sent(n.core.line(cid, "/who", 0.0), cid)[0]
            names = sorted(nick for _, nick, r in everyone if r == room)
            assert who == f"*** in {room}: {', '.join(sorted(names, key=str.lower))}"
    nicks = [nick.lower() for _, nick, _ in views[0]]
    assert len(nicks) == len(set(nicks)), views[0]
    assert nodes[1].core.remote_count == len(nodes[2].local())
    assert nodes[2].core.remote_count == len(nodes[1].local())


# -- backfill: history from before this server joined ------------------------------------


def _history_of(core: ChatCore, cid: int, line: str) -> list[str]:
    return [t for t in sent(core.line(cid, line, 0.0), cid) if t.startswith("[history]")]


def test_backfill_goes_before_what_the_room_already_has() -> None:
    c = ChatCore(cluster=True, history=4)
    c.connect(A | 1, 0.0)
    c.line(A | 1, "/nick alice", 0.0)
    c.line(A | 1, "said here", 0.0)
    out = c.backfill([("#lobby", "bob: one"), ("#lobby", "bob: two\x1b"), ("#dev", "carol: x")])
    assert out is None  # delivered to nobody
    c.connect(A | 2, 0.0)
    assert _history_of(c, A | 2, "/join lobby") == []  # (already there: an error)
    welcome = sent(c.connect(A | 3, 0.0), A | 3)
    assert [t for t in welcome if t.startswith("[history]")] == [
        "[history] bob: one",
        "[history] bob: two^[",  # escaped like any remote line
        "[history] alice: said here",
    ]


def test_backfill_for_a_room_that_does_not_exist_yet_waits_for_it() -> None:
    c = ChatCore(cluster=True, history=2)
    c.connect(A | 1, 0.0)
    c.backfill([("#dev", "carol: 1"), ("#dev", "carol: 2"), ("#dev", "carol: 3")])
    assert _history_of(c, A | 1, "/join dev") == ["[history] carol: 2", "[history] carol: 3"]
    # Created by a remote member instead, the room gets it the same way.
    c.backfill([("#ops", "dave: up")])
    c.remote_presence(B | 1, "dave", "#ops", 2)
    assert _history_of(c, A | 1, "/join ops") == ["[history] dave: up"]


def test_backfill_is_bounded_and_off_without_history(monkeypatch: pytest.MonkeyPatch) -> None:
    from twoway.sansio.chat import cluster
    from twoway.sansio.chat.history import line_cost

    monkeypatch.setattr(cluster, "MAX_BACKFILL_ROOMS", 2)
    c = ChatCore(cluster=True, history=3)
    c.backfill([(f"#r{i}", f"x: {j}") for i in range(5) for j in range(10)])
    # Two rooms waiting, three lines each (the lines all cost the same).
    assert c.history_bytes == 2 * 3 * line_cost("x: 9")
    quiet = ChatCore(cluster=True, history=0)
    quiet.backfill([("#lobby", "x: y")])
    quiet.connect(A | 1, 0.0)
    assert _history_of(quiet, A | 1, "/join dev") == []

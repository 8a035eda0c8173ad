"""Resume sessions that outlive a process or move between servers, without sockets: the
ticket records a store keeps, tickets given back after a restart, nicks held on another
server's word, the shared-store resume (Lookup / resumed) and what a client missed read
from the shared log (StreamReplay)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.bus import decode_items, encode_items
from twoway.sansio.bus.replay import StreamReplay
from twoway.sansio.chat import ChatCore, Gone, Held, Lookup, Presence, Said, Send
from twoway.sansio.chat.resume import (
    Ticket,
    TokenTable,
    ticket_from_record,
    ticket_record,
    token_key,
)
from twoway.services.chatstore import SESSION_KIND, RecordSessions, load_sessions
from twoway.store import MemoryRecords


def _core(window: float = 60.0, prefix: str = "T") -> ChatCore:
    count = itertools.count()
    return ChatCore(tail=1000, resume_window=window, new_token=lambda: f"{prefix}{next(count)}")


def _texts(effects: list[Any], cid: int) -> list[str]:
    return [e.text for e in effects if isinstance(e, Send) and e.cid == cid]


def test_a_ticket_record_round_trips_and_keeps_its_age() -> None:
    ticket = Ticket(token_key("tok"), "alice", "#dev", "e1", 41, 7.0, True, 12)
    record = json.loads(json.dumps(ticket_record(ticket, 1000.0)))
    back = ticket_from_record(ticket.key, record, 1030.0)
    assert back == Ticket(ticket.key, "alice", "#dev", "e1", 41, -30.0, True, 12)
    assert "tok" not in json.dumps(record) and token_key("tok") != "tok"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@given(st.text(max_size=8), json_values)
def test_a_malformed_record_is_skipped_never_raised(key: str, record: Any) -> None:
    got = ticket_from_record(key, record, 100.0)
    assert got is None or isinstance(got, Ticket)


def test_restored_tickets_count_their_age_and_expire() -> None:
    table = TokenTable(window=60.0)
    table.restore(
        [Ticket("k1", "alice", "#lobby", "e", 3, -50.0), Ticket("k2", "bob", "#x", "e", 0, -5.0)]
    )
    assert table.expire(1000.0) == []  # their ages count from the first call
    assert [t.nick for t in table.expire(1000.0 + 11.0)] == ["alice"]  # 61 s old by then
    assert [t.nick for t in table.expire(1000.0 + 56.0)] == ["bob"]


def test_a_session_survives_a_restart_through_records() -> None:
    records = MemoryRecords()
    first = _core()
    first.set_sessions(RecordSessions(records, wall=lambda: 5000.0))
    first.connect(1, 0.0)
    first.line(1, "/nick alice", 0.0)
    first.connect(2, 0.0)
    for i in range(3):
        first.line(2, f"before {i}", 1.0)
    first.disconnect(1, "server shutting down", 2.0)
    saved = records.load(SESSION_KIND)
    assert list(saved) == [token_key("T0")]

    # The next run: same history (as the SQLite store gives it back), ten seconds later.
    second = _core(prefix="S")
    second.restore("#lobby", "1", 3, ["guest2: before 0", "guest2: before 1", "guest2: before 2"])
    assert load_sessions(records, second, 60.0, 5010.0) == 1
    second.set_sessions(RecordSessions(records, wall=lambda: 5010.0))
    second.connect(7, 100.0)
    assert _texts(second.line(7, "/nick alice", 100.0), 7) == [
        'error: nick "alice" is already taken'
    ]
    second.connect(8, 101.0)
    second.line(7, "said after the restart", 101.0)
    out = _texts(second.line(8, "/resume T0", 101.0), 8)
    assert "*** resumed as alice in #lobby" in out
    assert "[history] guest1: said after the restart" in out
    assert "*** replayed 1 lines; 0 missed" in out
    assert records.load(SESSION_KIND) == {}  # single use: the record is gone
    second.connect(9, 102.0)
    assert _texts(second.line(9, "/resume T0", 102.0), 9) == [
        "error: resume refused (already used)"
    ]


def test_sessions_past_their_window_are_not_restored() -> None:
    records = MemoryRecords()
    records.put(SESSION_KIND, "old", ticket_record(Ticket("old", "x", "#lobby", "e", 0, 0.0), 10.0))
    records.put(SESSION_KIND, "junk", {"nick": 3})
    assert load_sessions(records, _core(), 60.0, 500.0) == 0
    assert records.load(SESSION_KIND) == {}


def test_a_nick_held_on_another_servers_word() -> None:
    core = _core()
    core.connect(1, 0.0)
    core.remote_held("alice", "k", True, 0.0)
    assert _texts(core.line(1, "/nick alice", 1.0), 1) == ['error: nick "alice" is already taken']
    core.remote_held("alice", "k", False, 2.0)
    assert "error" not in " ".join(_texts(core.line(1, "/nick Alice", 2.0), 1))
    core.remote_held("bob", "k2", True, 3.0)
    core.expire(64.0)  # a window after it was given
    assert "error" not in " ".join(_texts(core.line(1, "/nick bob", 64.0), 1))


def test_a_cluster_departure_holds_the_nick_everywhere() -> None:
    core = ChatCore(cluster=True, tail=100, resume_window=60.0, new_token=lambda: "T")
    core.connect(1, 0.0)
    core.line(1, "/nick alice", 0.0)
    effects = core.disconnect(1, "reset", 1.0)
    assert Held("alice", token_key("T"), True) in effects
    assert decode_items(encode_items([Held("alice", "k", False)])) == [Held("alice", "k", False)]


def test_shared_sessions_look_the_ticket_up_and_replay_what_the_log_gave() -> None:
    core = ChatCore(cluster=True, tail=100, resume_window=60.0, new_token=lambda: "U")
    core.set_sessions(None, shared=True)
    core.remote_held("alice", token_key("elsewhere"), True, 0.0)
    core.connect(5, 1.0)
    effects = core.line(5, "/resume elsewhere", 1.0)
    assert effects == [Lookup(5, token_key("elsewhere"))]
    ticket = Ticket(token_key("elsewhere"), "alice", "#lobby", "e9", 12, -3.0)
    out = core.resumed(5, ticket.key, ticket, (["bob: one", "carol: two"], 0, 0), 1.0)
    texts = _texts(out, 5)
    assert texts[texts.index("*** resumed as alice in #lobby") + 1 :][:3] == [
        "[history] bob: one",
        "[history] carol: two",
        "*** replayed 2 lines; 0 missed",
    ]
    assert core.nick(5) == "alice"
    assert Held("alice", ticket.key, False) in out
    assert Presence(5, "alice", "#lobby") in out
    core.connect(6, 2.0)
    core.line(6, "/resume gone", 2.0)
    refused = core.resumed(6, token_key("gone"), None, None, 2.0)
    assert _texts(refused, 6) == ["error: resume refused (unknown token)"]


def _entry(i: int, node: int, items: list[Any], runs: str = "") -> tuple[bytes, dict[bytes, bytes]]:
    fields = {b"n": str(node).encode(), b"s": str(i).encode(), b"d": encode_items(items)}
    if runs:
        fields[b"q"] = runs.encode()
    return f"{100 + i}-0".encode(), fields


def test_stream_replay_skips_the_nodes_own_lines_before_its_departure() -> None:
    entries = [
        _entry(1, 1, [Said("#lobby", "a: mine before")], "#lobby 5 1"),
        _entry(
            2,
            2,
            [Said("#lobby", "b: other 1"), Said("#dev", "b: elsewhere")],
            "#lobby 6 1,#dev 1 1",
        ),
        _entry(
            3,
            1,
            [Said("#lobby", "a: still before"), Gone(7, "reset"), Said("#lobby", "a: after")],
            "#lobby 7 2",
        ),
        _entry(
            4, 2, [Said("#lobby", "*** not a line"), Said("#lobby", "b: other 2")], "#lobby 9 2"
        ),
    ]
    replay = StreamReplay(1, 7, "#lobby", limit=10)
    replay.feed(entries[:2])
    replay.feed(entries[2:])
    assert replay.lines == ["b: other 1", "a: after", "b: other 2"]
    assert (replay.more, replay.not_kept, replay.last_id) == (0, 0, b"104-0")
    capped = StreamReplay(1, 7, "#lobby", limit=2, seq=2, trimmed=True)
    capped.feed(entries)
    assert capped.lines == ["b: other 1", "a: after"] and capped.more == 1
    assert capped.not_kept == 2  # lines 3 and 4 of #lobby are no longer in the log


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.booleans()), max_size=30), st.integers(0, 30))
def test_stream_replay_gives_every_missed_line_once_in_order(
    said: list[tuple[int, bool]], cut: int
) -> None:
    # Node 1's client 7 leaves after `cut` items; every line after that which it did not
    # have (node 2's, and node 1's after the Gone) is replayed once, in log order.
    items: list[tuple[int, Any]] = []
    for n, (node, _) in enumerate(said):
        items.append((node, Said("#r", f"{node}:{n}")))
    cut = min(cut, len(items))
    items.insert(cut, (1, Gone(7, "reset")))
    entries = [_entry(i + 1, node, [item]) for i, (node, item) in enumerate(items)]
    replay = StreamReplay(1, 7, "#r", limit=1000)
    replay.feed(entries)
    want = [
        item.text
        for i, (node, item) in enumerate(items)
        if isinstance(item, Said) and (node == 2 or i > cut)
    ]
    assert replay.lines == want

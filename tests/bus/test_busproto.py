"""The bus protocol without I/O: the codec, duplicates, gaps, unknown and silent nodes."""

from __future__ import annotations

import json

import pytest

from twoway.sansio.busproto import (
    Ask,
    Bye,
    Entry,
    Heartbeat,
    Hello,
    Inbox,
    Lost,
    NodeGap,
    ProtocolError,
    Received,
    RoomGap,
    Unknown,
    decode_entry,
    decode_items,
    decode_runs,
    encode_items,
    room_runs,
)
from twoway.sansio.chat import Gone, Presence, Said, Send, TopicSet

EVERY_KIND = [
    Said("#lobby", 'bob: héllo \t"quoted"'),
    Presence((7 << 32) | 1, "bob", "#lobby"),
    Gone((7 << 32) | 1, "quit: bye"),
    Send((1 << 62) | 5, "[msg from x] hi"),
    TopicSet("#dev", "ship it", "bob"),
    Hello((((7 << 32) | 1, "bob", "#lobby"),), (("#dev", "t"),)),
    Hello(()),
    Ask(0),
    Ask(3),
    Lost((("#lobby", 4),)),
    Heartbeat(),
    Bye(),
]


def test_codec_round_trip_every_kind() -> None:
    data = encode_items(EVERY_KIND)
    assert decode_items(data) == EVERY_KIND
    assert "héllo".encode() in data  # UTF-8, not \\u escapes: smaller entries


def test_room_runs_count_consecutive_lines_of_a_room() -> None:
    items = [
        Said("#a", "x"),
        Presence(1, "n", "#b"),  # not a room line: does not break the run
        Said("#a", "y"),
        Said("#c", "y"),
        Said("#a", "z"),
    ]
    assert room_runs(items) == [("#a", 2), ("#c", 1), ("#a", 1)]
    assert room_runs([Heartbeat()]) == []


def test_decode_runs() -> None:
    assert decode_runs(b"#lobby 41 3,#dev 7 1") == [("#lobby", 41, 3), ("#dev", 7, 1)]
    assert decode_runs(b"") == []
    for bad in (b"#a 1", b"#a x 1", b"#a 1 2 3", b"#a 1 2,"):
        with pytest.raises(ProtocolError):
            decode_runs(bad)


def test_unknown_kinds_are_skipped() -> None:
    data = json.dumps([["future", 1, 2], ["msg", "#a", "x"]]).encode()
    assert decode_items(data) == [Said("#a", "x")]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"msg": 1}',
        b"[[]]",
        b'[["msg", "#a"]]',
        b'[["msg", 1, "x"]]',
        b'[["presence", "1", "n", "#a"]]',
        b'[["hello", [[1, "n"]], []]]',
        b'[["lost", [["#a", "4"]]]]',
        b"\xff\xfe",
    ],
)
def test_malformed_items_raise(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_items(data)


def test_decode_entry_fields() -> None:
    fields = {b"n": b"3", b"s": b"17", b"d": encode_items([Said("#a", "x")]), b"q": b"#a 42 1"}
    assert decode_entry(fields) == Entry(3, 17, [Said("#a", "x")], [("#a", 42, 1)])
    assert decode_entry(fields, items=False) == Entry(3, 17, (), [("#a", 42, 1)])
    assert decode_entry({b"n": b"3", b"s": b"1", b"d": b"[]", b"q": b""}).runs == []
    for bad in ({b"s": b"1"}, {b"n": b"x", b"s": b"1"}, {b"n": b"1", b"s": b"1", b"q": b"a"}):
        with pytest.raises(ProtocolError):
            decode_entry(bad)


# -- the inbox -------------------------------------------------------------------------------

HELLO = Hello(())


def said(node: int, nseq: int, *rooms_seqs: tuple[str, int]) -> Entry:
    items = [Said(room, f"line {seq}") for room, seq in rooms_seqs]
    return Entry(node, nseq, items, [(room, seq, 1) for room, seq in rooms_seqs])


def received(events: list[object]) -> list[object]:
    return [e.item for e in events if isinstance(e, Received)]


def test_inbox_delivers_in_order_and_drops_duplicates() -> None:
    inbox = Inbox(1)
    assert inbox.feed(Entry(2, 5, [HELLO]), 0.0) == [Received(2, HELLO)]
    e6 = said(2, 6, ("#a", 1))
    assert received(inbox.feed(e6, 0.0)) == [Said("#a", "line 1")]
    assert inbox.feed(e6, 0.0) == []  # the same entry again (a repeated publish)
    assert inbox.feed(Entry(2, 3, [HELLO]), 0.0) == []  # older: already seen
    assert inbox.duplicates == 2
    assert received(inbox.feed(said(2, 7, ("#a", 2)), 0.0)) == [Said("#a", "line 2")]


def test_inbox_node_gap_reported_before_the_items() -> None:
    inbox = Inbox(1)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    out = inbox.feed(Entry(2, 5, [Gone(1, "x")]), 0.0)
    assert out == [NodeGap(2, 3), Received(2, Gone(1, "x"))]


def test_inbox_room_gaps_across_nodes() -> None:
    inbox = Inbox(1)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.feed(Entry(3, 1, [HELLO]), 0.0)
    assert inbox.feed(said(2, 2, ("#a", 1), ("#b", 1)), 0.0)[-1] == Received(
        2, Said("#b", "line 1")
    )
    inbox.feed(said(3, 2, ("#a", 2)), 0.0)  # room numbers are shared by every node
    out = inbox.feed(said(2, 3, ("#a", 6), ("#b", 2)), 0.0)
    assert out[0] == RoomGap("#a", 3)
    assert [e for e in out if isinstance(e, RoomGap)] == [RoomGap("#a", 3)]


def test_inbox_own_entries_only_number_rooms() -> None:
    inbox = Inbox(1)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.feed(said(2, 2, ("#a", 1)), 0.0)
    assert inbox.feed(said(1, 1, ("#a", 2)), 0.0) == []  # ours: delivered locally already
    assert received(inbox.feed(said(2, 3, ("#a", 3)), 0.0)) == [Said("#a", "line 3")]


def test_inbox_stream_reset_restarts_room_numbers_and_covers_one_gap() -> None:
    inbox = Inbox(1)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.feed(said(2, 2, ("#a", 50)), 0.0)
    inbox.stream_reset()  # the caller announced "messages may have been missed"
    out = inbox.feed(said(2, 9, ("#a", 1)), 0.0)
    assert out == [Received(2, Said("#a", "line 1"))]  # no second notice, no bogus gap
    assert inbox.feed(said(2, 11, ("#a", 2)), 0.0)[0] == NodeGap(2, 1)  # later gaps count


def test_inbox_unknown_node_is_asked_for_its_hello() -> None:
    inbox = Inbox(1, ask_again=3.0)
    assert inbox.feed(Entry(2, 1, [Heartbeat()]), 0.0) == [
        Received(2, Heartbeat()),
        Unknown(2),
    ]
    assert Unknown(2) not in inbox.feed(Entry(2, 2, [Heartbeat()]), 1.0)
    assert Unknown(2) in inbox.feed(Entry(2, 3, [Heartbeat()]), 3.5)  # still no Hello
    assert Unknown(2) not in inbox.feed(Entry(2, 4, [HELLO]), 4.0)
    assert Unknown(2) not in inbox.feed(Entry(2, 5, [Heartbeat()]), 9.0)


def test_inbox_asked_all_delays_asking_newcomers() -> None:
    inbox = Inbox(1, ask_again=3.0)
    inbox.asked_all(10.0)
    assert Unknown(2) not in inbox.feed(Entry(2, 1, [Heartbeat()]), 11.0)
    assert Unknown(2) in inbox.feed(Entry(2, 2, [Heartbeat()]), 13.5)


def test_inbox_silence_expires_nodes_once() -> None:
    inbox = Inbox(1, silence=3.5)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.feed(Entry(3, 1, [HELLO]), 0.0)
    inbox.feed(Entry(3, 2, [Heartbeat()]), 3.0)
    assert inbox.expired(3.4) == []
    assert inbox.expired(3.6) == [2]
    assert inbox.expired(5.0) == []  # reported once
    assert not inbox.is_alive(2) and inbox.is_alive(3)
    # It comes back: alive again, and unknown until its Hello arrives.
    assert Unknown(2) in inbox.feed(Entry(2, 2, [Heartbeat()]), 6.0)
    assert inbox.is_alive(2)


def test_inbox_resume_restarts_silence_clocks() -> None:
    inbox = Inbox(1, silence=3.5)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.resume(10.0)  # we were cut off from 0 to 10: that says nothing about node 2
    assert inbox.expired(12.0) == []
    assert inbox.expired(14.0) == [2]


def test_inbox_forget_and_forget_after() -> None:
    inbox = Inbox(1, silence=1.0, forget_after=10.0)
    inbox.feed(Entry(2, 5, [HELLO]), 0.0)
    inbox.forget(2)
    assert inbox.feed(Entry(2, 9, [Bye()]), 0.0) == [Received(2, Bye()), Unknown(2)]  # afresh
    inbox.feed(Entry(3, 1, [HELLO]), 0.0)
    assert inbox.expired(2.0) == [2, 3]
    inbox.expired(20.0)  # long dead: forgotten
    assert inbox.feed(Entry(3, 50, [HELLO]), 21.0) == [Received(3, HELLO)]  # no gap: afresh


def test_inbox_room_memory_is_bounded() -> None:
    inbox = Inbox(1, max_rooms=2)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    inbox.feed(said(2, 2, ("#a", 1), ("#b", 1), ("#c", 1)), 0.0)  # #a forgotten
    out = inbox.feed(said(2, 3, ("#a", 9), ("#c", 5)), 0.0)
    assert [e for e in out if isinstance(e, RoomGap)] == [RoomGap("#c", 3)]


def test_inbox_numbers_runs() -> None:
    inbox = Inbox(1)
    inbox.feed(Entry(2, 1, [HELLO]), 0.0)
    items = [Said("#a", "1"), Said("#a", "2"), Said("#a", "3")]
    assert inbox.feed(Entry(2, 2, items, [("#a", 10, 3)]), 0.0)  # a first baseline
    out = inbox.feed(Entry(2, 3, [Said("#a", "4")], [("#a", 13, 1)]), 0.0)
    assert out == [Received(2, Said("#a", "4"))]  # 10, 11, 12 then 13: no gap
    out = inbox.feed(Entry(2, 4, [Said("#a", "5")], [("#a", 20, 1)]), 0.0)
    assert out[0] == RoomGap("#a", 6)

"""The bus inbox without I/O: duplicates, gaps, unknown and silent nodes, and what one read
of the log asks of the bus."""

from __future__ import annotations

from twoway.sansio.bus import (
    Ask,
    Backfill,
    Bye,
    Entry,
    Heartbeat,
    Hello,
    Inbox,
    Missed,
    NodeGap,
    NodeLost,
    Received,
    RoomGap,
    Unknown,
    backfill,
    encode_items,
)
from twoway.sansio.chat import Gone, Said

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


# -- Inbox.read: raw entries of one read of the log ---------------------------------------------


def raw(node: int, nseq: int, *items: object, q: bytes = b"") -> dict[bytes, bytes]:
    """The fields of a stream entry, as redis-py returns them."""
    fields = {b"n": str(node).encode(), b"s": str(nseq).encode()}
    fields[b"d"] = encode_items(items)  # type: ignore[arg-type]
    if q:
        fields[b"q"] = q
    return fields


def test_read_passes_chat_items_and_gaps_on_in_order() -> None:
    inbox = Inbox(1)
    inbox.read([(b"1-0", raw(2, 1, HELLO)), (b"2-0", raw(2, 2, Said("#a", "x"), q=b"#a 1 1"))], 0)
    r = inbox.read([(b"3-0", raw(2, 5, Said("#a", "y"), q=b"#a 4 1"))], 0.0)
    # A node gap becomes one Missed (rooms unknown), then the room's own gap, then the line.
    assert r.events == [Missed(), RoomGap("#a", 2), Received(2, Said("#a", "y"))]
    assert (r.ask, r.reply, r.skipped) == ([], False, [])


def test_read_gives_one_missed_however_many_node_gaps() -> None:
    inbox = Inbox(1)
    inbox.read([(b"1-0", raw(2, 1, HELLO)), (b"2-0", raw(3, 1, HELLO))], 0.0)
    r = inbox.read([(b"3-0", raw(2, 4, Heartbeat())), (b"4-0", raw(3, 9, Heartbeat()))], 0.0)
    assert r.events == [Missed()]


def test_read_consumes_the_bus_own_items() -> None:
    inbox = Inbox(1)
    r = inbox.read([(b"1-0", raw(2, 1, HELLO, Heartbeat(), Ask(7)))], 0.0)
    assert r.events == [Received(2, HELLO)]  # the heartbeat and an Ask for node 7 stop here
    assert not r.reply
    assert inbox.read([(b"2-0", raw(2, 2, Ask(1)))], 0.0).reply  # for us
    assert inbox.read([(b"3-0", raw(2, 3, Ask(0)))], 0.0).reply  # for everybody
    r = inbox.read([(b"4-0", raw(2, 4, Bye()))], 0.0)
    assert r.events == [NodeLost(2, "server stopped")]
    assert not inbox.is_alive(2)  # forgotten


def test_read_asks_unknown_nodes() -> None:
    inbox = Inbox(1)
    assert inbox.read([(b"1-0", raw(5, 1, Heartbeat()))], 0.0).ask == [5]


def test_read_skips_what_is_not_bus_data_and_the_gap_shows() -> None:
    inbox = Inbox(1)
    inbox.read([(b"1-0", raw(2, 1, HELLO))], 0.0)
    bad = {b"n": b"2", b"s": b"2", b"d": b"not json"}
    r = inbox.read([(b"2-0", bad), (b"3-0", raw(2, 3, Said("#a", "z")))], 0.0)
    [(entry_id, why)] = r.skipped
    assert entry_id == b"2-0" and why.startswith("items are not JSON: ")
    assert r.events == [Missed(), Received(2, Said("#a", "z"))]


def test_read_own_entries_only_number_rooms() -> None:
    inbox = Inbox(1)
    inbox.read([(b"1-0", raw(2, 1, HELLO))], 0.0)
    own = [
        (b"2-0", raw(1, 1, HELLO)),  # no room lines: not even decoded
        (b"3-0", {b"n": b"1", b"s": b"2", b"d": b"undecoded", b"q": b"#a 1 2"}),
    ]
    assert inbox.read(own, 0.0).events == []
    r = inbox.read([(b"4-0", raw(2, 2, Said("#a", "3"), q=b"#a 3 1"))], 0.0)
    assert r.events == [Received(2, Said("#a", "3"))]  # 1, 2 (ours) then 3: no gap


def test_backfill_takes_room_lines_oldest_first() -> None:
    entries = [
        (b"1-0", raw(2, 1, Said("#a", "one"), HELLO)),
        (b"2-0", {b"n": b"oops"}),
        (b"3-0", raw(3, 1, Said("#b", "two"))),
    ]
    assert backfill(entries) == (Backfill((("#a", "one"), ("#b", "two"))), 1)


def test_entry_lags_are_other_nodes_entries_with_a_time() -> None:
    from twoway.sansio.bus import entry_lags

    entries = [
        (b"1-0", {b"n": b"2", b"s": b"1", b"t": b"100.25"}),
        (b"2-0", {b"n": b"1", b"s": b"1", b"t": b"100.0"}),  # our own: left out
        (b"3-0", {b"n": b"3", b"s": b"1"}),  # an older publisher: no time
        (b"4-0", {b"n": b"3", b"s": b"2", b"t": b"soon"}),  # not a number
        (b"5-0", {b"n": b"3", b"s": b"3", b"t": b"nan"}),  # not finite
        (b"6-0", {b"n": b"3", b"s": b"4", b"t": b"101.5"}),  # a clock ahead of ours
    ]
    assert entry_lags(entries, 1, 101.0) == [0.75, -0.5]

"""The bus wire codec without I/O: every kind round-trips, room runs, malformed data."""

from __future__ import annotations

import json

import pytest

from twoway.errors import BusProtocolError, TwowayError
from twoway.sansio.bus import (
    Ask,
    Bye,
    Entry,
    Heartbeat,
    Hello,
    Lost,
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
        with pytest.raises(BusProtocolError):
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
    with pytest.raises(BusProtocolError):
        decode_items(data)


def test_decode_entry_fields() -> None:
    fields = {b"n": b"3", b"s": b"17", b"d": encode_items([Said("#a", "x")]), b"q": b"#a 42 1"}
    assert decode_entry(fields) == Entry(3, 17, [Said("#a", "x")], [("#a", 42, 1)])
    assert decode_entry(fields, items=False) == Entry(3, 17, (), [("#a", 42, 1)])
    assert decode_entry({b"n": b"3", b"s": b"1", b"d": b"[]", b"q": b""}).runs == []
    for bad in ({b"s": b"1"}, {b"n": b"x", b"s": b"1"}, {b"n": b"1", b"s": b"1", b"q": b"a"}):
        with pytest.raises(BusProtocolError):
            decode_entry(bad)


def test_protocol_errors_belong_to_the_error_tree() -> None:
    with pytest.raises(TwowayError) as info:
        decode_items(b"[7]")
    assert type(info.value) is BusProtocolError
    assert str(info.value) == "expected an array, got 7"
    assert isinstance(info.value, ValueError)  # what it was before it joined the tree


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a bus item"):
        encode_items([object()])  # type: ignore[list-item]

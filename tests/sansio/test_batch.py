"""RoomBatch: each member gets exactly the room lines queued while it was a member, but its
own, in order, however joins, departures and direct writes interleave with the lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.batch import RoomBatch


def lines(data: bytes, newline: bytes = b"\n") -> list[str]:
    assert data.endswith(newline) or not data
    return [line.decode() for line in data.split(newline)[:-1]]


def test_a_member_who_joins_gets_only_later_lines() -> None:
    b = RoomBatch()
    b.add("before", None)
    b.joined(7)
    b.add("*** guest7 joined #lobby", 7)
    b.add("after", None)
    data, count = b.share(7, b"\n")
    assert (lines(data), count) == (["after"], 1)
    data, count = b.share(1, b"\n")  # a member from before the batch
    assert lines(data) == ["before", "*** guest7 joined #lobby", "after"] and count == 3


def test_take_hands_over_what_is_pending_then_only_what_follows() -> None:
    b = RoomBatch()
    b.add("one", None)
    b.add("mine", 3)
    assert b.take(3, b"\n") == (b"one\n", 1)
    assert b.take(3, b"\n") == (b"", 0)
    b.add("two", None)
    assert b.share(3, b"\n") == (b"two\n", 1)
    assert b.share(4, b"\n") == (b"one\nmine\ntwo\n", 3)


def test_members_who_get_everything_share_one_object_and_crlf_is_encoded_apart() -> None:
    b = RoomBatch()
    b.add("a", None)
    b.add("b", 1)
    assert b.share(2, b"\n")[0] is b.share(3, b"\n")[0]
    assert b.share(2, b"\r\n") == (b"a\r\nb\r\n", 2)
    assert b.share(1, b"\r\n") == (b"a\r\n", 1)
    assert b.chars == 2 and len(b) == 2


def test_a_burst_of_joins_gives_each_joiner_the_later_joins_only() -> None:
    b = RoomBatch()
    n = 500
    for cid in range(n):
        b.joined(cid)
        b.add(f"*** guest{cid} joined #lobby", cid)
    for cid in range(n):
        data, count = b.share(cid, b"\n")
        assert count == n - 1 - cid
        assert lines(data) == [f"*** guest{j} joined #lobby" for j in range(cid + 1, n)]


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.integers(0, 5)),  # member index or 5: the server
        st.tuples(st.just("join"), st.integers(0, 5)),
        st.tuples(st.just("leave"), st.integers(0, 5)),
        st.tuples(st.just("direct"), st.integers(0, 5)),  # a write to one member
    ),
    max_size=60,
)


@given(ops=_OPS, crlf=st.booleans())
@settings(max_examples=300)
def test_every_member_gets_its_lines_exactly_once_and_in_order(
    ops: list[tuple[str, int]], crlf: bool
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    b = RoomBatch()
    members = {0, 1, 2}  # in the room before the batch
    got: dict[int, list[str]] = {cid: [] for cid in range(5)}
    want: dict[int, list[str]] = {cid: [] for cid in range(5)}
    for step, (op, who) in enumerate(ops):
        if op == "say":
            author = who if who in members else None
            text = f"line {step}"
            b.add(text, author)
            for cid in members:
                if cid != author:
                    want[cid].append(text)
        elif op == "join" and who < 5 and who not in members:
            members.add(who)
            b.joined(who)
        elif op == "leave" and who in members:
            got[who] += lines(b.take(who, newline)[0], newline)
            members.discard(who)
        elif op == "direct" and who in members:
            got[who] += lines(b.take(who, newline)[0], newline)
    for cid in members:
        data, count = b.share(cid, newline)
        assert count == len(lines(data, newline))
        got[cid] += lines(data, newline)
    assert got == want

"""History under one budget: exact accounting, the largest rooms' oldest lines go first, and
the caps on rooms and topics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.chat import MAX_TOPIC, ChatCore, Send
from twoway.sansio.chat.history import HistoryStore, line_cost


def _total(core: ChatCore) -> int:
    return sum(line_cost(line) for room in core.rooms() for line in core.history(room))


def test_the_largest_room_loses_its_oldest_lines_first() -> None:
    store = HistoryStore(per_room=20, budget=10_000)
    quiet, flooded = store.new(), store.new()
    assert quiet is not None and flooded is not None
    store.append(quiet, "hello")
    for i in range(5):
        store.append(flooded, f"{i}" + "x" * 2000)
    # 5 x ~2 kB does not fit in 10 kB with the quiet room's line: the flood pays.
    assert store.used <= 10_000
    assert list(quiet) == ["hello"]
    assert [line[0] for line in flooded] == ["1", "2", "3", "4"]
    assert store.used == line_cost("hello") + sum(map(line_cost, flooded))


def test_a_dropped_room_gives_its_bytes_back() -> None:
    store = HistoryStore(per_room=3, budget=None)
    h = store.new()
    assert h is not None
    for text in ("a", "b", "c", "d"):
        store.append(h, text)
    assert list(h) == ["b", "c", "d"] and store.used == 3 * line_cost("a")
    store.drop(h)
    store.drop(h)  # idempotent
    assert store.used == 0


def test_no_history_means_no_store_and_bad_budgets_are_refused() -> None:
    assert HistoryStore(per_room=0, budget=None).new() is None
    with pytest.raises(ValueError, match="history_bytes"):
        ChatCore(history_bytes=-1)
    with pytest.raises(ValueError, match="max_rooms"):
        ChatCore(max_rooms=0)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["say", "join", "part", "quit"]),
        st.integers(0, 3),  # the client
        st.integers(0, 4),  # the room
        st.integers(1, 3000),  # the length of the line
    ),
    max_size=80,
)


@given(ops=_OPS, budget=st.integers(0, 20_000))
@settings(max_examples=200, deadline=None)
def test_the_accounting_is_exact_and_never_over_budget(
    ops: list[tuple[str, int, int, int]], budget: int
) -> None:
    core = ChatCore(history=5, history_bytes=budget)
    connected: set[int] = set()
    for op, cid, room, size in ops:
        if cid not in connected:
            core.connect(cid, 0.0)
            connected.add(cid)
        if op == "say":
            core.line(cid, "y" * size, 0.0)
        elif op == "join":
            core.line(cid, f"/join r{room}", 0.0)
        elif op == "part":
            core.line(cid, "/part", 0.0)
        else:
            core.line(cid, "/quit", 0.0)
            connected.discard(cid)
        assert core.history_bytes == _total(core) <= budget


def test_backfill_waiting_for_its_room_counts_and_shows_when_the_room_exists() -> None:
    core = ChatCore(history=5, history_bytes=None, cluster=True)
    core.backfill([("#later", "bob1: early"), ("#lobby", "amy1: hi")])
    waiting = line_cost("bob1: early")
    assert core.history_bytes == _total(core) + waiting
    core.connect(1, 0.0)
    core.line(1, "/join later", 0.0)
    assert core.history("#later") == ["bob1: early"]
    assert core.history_bytes == _total(core)


def test_history_bytes_is_what_the_kept_lines_cost() -> None:
    core = ChatCore(history=20, history_bytes=None)
    core.connect(1, 0.0)
    core.connect(2, 0.0)
    core.line(2, "/join dev", 0.0)
    core.line(1, "hello", 0.0)
    core.line(2, "/me codes", 0.0)
    assert core.history("#lobby") == ["guest1: hello"]
    assert core.history("#dev") == ["* guest2 codes"]
    assert core.history_bytes == line_cost("guest1: hello") + line_cost("* guest2 codes")
    core.line(2, "/part", 0.0)  # #dev is empty: it goes, with its history
    assert core.history_bytes == line_cost("guest1: hello")


def test_one_room_more_than_max_rooms_gets_one_clear_line() -> None:
    core = ChatCore(max_rooms=2)  # the lobby and one more
    core.connect(1, 0.0)
    core.connect(2, 0.0)
    core.line(1, "/join a", 0.0)
    out = core.line(2, "/join b", 0.0)
    assert out == [Send(2, "error: too many rooms (max 2): join one of /rooms")]
    assert core.room_of(2) == "#lobby"
    assert core.line(2, "/join A", 0.0)[-1:] != out  # an existing room is always open
    assert core.room_of(2) == "#a"


def test_a_topic_longer_than_the_cap_is_refused() -> None:
    core = ChatCore()
    core.connect(1, 0.0)
    out = core.line(1, "/topic " + "t" * (MAX_TOPIC + 1), 0.0)
    assert out == [Send(1, f"error: topic too long (max {MAX_TOPIC} characters)")]
    assert core.line(1, "/topic " + "t" * MAX_TOPIC, 0.0)[0].text.endswith("t" * MAX_TOPIC)  # type: ignore[union-attr]

"""The pure parts of chat memory: replay accounting, the token table, --keep, and the core's
numbering, resume and replay (no sockets)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.chat import ChatCore, Send, ToRoom
from twoway.sansio.chat.keep import KeepPolicy, parse_keep
from twoway.sansio.chat.resume import Claim, Refused, Ticket, TokenTable
from twoway.sansio.chat.sequence import select, summary


@given(
    last=st.integers(0, 5000),
    kept=st.integers(0, 5000),
    after=st.integers(-10, 6000),
    limit=st.integers(0, 2000),
)
def test_selection_accounts_for_every_line(last: int, kept: int, after: int, limit: int) -> None:
    first = last - min(kept, last) + 1
    sel = select(first, last, after, limit)
    wanted = max(last - max(after, 0), 0)
    # Every line after `after` is replayed, no longer kept, or left for the next request.
    assert sel.count + sel.not_kept + sel.more == wanted
    assert sel.count <= limit
    if sel.count:
        assert first <= sel.start and sel.start + sel.count - 1 <= last
    # Never "0 missed" when lines were dropped.
    if max(after, 0) + 1 < first and after < last:
        assert sel.not_kept > 0
        assert "0 missed" not in summary(sel.count, sel.not_kept)


def test_summary_wording() -> None:
    assert summary(37, 0) == "replayed 37 lines; 0 missed"
    assert summary(1000, 212) == "replayed 1000 lines; 212 no longer kept"


def test_select_rejects_impossible_ranges() -> None:
    with pytest.raises(ValueError):
        select(0, 5, 0)
    with pytest.raises(ValueError):
        select(8, 5, 0)


@given(st.lists(st.sampled_from(["issue", "depart", "claim", "expire", "quit"]), max_size=60))
def test_a_token_is_claimed_at_most_once(ops: list[str]) -> None:
    table = TokenTable(window=10.0)
    tokens = (f"t{i}" for i in itertools.count())
    now = 0.0
    live: dict[int, str] = {}
    claimed: set[str] = set()
    issued: list[str] = []
    for n, op in enumerate(ops):
        now += 1.0
        cid = n % 3
        if op == "issue":
            t = next(tokens)
            table.issue(cid, t, now)
            live[cid] = t
            issued.append(t)
        elif op == "depart" and cid in live:
            table.depart(cid, "nick", "#lobby", "e", 0, now)
            del live[cid]
        elif op == "quit" and cid in live:
            table.forget(cid, now)
            del live[cid]
        elif op == "expire":
            table.expire(now)
        elif op == "claim" and issued:
            t = issued[n % len(issued)]
            got = table.claim(t, now)
            if isinstance(got, Ticket):
                assert t not in claimed
                claimed.add(t)
            elif isinstance(got, Claim):
                assert live.get(got.cid) == t
            else:
                assert got.reason in ("expired", "already used", "unknown token")


def test_token_refusals_say_why() -> None:
    table = TokenTable(window=5.0, memory=100.0)
    table.issue(1, "a", 0.0)
    assert table.claim("a", 1.0) == Claim(1)
    table.depart(1, "alice", "#dev", "e1", 7, 2.0)
    ticket = table.claim("a", 3.0)
    assert isinstance(ticket, Ticket) and (ticket.nick, ticket.room, ticket.last) == (
        "alice",
        "#dev",
        7,
    )
    assert table.claim("a", 3.5) == Refused("already used")
    table.issue(2, "b", 4.0)
    table.depart(2, "bob", "#lobby", "e1", 0, 4.0)
    assert table.claim("b", 9.5) == Refused("expired")
    assert table.claim("zzz", 9.5) == Refused("unknown token")
    table.issue(3, "c", 10.0)
    table.issue(3, "d", 11.0)  # /token: the old one is spent
    assert table.claim("c", 11.0) == Refused("already used")


def test_keep_policy_parsing() -> None:
    assert parse_keep("10000") == KeepPolicy(10000, None)
    assert parse_keep("30d") == KeepPolicy(None, 30 * 86400)
    assert parse_keep("10000,30d") == KeepPolicy(10000, 30 * 86400)
    assert parse_keep("12h, 500") == KeepPolicy(500, 12 * 3600)
    for bad in ("", "0", "3x", "1,2", "1d,2d", "1,2,3"):
        with pytest.raises(ValueError, match="keep"):
            parse_keep(bad)
    assert KeepPolicy(10, None).oldest_seq(25) == 16


def _core(**kw: object) -> ChatCore:
    count = itertools.count()
    return ChatCore(
        tail=1000,
        resume_window=60.0,
        new_token=lambda: f"T{next(count)}",
        **kw,  # type: ignore[arg-type]
    )


def _texts(effects: list[object], cid: int) -> list[str]:
    return [e.text for e in effects if isinstance(e, Send) and e.cid == cid]


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 40))
def test_resume_replays_exactly_what_was_missed(before: int, during: int, tail: int) -> None:
    count = itertools.count()
    core = ChatCore(
        history=min(tail, 20), tail=tail, resume_window=60.0, new_token=lambda: f"T{next(count)}"
    )
    core.connect(1, 0.0)
    core.connect(2, 0.0)
    for i in range(before):
        core.line(2, f"b{i}", 1.0)
    core.disconnect(1, "reset", 2.0)
    for i in range(during):
        core.line(2, f"d{i}", 3.0)
    core.connect(3, 4.0)
    out = _texts(core.line(3, "/resume T0", 4.0), 3)
    replayed = [t.removeprefix("[history] guest2: ") for t in out if t.startswith("[history]")]
    kept = min(during, tail)
    assert replayed == [f"d{i}" for i in range(during - kept, during)]
    lost = during - kept
    want = f"*** replayed {kept} lines; " + (f"{lost} no longer kept" if lost else "0 missed")
    assert want in out


def test_core_numbers_lines_and_journals_them() -> None:
    core = _core()
    journal: list[tuple[str, str, int, str]] = []
    core.set_journal(lambda *a: journal.append(a))
    core.connect(1, 0.0)
    core.line(1, "hello", 0.0)
    core.line(1, "/me waves", 0.0)
    epoch = journal[0][1]
    assert journal == [
        ("#lobby", epoch, 1, "guest1: hello"),
        ("#lobby", epoch, 2, "* guest1 waves"),
    ]
    assert _texts(core.line(1, "/seq", 0.0), 1) == [f"*** at #lobby seq 2 epoch {epoch}"]


def test_restore_and_parked_rooms_keep_their_numbering() -> None:
    core = _core()
    core.set_journal(None)
    core.restore("#dev", "old", 40, ["x: 38", "x: 39", "x: 40"])
    core.connect(1, 0.0)
    out = _texts(core.line(1, "/join dev", 0.0), 1)
    assert out[-3:] == ["[history] x: 38", "[history] x: 39", "[history] x: 40"]
    assert _texts(core.line(1, "/seq", 0.0), 1) == ["*** at #dev seq 40 epoch old"]
    core.line(1, "/part", 0.0)  # #dev is empty and parked: same numbering when it returns
    core.line(1, "/join dev", 0.0)
    assert _texts(core.line(1, "/seq", 0.0), 1) == ["*** at #dev seq 40 epoch old"]


def test_without_a_store_an_emptied_room_gets_a_new_epoch() -> None:
    core = _core()
    core.connect(1, 0.0)
    core.line(1, "/join dev", 0.0)
    core.line(1, "hi", 0.0)
    first = _texts(core.line(1, "/seq", 0.0), 1)[0]
    core.line(1, "/part", 0.0)
    core.line(1, "/join dev", 0.0)
    second = _texts(core.line(1, "/seq", 0.0), 1)[0]
    assert first.split()[-1] != second.split()[-1]
    assert second.startswith("*** at #dev seq 0 ")


def test_a_held_nick_is_free_again_after_the_window() -> None:
    core = _core()
    core.connect(1, 0.0)
    core.line(1, "/nick alice", 0.0)
    core.disconnect(1, "reset", 1.0)
    core.connect(2, 1.0)
    assert _texts(core.line(2, "/nick alice", 1.0), 2) == ['error: nick "alice" is already taken']
    core.expire(62.0)
    effects = core.line(2, "/nick alice", 62.0)
    assert any(isinstance(e, ToRoom) and "now known as alice" in e.text for e in effects)


def test_resume_takes_over_a_connection_not_yet_seen_gone() -> None:
    core = _core()
    core.connect(1, 0.0)
    core.line(1, "/nick alice", 0.0)
    core.connect(2, 1.0)
    effects = core.line(2, "/resume T0", 1.0)
    assert "error: resumed elsewhere, disconnecting" in _texts(effects, 1)
    assert "*** resumed as alice in #lobby" in _texts(effects, 2)
    assert core.nick(1) is None and core.nick(2) == "alice"


def _shown(effects: list[object]) -> list[str]:
    return [e.text for e in effects if isinstance(e, (Send, ToRoom))]


def test_topics_are_told_to_the_sink_and_kept_for_emptied_rooms() -> None:
    core = ChatCore()
    told: list[tuple[str, str | None, str]] = []
    assert core.restore_topics([("#old", "from the store"), ("bad name", "x"), ("#UP", "x")]) == 1
    core.set_topics(lambda room, topic, nick: told.append((room, topic, nick)))
    core.connect(1, 0.0)
    core.line(1, "/nick ann", 0.0)
    assert "*** topic: from the store" in _shown(core.line(1, "/join old", 0.0))
    core.line(1, "/join dev", 0.0)
    core.line(1, "/topic hello\x07", 0.0)
    assert told == [("#dev", "hello^G", "ann")]  # escaped, as shown
    core.line(1, "/join lobby", 0.0)  # #dev empties: its topic is kept
    assert "*** topic: hello^G" in _shown(core.line(1, "/join dev", 0.0))
    # A topic set on another server for a room this one does not have is kept too.
    core.remote_topic("#far", "over there", "bob")
    assert "*** topic: over there" in _shown(core.line(1, "/join far", 0.0))
    assert len(told) == 1  # the other server wrote it


def test_without_a_sink_a_topic_goes_with_its_room() -> None:
    core = ChatCore()
    core.connect(1, 0.0)
    core.line(1, "/join dev", 0.0)
    core.line(1, "/topic hello", 0.0)
    core.line(1, "/join lobby", 0.0)
    assert not any(t.startswith("*** topic:") for t in _shown(core.line(1, "/join dev", 0.0)))


def test_kept_topics_are_bounded_and_the_store_forgets_the_oldest() -> None:
    from twoway.sansio.chat.state import MAX_KEPT_TOPICS

    core = ChatCore()
    told: list[tuple[str, str | None, str]] = []
    core.set_topics(lambda room, topic, nick: told.append((room, topic, nick)))
    core.restore_topics((f"#r{i}", f"t{i}") for i in range(MAX_KEPT_TOPICS + 2))
    assert told == [("#r0", None, ""), ("#r1", None, "")]
    core.connect(1, 0.0)
    assert not any("topic:" in t for t in _shown(core.line(1, "/join r0", 0.0)))
    assert "*** topic: t2" in _shown(core.line(1, "/join r2", 0.0))

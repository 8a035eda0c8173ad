"""Nicks held for resumes elsewhere, learned from the store every server shares
(:meth:`ChatCore.hold_shared`): a server that was not there when a hold was published holds
the nick too, until a window after its client left, or until the client resumes; a hold whose
end was heard first is never taken back."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.chat import ChatCore, Held, Lookup, Send
from twoway.sansio.chat.resume import Ticket, token_key

WINDOW = 60.0
TAKEN = 'error: nick "{}" is already taken'


def _core(*, cluster: bool = False) -> ChatCore:
    count = itertools.count()
    return ChatCore(
        cluster=cluster, tail=100, resume_window=WINDOW, new_token=lambda: f"T{next(count)}"
    )


def _texts(effects: list[Any], cid: int) -> list[str]:
    return [e.text for e in effects if isinstance(e, Send) and e.cid == cid]


def _ticket(key: str, nick: str, age: float, *, held: bool = True) -> Ticket:
    """A ticket as read from the store: ``left_at`` is minus its age."""
    return Ticket(key, nick, "#lobby", "e1", 0, -age, held, 7)


class Probe:
    """A client asking for nicks: ``taken(nick)`` is whether ``/nick`` was refused (if it
    was not, the probe takes back its own nick at once)."""

    def __init__(self, core: ChatCore, cid: int = 1) -> None:
        self.core = core
        self.cid = cid
        core.connect(cid, 0.0)
        core.line(cid, "/nick probe", 0.0)

    def taken(self, nick: str, now: float) -> bool:
        out = _texts(self.core.line(self.cid, f"/nick {nick}", now), self.cid)
        if out == [TAKEN.format(nick)]:
            return True
        assert out == [], out  # renamed: no line to the probe itself
        self.core.line(self.cid, "/nick probe", now)
        return False


def test_the_held_tickets_of_the_store_hold_their_nicks_here() -> None:
    core = _core()
    probe = Probe(core)
    tickets = [
        _ticket("k1", "Alice", 20.0),
        _ticket("k2", "carol", 20.0, held=False),  # closed its connection itself: free
        _ticket("k3", "dave", WINDOW + 1),  # past its window (the store has not seen yet)
    ]
    assert core.hold_shared(tickets, 100.0) == 1
    assert core.held_nicks == 1
    assert probe.taken("alice", 100.0)  # any case
    assert not probe.taken("carol", 100.0)
    assert not probe.taken("dave", 100.0)


def test_a_shared_hold_ends_a_window_after_its_client_left_not_after_it_was_read() -> None:
    core = _core()
    probe = Probe(core)
    core.hold_shared([_ticket("k1", "alice", 20.0)], 100.0)  # left at 80
    core.expire(140.0)
    assert probe.taken("alice", 140.0)
    core.expire(140.5)
    assert not probe.taken("alice", 140.5)
    assert core.held_nicks == 0


def test_shared_holds_and_holds_heard_on_the_bus_expire_each_on_time() -> None:
    core = _core()
    probe = Probe(core)
    core.remote_held("bob", "heard", True, 100.0)  # heard first, the younger of the two
    core.hold_shared([_ticket("read", "alice", 50.0)], 100.0)  # left at 50
    core.expire(111.0)
    assert not probe.taken("alice", 111.0)
    assert probe.taken("bob", 111.0)
    core.expire(161.0)
    assert not probe.taken("bob", 161.0)


def test_an_end_heard_before_the_read_is_not_undone() -> None:
    """The store was read just before the client resumed elsewhere, and the resume's word
    (Held off) was handled before the read's answer: the ticket stays ended."""
    core = _core()
    probe = Probe(core)
    core.remote_held("alice", "k1", False, 100.0)
    assert core.hold_shared([_ticket("k1", "alice", 5.0)], 100.1) == 0
    core.remote_held("alice", "k1", True, 100.2)  # a late word, as for any single-use key
    assert not probe.taken("alice", 100.2)
    assert core.held_nicks == 0


def test_this_servers_own_tickets_are_not_held_twice() -> None:
    core = _core()
    core.connect(2, 0.0)
    core.line(2, "/nick alice", 0.0)
    core.disconnect(2, "connection reset", 1.0)
    assert core.held_nicks == 1
    assert core.hold_shared([_ticket(token_key("T0"), "alice", 0.0)], 1.0) == 0
    assert core.held_nicks == 1


def test_a_client_resumes_here_on_a_shared_hold_and_every_server_lets_go() -> None:
    core = _core(cluster=True)
    core.set_sessions(None, shared=True)
    probe = Probe(core)
    key = token_key("elsewhere")
    core.hold_shared([_ticket(key, "alice", 10.0)], 100.0)
    core.connect(5, 100.0)
    assert core.line(5, "/resume elsewhere", 100.0) == [Lookup(5, key)]
    back = Ticket(
        key, "alice", "#lobby", "e1", 0, 90.0
    )  # (on this clock, as the I/O layer gives it)
    out = core.resumed(5, key, back, None, 100.0)
    assert "*** resumed as alice in #lobby" in _texts(out, 5)
    assert Held("alice", key, False) in out
    assert core.nick(5) == "alice" and core.held_nicks == 0
    core.line(5, "/nick alice2", 101.0)
    assert not probe.taken("alice", 101.0)  # hers no more, and not held again
    assert core.hold_shared([_ticket(key, "alice", 11.0)], 101.0) == 0


def test_without_resume_nothing_is_held() -> None:
    core = ChatCore()
    assert core.hold_shared([_ticket("k1", "alice", 1.0)], 1.0) == 0
    assert core.held_nicks == 0


NICKS = ("alice", "bob", "carol", "dave")
_load = st.lists(
    st.tuples(st.integers(0, len(NICKS) - 1), st.integers(0, int(2 * WINDOW)), st.booleans()),
    max_size=4,
)
_step = st.one_of(
    st.tuples(st.just("load"), _load),
    st.tuples(st.just("on"), st.integers(0, len(NICKS) - 1)),
    st.tuples(st.just("off"), st.integers(0, len(NICKS) - 1)),
    st.tuples(st.just("wait"), st.integers(0, int(WINDOW))),
)


@given(st.lists(_step, max_size=30))
def test_a_nick_is_refused_exactly_while_some_word_holds_it(steps: list[Any]) -> None:
    """Whatever the order of reads of the store, holds and ends heard on the bus and time
    passing: a nick is refused exactly while its ticket is held, i.e. it was read (within
    its window) or heard held, its end was not heard, and a window has not passed since
    the earliest departure known; an ended ticket is not held again while its end is
    remembered (a window)."""
    core = _core()
    probe = Probe(core)
    now = 0
    since: dict[int, int] = {}  # ticket -> when its client left, as known
    ended: dict[int, int] = {}  # ticket -> when its end was heard
    for kind, arg in steps:
        if kind == "wait":
            now += arg
        elif kind == "load":
            core.hold_shared([_ticket(f"k{i}", NICKS[i], age, held=h) for i, age, h in arg], now)
            for i, age, h in arg:
                if h and i not in ended and age <= WINDOW:
                    since[i] = min(since.get(i, now - age), now - age)
        elif kind == "on":
            core.remote_held(NICKS[arg], f"k{arg}", True, now)
            if arg not in ended:
                since[arg] = now
        else:
            core.remote_held(NICKS[arg], f"k{arg}", False, now)
            since.pop(arg, None)
            ended[arg] = now
        core.expire(now)
        since = {i: t for i, t in since.items() if now - t <= WINDOW}
        ended = {i: t for i, t in ended.items() if now - t <= WINDOW}
        for i, nick in enumerate(NICKS):
            assert probe.taken(nick, now) == (i in since), (kind, arg, now, since)
        assert core.held_nicks == len(since)

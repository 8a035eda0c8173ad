"""Guest numbers of a cluster core come from blocks reserved across servers: two cores fed
blocks of one shared counter never welcome two clients as the same guestN, and a number a
core counted itself (no block at hand) is never handed out again."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.chat import ChatCore, Send

YOU_ARE = re.compile(r"\*\*\* you are (guest\d+)")


def _nick(effects: list[object]) -> str:
    for e in effects:
        if isinstance(e, Send) and (m := YOU_ARE.fullmatch(e.text)):
            return m.group(1)
    raise AssertionError(f"no welcome in {effects}")


class Counter:
    """The shared counter (Redis INCRBY, in the real thing)."""

    def __init__(self) -> None:
        self.value = 0

    def reserve(self, count: int) -> int:
        self.value += count
        return self.value - count + 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("ab"), st.sampled_from(["join", "leave", "block"])),
        max_size=120,
    )
)
def test_two_cores_on_one_counter_never_share_a_guest_nick(
    steps: list[tuple[str, str]],
) -> None:
    counter = Counter()
    cores = {name: ChatCore(cluster=True) for name in "ab"}
    for core in cores.values():
        core.lease_guests(counter.reserve(4), 4)
    held: dict[str, dict[int, str]] = {"a": {}, "b": {}}
    next_cid = 0
    for name, action in steps:
        core, mine = cores[name], held[name]
        if action == "block":
            core.lease_guests(counter.reserve(4), 4)
        elif action == "leave" and mine:
            cid = next(iter(mine))
            core.disconnect(cid, "closed")
            del mine[cid]
        elif action == "join" and core.guests_at_hand > 0:  # the service waits otherwise
            next_cid += 1
            mine[next_cid] = _nick(core.connect(next_cid, 0.0))
        nicks = [*held["a"].values(), *held["b"].values()]
        assert len(nicks) == len(set(nicks)), nicks


def test_a_single_server_counts_from_1_and_reuses_the_smallest() -> None:
    core = ChatCore()
    assert _nick(core.connect(1, 0.0)) == "guest1"
    assert _nick(core.connect(2, 0.0)) == "guest2"
    core.disconnect(1, "closed")
    assert _nick(core.connect(3, 0.0)) == "guest1"


def test_blocks_are_used_smallest_first_and_freed_numbers_come_back() -> None:
    core = ChatCore(cluster=True)
    core.lease_guests(129, 2)
    assert core.guests_at_hand == 2
    assert _nick(core.connect(1, 0.0)) == "guest129"
    assert _nick(core.connect(2, 0.0)) == "guest130"
    assert core.guests_at_hand == 0
    core.disconnect(1, "closed")
    assert core.guests_at_hand == 1
    assert _nick(core.connect(3, 0.0)) == "guest129"


def test_numbers_counted_without_a_block_are_not_reused() -> None:
    """Without a block (the bus down) the core counts, as one server does; such a number may
    be another server's, so once freed it is not handed out again."""
    core = ChatCore(cluster=True)
    assert _nick(core.connect(1, 0.0)) == "guest1"
    core.disconnect(1, "closed")
    assert core.guests_at_hand == 0
    core.lease_guests(257, 1)
    assert _nick(core.connect(2, 0.0)) == "guest257"
    assert _nick(core.connect(3, 0.0)) == "guest2"  # counted again, never guest1 re-used

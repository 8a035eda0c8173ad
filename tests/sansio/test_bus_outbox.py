"""The bus outbox without I/O: order, entries cut by count and size, the bounded buffer, the
overflow counts, a retry that repeats an entry exactly."""

from __future__ import annotations

import pytest

from twoway.sansio.bus import Ask, Heartbeat, Hello, Lost, Outbox, decode_items
from twoway.sansio.chat import Presence, Said, Send


def test_items_leave_in_order_in_numbered_entries() -> None:
    box = Outbox(limit=100, batch_items=3)
    assert box.idle and box.batch() is None
    items = [Said("#a", "1"), Presence(1, "n", "#a"), Said("#a", "2"), Said("#b", "3")]
    for item in items:
        assert box.put(item)
    box.put_control(Ask(0))
    assert box.pending == 4  # chat items only
    first = box.batch()
    assert first is not None and first.nseq == 1 and first.items == items[:3]
    assert decode_items(first.data) == items[:3]
    assert first.runs == ["#a", 2]  # the Presence does not break the run
    assert box.batch() is first  # the same until sent: a retry repeats it exactly
    assert box.sent() == 3
    second = box.batch()
    assert second is not None and second.nseq == 2 and second.items == [items[3], Ask(0)]
    assert second.count == 1 and second.runs == ["#b", 1]
    assert box.sent() == 1
    assert box.idle and box.pending == 0 and box.sent() == 0


def test_an_entry_is_bounded_in_size() -> None:
    box = Outbox(limit=100, batch_items=500, batch_bytes=1000)
    for _ in range(10):
        box.put(Send(1, "x" * 300))
    sizes = []
    while (batch := box.batch()) is not None:
        sizes.append(len(batch.items))
        box.sent()
    assert sizes == [4, 4, 2]  # about 332 bytes each: the one that crosses 1000 ends an entry


def test_a_full_buffer_drops_counts_and_reports_once_drained() -> None:
    box = Outbox(limit=4, batch_items=2)
    for i in range(4):
        assert box.put(Said("#a", f"{i}"))
    assert not box.put(Said("#a", "dropped"))
    assert not box.put(Said("#b", "dropped"))
    assert not box.put(Presence(1, "n", "#a"))  # counted, but no room line lost
    box.put_control(Hello(()))  # the bus's own: never dropped
    assert box.dropped == 3 and len(box) == 5
    assert box.overflow() is None  # still full: not yet
    box.batch()
    assert box.overflow() is None  # 2 of 4 queued: not below half
    box.sent()
    box.batch()
    assert box.overflow() == (3, Lost((("#a", 1), ("#b", 1))))
    assert box.overflow() is None and box.dropped == 0  # reported once
    assert box.put(Said("#a", "room again"))


def test_overflow_without_room_lines_has_no_lost_item() -> None:
    box = Outbox(limit=1)
    box.put(Said("#a", "kept"))
    assert not box.put(Send(1, "dropped"))
    box.batch()
    assert box.overflow() == (1, None)


def test_the_bus_own_items_do_not_count_against_the_limit() -> None:
    box = Outbox(limit=1)
    for _ in range(5):
        box.put_control(Heartbeat())
    assert box.put(Said("#a", "x"))
    assert box.pending == 1
    assert not box.put(Said("#a", "y"))
    box.put_control(Ask(0))
    assert len(box) == 7


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Outbox(limit=0)

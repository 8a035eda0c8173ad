"""``LineQueue``: what the event loop hands the store's writer — runs of lines, records in
order, one wake-up per batch, the backlog bound — and that nothing is lost or repeated when
the two threads append and take at the same time."""

from __future__ import annotations

import threading
import time

from twoway.store.linequeue import LineQueue


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.behind = 0

    def wake(self) -> None:
        self.count += 1

    def on_behind(self) -> None:
        self.behind += 1


def make(max_backlog: int = 1 << 20) -> tuple[LineQueue, Wakes]:
    w = Wakes()
    return LineQueue(w.wake, w.on_behind, max_backlog), w


def test_a_room_s_lines_come_as_one_run_and_the_next_batch_goes_on_with_it() -> None:
    q, w = make()
    for seq in range(1, 6):
        q.journal("#a", "e1", seq, f"line {seq}")
    assert w.count == 1  # woken once: the list was empty only before the first line
    assert q.take() == ([("#a", "e1", 1, 5, "line 1\nline 2\nline 3\nline 4\nline 5")], [])
    q.journal("#a", "e1", 6, "line 6")
    q.journal("#a", "e1", 7, "line 7")
    assert w.count == 2
    assert q.take() == ([("#a", "e1", 6, 2, "line 6\nline 7")], [])
    assert q.take() == ([], [])


def test_interleaved_rooms_new_numberings_and_gaps_make_runs_in_order() -> None:
    q, _ = make()
    q.journal("#a", "e1", 1, "a1")
    q.journal("#b", "f1", 7, "b7")
    q.journal("#a", "e1", 2, "a2")  # goes on with #a's run despite #b between
    q.journal("#b", "f1", 9, "b9")  # a gap: a run of its own
    q.journal("#a", "e2", 1, "new a1")  # a new numbering of #a
    q.journal("#a", "e2", 2, "new a2")
    runs, records = q.take()
    assert records == []
    assert runs == [
        ("#a", "e1", 1, 2, "a1\na2"),
        ("#b", "f1", 7, 1, "b7"),
        ("#b", "f1", 9, 1, "b9"),
        ("#a", "e2", 1, 2, "new a1\nnew a2"),
    ]
    q.journal("#a", "e2", 3, "new a3")
    assert q.take() == ([("#a", "e2", 3, 1, "new a3")], [])


def test_records_keep_their_order_and_do_not_break_a_run() -> None:
    q, w = make()
    q.record("ban", "eve", '{"by":"alice"}')
    assert w.count == 1
    q.journal("#a", "e1", 1, "a1")
    q.record("ban", "eve", "")
    q.journal("#a", "e1", 2, "a2")
    q.record("topic", "#a", '"hi"')
    assert w.count == 1
    runs, records = q.take()
    assert runs == [("#a", "e1", 1, 2, "a1\na2")]
    assert records == [
        ("ban", "eve", '{"by":"alice"}'),
        ("ban", "eve", ""),
        ("topic", "#a", '"hi"'),
    ]
    q.record("ban", "mallory", "{}")
    assert w.count == 2
    assert q.take() == ([], [("ban", "mallory", "{}")])


def test_a_line_holding_a_newline_is_stored_escaped() -> None:
    q, _ = make()
    q.journal("#a", "e1", 1, "one")
    q.journal("#a", "e1", 2, "two\nlines\x1b")
    assert q.take() == ([("#a", "e1", 1, 2, "one\ntwo^Jlines^[")], [])


def test_past_the_backlog_lines_are_counted_not_kept_until_the_writer_takes() -> None:
    q, w = make(max_backlog=100)
    for seq in range(1, 41):  # 10 characters each: past 100 at the check after 16 lines
        q.journal("#a", "e1", seq, f"line {seq:4}")
    assert w.behind == 1
    assert q.lines_dropped > 0
    kept = 40 - q.lines_dropped
    runs, _ = q.take()
    assert runs == [("#a", "e1", 1, kept, "\n".join(f"line {s:4}" for s in range(1, kept + 1)))]
    # The writer took the backlog: the next lines are kept, after a gap.
    for seq in range(41, 60):
        q.journal("#a", "e1", seq, f"x {seq}")
    runs, _ = q.take()
    assert runs[-1][3] > 0 and runs[-1][0:2] == ("#a", "e1")
    first = runs[0][2]
    assert first > kept  # a gap where lines were not kept: a run of its own
    assert runs[0][4].split("\n")[0] == f"x {first}"
    assert w.behind == 1  # said once
    dropped = q.lines_dropped
    assert kept + dropped + sum(r[3] for r in runs) == 59


def test_once_closed_lines_are_neither_kept_nor_counted() -> None:
    q, w = make()
    q.closed = True
    for seq in range(1, 100):
        q.journal("#a", "e1", seq, "x")
    q.take()  # what came before the loop saw it closed
    for seq in range(100, 200):
        q.journal("#a", "e1", seq, "x")
    assert q.take() == ([], [])
    assert q.lines_dropped == 0 and w.behind == 0


def test_two_threads_lose_and_repeat_nothing() -> None:
    """The event loop's thread appends while the writer takes: every line arrives once, in
    order, numbered right (the GIL switches threads every few milliseconds, so the writer
    takes in the middle of runs of appends)."""
    woken = threading.Event()
    q = LineQueue(woken.set, lambda: None, 1 << 30)
    total = 200_000
    got: list[str] = []
    nexts: dict[str, int] = {"#a": 1, "#b": 1}
    done = threading.Event()
    takes = [0]

    def writer() -> None:
        while True:
            finished = done.is_set()
            runs, _ = q.take()
            takes[0] += bool(runs)
            for room, _epoch, first, count, texts in runs:
                assert first == nexts[room], (room, first, nexts[room])
                nexts[room] += count
                got.extend(texts.split("\n"))
            if finished:
                return
            time.sleep(0.0005)

    thread = threading.Thread(target=writer)
    thread.start()
    said = {"#a": 0, "#b": 0}
    for i in range(total):
        room = "#a" if (i // 1000) % 3 else "#b"  # runs of one room, some switches
        said[room] += 1
        q.journal(room, "e", said[room], f"{room} {said[room]}")
    done.set()
    thread.join()
    assert len(got) == total
    assert takes[0] > 3  # taken in pieces, while lines were appended
    for room in ("#a", "#b"):
        mine = [x for x in got if x.startswith(room)]
        assert mine == [f"{room} {n}" for n in range(1, said[room] + 1)]
    assert woken.is_set()

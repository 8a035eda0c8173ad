"""Log set-up: the repeat filter that keeps asyncio's per-event lines to one per second."""

from __future__ import annotations

import logging

from twoway.logs import RepeatFilter


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.WARNING, __file__, 1, msg, args, None)


def test_one_line_per_cause_per_interval_then_a_count_of_what_was_held() -> None:
    now = [100.0]
    f = RepeatFilter(interval=1.0, clock=lambda: now[0])
    assert f.filter(_record("socket.send() raised exception."))
    held = [f.filter(_record("socket.send() raised exception.")) for _ in range(5000)]
    assert not any(held)
    # Another cause is not held back by the first.
    assert f.filter(_record("Unknown child process pid %d", 7))
    now[0] += 1.0
    again = _record("socket.send() raised exception.")
    assert f.filter(again)
    assert again.getMessage() == "socket.send() raised exception. (5000 more like it not logged)"
    # After that report the count starts again.
    now[0] += 1.0
    plain = _record("socket.send() raised exception.")
    assert f.filter(plain)
    assert plain.getMessage() == "socket.send() raised exception."


def test_messages_with_different_arguments_share_their_template() -> None:
    now = [0.0]
    f = RepeatFilter(clock=lambda: now[0])
    assert f.filter(_record("pid %d", 1))
    assert not f.filter(_record("pid %d", 2))

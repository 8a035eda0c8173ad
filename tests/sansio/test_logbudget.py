"""LogBudget: the bound on log lines (summaries included) and the exact count of the rest,
driven by a hand-held clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.logbudget import LogBudget


def test_a_burst_passes_then_lines_are_held_and_counted() -> None:
    b = LogBudget(rate=10.0, burst=5, resume=3)
    assert [b.admit(0.0) for _ in range(5)] == [(0, 0.0)] * 5
    assert [b.admit(0.0) for _ in range(7)] == [None] * 7
    assert (b.held, b.held_since) == (7, 0.0)


def test_logging_resumes_with_the_summary_once_resume_tokens_gathered() -> None:
    b = LogBudget(rate=10.0, burst=5, resume=3)
    for _ in range(5):
        b.admit(0.0)
    assert b.admit(0.05) is None  # held from 0.05 s on
    assert b.admit(0.2) is None  # two tokens: not yet three
    assert b.wait(0.2) == pytest.approx(0.1)
    # Three tokens: the summary (2 held over 0.3 s) and this line, one token each.
    assert b.admit(0.35) == (2, pytest.approx(0.3))
    assert (b.held, b.held_since) == (0, None)
    assert b.admit(0.35) == (0, 0.0)  # the third token
    assert b.admit(0.35) is None


def test_summary_alone_for_a_flood_that_stopped() -> None:
    b = LogBudget(rate=2.0, burst=4, resume=2)
    for _ in range(4):
        b.admit(0.0)
    for t in (0.1, 0.2, 0.3):
        assert b.admit(t) is None
    assert b.summary(0.5) is None  # one token so far
    assert b.wait(0.5) == pytest.approx(0.5)
    assert b.summary(1.0) == (3, pytest.approx(0.9))
    assert b.summary(2.0) is None  # nothing held any more
    assert b.admit(2.0) == (0, 0.0)


def test_nothing_held_means_no_wait_with_a_token() -> None:
    b = LogBudget(rate=1.0, burst=2)
    assert b.wait(0.0) == 0.0
    assert b.resume == 2  # one second's worth of rate 1, at least 2


def test_default_resume_is_a_second_of_rate_within_burst() -> None:
    assert LogBudget(rate=20.0, burst=100).resume == 20
    assert LogBudget(rate=500.0, burst=100).resume == 100
    assert LogBudget(rate=0.1, burst=10).resume == 2


@pytest.mark.parametrize(
    ("rate", "burst", "resume"),
    [(0.0, 10, 2), (-1.0, 10, 2), (1.0, 1, None), (1.0, 10, 1), (1.0, 10, 11)],
)
def test_invalid_settings(rate: float, burst: int, resume: int | None) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        LogBudget(rate, burst, resume)


def test_a_clock_going_backwards_makes_no_tokens() -> None:
    b = LogBudget(rate=1.0, burst=2, resume=2)
    assert b.admit(100.0) == (0, 0.0)
    assert b.admit(100.0) == (0, 0.0)
    assert b.admit(50.0) is None  # backwards: no time passed
    assert b.held_since == 100.0  # the latest time seen, not the one that went back
    assert b.admit(100.5) is None  # half a token since the latest time seen
    assert b.summary(102.0) == (2, 2.0)


# One step: a gap in seconds, then either a line asked for (admit) or a summary asked for.
_steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
        st.sampled_from(["admit", "admit", "admit", "summary"]),
    ),
    max_size=400,
)


@given(
    rate=st.floats(min_value=0.5, max_value=200.0),
    burst=st.integers(min_value=2, max_value=50),
    resume_part=st.floats(min_value=0.0, max_value=1.0),
    steps=_steps,
)
def test_never_more_than_burst_plus_rate_t_and_the_count_is_exact(
    rate: float, burst: int, resume_part: float, steps: list[tuple[float, str]]
) -> None:
    resume = 2 + round(resume_part * (burst - 2))
    b = LogBudget(rate, burst, resume)
    now = 1000.0
    start = now
    logged = 0  # lines written: complaints and summaries
    asked = 0  # complaints asked for
    admitted = 0
    summarised = 0  # complaints counted in a summary
    for gap, what in steps:
        now += gap
        if what == "admit":
            asked += 1
            got = b.admit(now)
            if got is not None:
                count, seconds = got
                admitted += 1
                logged += 1
                if count:
                    logged += 1
                    summarised += count
                    assert 0.0 <= seconds <= now - start
        else:
            due = b.summary(now)
            if due is not None:
                count, seconds = due
                assert count > 0  # a summary is never of nothing
                logged += 1
                summarised += count
        # The bound, at every moment: the burst plus what the rate made since the start.
        assert logged <= burst + rate * (now - start) + 1e-6
        # Every complaint is logged, or in exactly one summary, or in the one still due.
        assert admitted + summarised + b.held == asked
        assert (b.held == 0) == (b.held_since is None)


@given(
    rate=st.floats(min_value=0.5, max_value=200.0),
    burst=st.integers(min_value=2, max_value=50),
    flood=st.integers(min_value=0, max_value=500),
)
def test_after_a_quiet_wait_logging_resumes(rate: float, burst: int, flood: int) -> None:
    b = LogBudget(rate, burst)
    for _ in range(flood):
        b.admit(0.0)
    later = b.wait(0.0) + 1e-6
    got = b.admit(later)
    assert got is not None
    assert got[0] == max(0, flood - burst)  # all that was held back, in one summary

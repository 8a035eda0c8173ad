from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.flood import DEFAULT_KICK_AFTER, FloodControl, TokenBucket, Verdict


def test_bucket_starts_full_then_refuses() -> None:
    b = TokenBucket(rate=1.0, burst=3)
    assert [b.allow(10.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_and_caps_at_burst() -> None:
    b = TokenBucket(rate=2.0, burst=3)
    assert all(b.allow(0.0) for _ in range(3))
    assert not b.allow(0.0)
    assert not b.allow(0.25)  # half a token
    assert b.allow(0.5)  # a whole one now
    assert not b.allow(0.5)
    # A long pause refills to burst, not beyond.
    assert [b.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_unlimited() -> None:
    for rate in (0.0, -1.0):
        b = TokenBucket(rate=rate, burst=0)
        assert b.unlimited
        assert all(b.allow(0.0) for _ in range(10_000))


def test_bucket_invalid_burst() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1.0, burst=0)


def test_clock_going_backwards_creates_no_tokens() -> None:
    b = TokenBucket(rate=1.0, burst=1)
    assert b.allow(100.0)
    assert not b.allow(50.0)
    assert not b.allow(100.5)  # still measured from 100.0
    assert b.allow(101.0)


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=200),
)
def test_bucket_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    b = TokenBucket(rate, burst)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += b.allow(now)
        assert allowed <= burst + rate * now + 1e-9


def test_flood_control_drops_then_kicks() -> None:
    fc = FloodControl(rate=1.0, burst=5, kick_after=10)
    verdicts = [fc.check(0.0) for _ in range(5 + 10 + 1)]
    assert verdicts == [Verdict.OK] * 5 + [Verdict.DROP] * 10 + [Verdict.KICK]
    assert fc.kicked
    # Sticky: the caller is closing the connection; nothing gets through any more.
    assert fc.check(1000.0) is Verdict.KICK


def test_typing_fast_is_dropped_but_never_kicked() -> None:
    # 2 lines per second against a limit of 1 per second: half are dropped, for an hour.
    fc = FloodControl(rate=1.0, burst=5, kick_after=10)
    seen = {fc.check(t / 2) for t in range(2 * 3600)}
    assert seen == {Verdict.OK, Verdict.DROP}


def test_sustained_flood_is_kicked() -> None:
    # Drops are tolerated at kick_after per refill period (5 s here): 2/s. A client that
    # has 10 lines/s dropped is a program, and goes within a few seconds.
    fc = FloodControl(rate=1.0, burst=5, kick_after=10)
    for k in range(1000):
        if fc.check(k / 11) is Verdict.KICK:
            break
    else:
        pytest.fail("never kicked")
    assert k / 11 < 5


def test_drops_are_forgiven_over_time() -> None:
    fc = FloodControl(rate=1.0, burst=2, kick_after=3)
    for _ in range(5):  # 2 OK, 3 DROP: at the edge
        fc.check(0.0)
    assert not fc.kicked
    # One refill period (2 s) later the tolerance is back.
    verdicts = [fc.check(2.0) for _ in range(6)]
    assert verdicts == [Verdict.OK] * 2 + [Verdict.DROP] * 3 + [Verdict.KICK]


def test_kick_after_zero_and_none() -> None:
    fc = FloodControl(rate=1.0, burst=1, kick_after=0)
    assert [fc.check(0.0), fc.check(0.0)] == [Verdict.OK, Verdict.KICK]
    fc = FloodControl(rate=1.0, burst=1, kick_after=None)
    assert {fc.check(0.0) for _ in range(10_000)} == {Verdict.OK, Verdict.DROP}
    with pytest.raises(ValueError, match="kick_after"):
        FloodControl(rate=1.0, burst=1, kick_after=-1)


def test_unlimited_flood_control() -> None:
    fc = FloodControl(rate=0, burst=0)
    assert {fc.check(0.0) for _ in range(10_000)} == {Verdict.OK}


def test_default_kick_after() -> None:
    fc = FloodControl(rate=1.0, burst=1)
    verdicts = [fc.check(0.0) for _ in range(DEFAULT_KICK_AFTER + 2)]
    assert verdicts == [Verdict.OK] + [Verdict.DROP] * DEFAULT_KICK_AFTER + [Verdict.KICK]

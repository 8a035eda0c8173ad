"""Histogram buckets as plain integers: each value lands in the first bucket whose bound
holds it, and the sum adds them all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.buckets import LAG_BOUNDS, LATENCY_BOUNDS, Buckets


def test_values_land_in_their_bucket() -> None:
    b = Buckets((0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.5, 2.0, 3.0):
        b.observe(value)
    assert b.counts == [2, 1, 1, 2]  # a value on a bound belongs to it (le)
    assert b.count == 6
    assert b.sum == pytest.approx(5.565)


def test_a_negative_lag_counts_as_zero() -> None:
    b = Buckets(LAG_BOUNDS)
    b.observe(-0.3)  # two clocks that disagree
    assert b.counts[0] == 1 and b.sum == 0.0


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="bounds must increase"):
        Buckets((1.0, 0.5))
    with pytest.raises(ValueError):
        Buckets((1.0, 1.0))


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=200))
def test_every_value_is_counted_once(values: list[float]) -> None:
    b = Buckets(LATENCY_BOUNDS)
    for v in values:
        b.observe(v)
    assert b.count == len(values)
    assert b.sum == pytest.approx(sum(values))
    edges = (float("-inf"), *LATENCY_BOUNDS, float("inf"))
    for i, n in enumerate(b.counts):
        assert n == sum(1 for v in values if edges[i] < v <= edges[i + 1])


def test_add_counts_what_the_other_counted() -> None:
    a, b = Buckets((1.0,)), Buckets((1.0,))
    a.observe(0.5)
    b.observe(0.25)
    b.observe(3.0)
    a.add(b)
    assert a.counts == [2, 1] and a.sum == 3.75
    with pytest.raises(ValueError, match="other bounds"):
        a.add(Buckets((2.0,)))

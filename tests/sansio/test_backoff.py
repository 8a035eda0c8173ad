"""The reconnect backoff: exact sequences with a fixed random source, bounds as properties."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twoway.sansio.backoff import backoff_delays


def take(it: Iterator[float], n: int) -> list[float]:
    return list(islice(it, n))


def fixed(*values: float) -> Callable[[], float]:
    """A random source that returns ``values`` in turn (and fails if asked for more)."""
    it = iter(values)
    return lambda: next(it)


def test_without_jitter_doubles_from_one_second_up_to_the_cap() -> None:
    assert take(backoff_delays(rng=None), 8) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_factor_initial_and_cap_are_honoured() -> None:
    delays = backoff_delays(initial=0.5, factor=3, cap=10, rng=None)
    assert take(delays, 5) == [0.5, 1.5, 4.5, 10, 10]


def test_jitter_spreads_each_delay_by_the_random_source() -> None:
    # rng 0 -> -10 %, 0.5 -> the nominal delay, 0.75 -> +5 %
    delays = backoff_delays(jitter=0.1, rng=fixed(0.0, 0.5, 0.75, 0.0))
    assert take(delays, 4) == pytest.approx([0.9, 2.0, 4.2, 7.2])


def test_jitter_never_goes_above_the_cap() -> None:
    # 20 s +49 % = 29.8; 40 s is capped to 30 before the jitter and stays <= 30 after it
    delays = backoff_delays(initial=20, factor=2, cap=30, jitter=0.5, rng=fixed(0.99, 0.99, 0.0))
    assert take(delays, 3) == pytest.approx([29.8, 30, 15])


def test_the_first_delay_is_capped_too() -> None:
    assert take(backoff_delays(initial=60, cap=30, rng=None), 2) == [30, 30]


def test_a_new_generator_starts_over() -> None:
    """Resetting after a connection that stayed up is starting a new generator."""
    first = backoff_delays(rng=None)
    take(first, 4)
    assert next(first) == 16
    assert next(backoff_delays(rng=None)) == 1


def test_zero_jitter_never_calls_the_random_source() -> None:
    def boom() -> float:
        raise AssertionError("rng called")

    assert take(backoff_delays(jitter=0, rng=boom), 3) == [1, 2, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1},
        {"factor": 0.5},
        {"cap": -1},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need initial >= 0"):
        next(backoff_delays(**kwargs))


@given(
    initial=st.floats(0, 100),
    factor=st.floats(1, 10),
    cap=st.floats(0, 1000),
    jitter=st.floats(0, 0.99),
    draws=st.lists(st.floats(0, 1, exclude_max=True), min_size=30, max_size=30),
)
def test_every_delay_is_within_zero_and_the_cap(
    initial: float, factor: float, cap: float, jitter: float, draws: list[float]
) -> None:
    delays = take(backoff_delays(initial, factor, cap, jitter, rng=fixed(*draws)), 30)
    assert all(0 <= d <= cap for d in delays)
    # and, jitter aside, the sequence never shrinks: each nominal delay is within the
    # jitter band of a non-decreasing series
    nominal = take(backoff_delays(initial, factor, cap, 0, rng=None), 30)
    assert nominal == sorted(nominal)
    for d, n in zip(delays, nominal, strict=True):
        assert n * (1 - jitter) - 1e-9 <= d <= min(cap, n * (1 + jitter)) + 1e-9

"""Reconnect delays: exponential backoff with jitter, as a pure generator.

The random source is passed in, so tests get exact sequences and nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["backoff_delays"]


def backoff_delays(
    initial: float = 1.0,
    factor: float = 2.0,
    cap: float = 30.0,
    jitter: float = 0.1,
    rng: Callable[[], float] | None = None,
) -> Iterator[float]:
    """Yield ``initial``, ``initial*factor``, ... capped at ``cap``, forever.

    Each delay is spread by up to ``±jitter`` (a fraction) using ``rng()`` (a float in
    [0, 1)), so that many clients cut off together do not all come back at the same instant;
    the result never exceeds ``cap`` nor falls below zero. ``rng=None`` disables jitter.
    Start a new generator to reset the sequence (after a connection that stayed up).
    """
    if initial < 0 or factor < 1 or cap < 0 or not 0 <= jitter < 1:
        raise ValueError("need initial >= 0, factor >= 1, cap >= 0 and 0 <= jitter < 1")
    delay = min(initial, cap)
    while True:
        if rng is None or jitter == 0:
            yield delay
        else:
            yield min(cap, max(0.0, delay * (1 + jitter * (2 * rng() - 1))))
        delay = min(cap, delay * factor)

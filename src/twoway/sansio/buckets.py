"""Histogram buckets as plain integers: what a server keeps to describe a spread of values
(an fsync's latency, a message's lag between servers) at the cost of one list increment.

A :class:`Buckets` counts observations by upper bound and keeps their sum; the metrics read
it at scrape time. No lock: it is updated from one thread (the event loop) only, so the
owner of a value measured elsewhere (a worker thread) hands it to the loop first.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["LAG_BOUNDS", "LATENCY_BOUNDS", "Buckets"]

#: Upper bounds (seconds) for a disk's latency: from a cached write (0.1 ms) to a stalled
#: device (10 s).
LATENCY_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0)
#: Upper bounds (seconds) for a message's way between servers: a local Redis (under a
#: millisecond) to a link down for a minute (what was buffered arrives late).
LAG_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 60.0)


class Buckets:
    """Counts of observations per bucket: ``counts[i]`` holds those at most ``bounds[i]``
    and above the bound before; the last count, those above every bound (Prometheus's
    ``le`` buckets, not yet cumulative). ``sum`` adds every observed value.

    A negative value (two clocks that disagree) counts in the first bucket and adds 0 to
    the sum: a lag is never below zero."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bounds must increase: {bounds!r}")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value."""
        if value < 0.0:
            value = 0.0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Buckets) -> None:
        """Count what ``other`` (with the same bounds) counted. Raises :class:`ValueError`
        if the bounds differ."""
        if other.bounds != self.bounds:
            raise ValueError("cannot add buckets with other bounds")
        counts = self.counts
        for i, n in enumerate(other.counts):
            counts[i] += n
        self.sum += other.sum

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)

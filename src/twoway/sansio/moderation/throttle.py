"""Throttles keyed by address or name: failed password attempts, and joins per address.

Pure logic: the caller passes the time (seconds, monotonic) to every call. Both keep at most
``max_keys`` keys (the oldest forgotten first), so a flood of new addresses costs bounded
memory.
"""

from __future__ import annotations

from twoway.sansio.flood import TokenBucket

__all__ = ["AttemptThrottle", "JoinThrottle"]

#: Keys a throttle remembers: a few megabytes at most.
DEFAULT_MAX_KEYS = 10000


class AttemptThrottle:
    """Failed attempts (passwords): ``free`` failures are allowed, then each further failure
    makes the key wait ``base`` seconds, doubling up to ``cap``. A success forgets the key.

    :meth:`wait` says how long the key must still wait before its next attempt may even be
    checked (0: it may try now).
    """

    __slots__ = ("_keys", "base", "cap", "free", "max_keys")

    def __init__(
        self,
        *,
        free: int = 3,
        base: float = 1.0,
        cap: float = 300.0,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self.max_keys = max_keys
        # key -> (failures, not before)
        self._keys: dict[str, tuple[int, float]] = {}

    def wait(self, key: str, now: float) -> float:
        """Seconds ``key`` must wait before its next attempt (0.0: now)."""
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry[1] - now)

    def failed(self, key: str, now: float) -> float:
        """A failed attempt for ``key``; returns the wait it now has (0.0 while free)."""
        failures = self._keys.pop(key, (0, 0.0))[0] + 1
        delay = 0.0
        if failures > self.free:
            delay = min(self.cap, self.base * 2 ** (failures - self.free - 1))
        self._keys[key] = (failures, now + delay)
        if len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return delay

    def succeeded(self, key: str) -> None:
        """A successful attempt: ``key`` starts afresh."""
        self._keys.pop(key, None)


class JoinThrottle:
    """Connections per address: a :class:`~twoway.sansio.flood.TokenBucket` each (``burst``
    at once, ``rate`` per second after). ``rate <= 0`` admits everything."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, key: str, now: float) -> bool:
        """Whether a connection from ``key`` may join now (and count it)."""
        if self.rate <= 0:
            return True
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst)
        self._buckets[key] = bucket  # moved to the end: the most recently used
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return bucket.allow(now)

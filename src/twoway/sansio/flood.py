"""Rate limiting for lines from one client, and when to give up on a flooder.

Pure logic: the caller passes the current time (any monotonic clock, in seconds) to every
call, so tests drive the clock by hand.

Policy (one per connection, see :class:`FloodControl`): a client may send ``burst`` lines
at once and ``rate`` lines per second on average. Lines beyond that are dropped (the caller
may tell the client). The dropped lines are themselves rate limited: a client that has
more than ``kick_after`` lines dropped within the time a full bucket takes to refill
(``burst / rate`` seconds) is not a person typing fast but a program flooding, and is to be
disconnected.
"""

from __future__ import annotations

import enum

__all__ = ["DEFAULT_KICK_AFTER", "FloodControl", "TokenBucket", "Verdict"]

# 50 refused lines within one refill period: a person who pastes a long text into a
# rate-limited chat loses a few lines, only a program gets that far.
DEFAULT_KICK_AFTER = 50


class TokenBucket:
    """A token bucket: up to ``burst`` events at once, ``rate`` per second on average.

    The bucket starts full. ``rate <= 0`` disables the limit (:meth:`allow` is always
    true). ``burst`` must be at least 1 when the limit is enabled, otherwise nothing could
    ever pass; that is a programming error and raises :class:`ValueError`.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if rate > 0 and burst < 1:
            raise ValueError(f"burst must be at least 1 when rate > 0 (got {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    @property
    def unlimited(self) -> bool:
        """True when the bucket lets everything through (``rate <= 0``)."""
        return self.rate <= 0

    def allow(self, now: float) -> bool:
        """Take one token if there is one; return whether the event may go ahead.

        ``now`` is in seconds on a monotonic clock. A clock that goes backwards is treated
        as no time having passed (no tokens are created or lost).
        """
        if self.rate <= 0:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refill(self, now: float) -> None:
        last = self._last
        self._last = now if last is None else max(now, last)
        if last is not None and now > last:
            self._tokens = min(float(self.burst), self._tokens + (now - last) * self.rate)


class Verdict(enum.Enum):
    """What to do with one line: deliver it, drop it, or disconnect its sender."""

    OK = "ok"
    DROP = "drop"
    KICK = "kick"


class FloodControl:
    """Per-connection flood policy: :meth:`check` once per received line.

    ``rate`` (lines per second) and ``burst`` (lines at once) are the allowed pace; ``rate
    <= 0`` disables everything (always :attr:`Verdict.OK`). ``kick_after`` is how many
    dropped lines are tolerated per refill period (``burst / rate`` seconds, at least one
    second) before the verdict becomes :attr:`Verdict.KICK`; ``None`` never kicks and
    ``0`` kicks on the first dropped line. Once a client is kicked every later check says
    ``KICK``: the caller is expected to close the connection, with reason ``"flooding"``.
    """

    __slots__ = ("_can_kick", "_kicked", "_lines", "_strikes")

    def __init__(
        self, rate: float, burst: int, *, kick_after: int | None = DEFAULT_KICK_AFTER
    ) -> None:
        if kick_after is not None and kick_after < 0:
            raise ValueError(f"kick_after must be >= 0 or None (got {kick_after})")
        self._lines = TokenBucket(rate, burst)
        self._kicked = False
        self._can_kick = rate > 0 and kick_after is not None
        # The drops are a second token bucket: ``kick_after`` of them at once, refilled over
        # the period the line bucket takes to refill. Running it dry means the client kept
        # sending well past its limit for a whole period. With ``kick_after == 0`` there is
        # no bucket: the first drop kicks.
        self._strikes: TokenBucket | None = None
        if self._can_kick and kick_after:
            period = max(burst / rate, 1.0)
            self._strikes = TokenBucket(kick_after / period, kick_after)

    @property
    def kicked(self) -> bool:
        """True once :meth:`check` has returned :attr:`Verdict.KICK`."""
        return self._kicked

    def check(self, now: float) -> Verdict:
        """Account for one received line at time ``now`` (seconds, monotonic)."""
        if self._kicked:
            return Verdict.KICK
        if self._lines.allow(now):
            return Verdict.OK
        if not self._can_kick:
            return Verdict.DROP
        strikes = self._strikes
        if strikes is not None and strikes.allow(now):
            return Verdict.DROP
        self._kicked = True
        return Verdict.KICK

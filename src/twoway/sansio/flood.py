"""Rate limiting for lines from one client, and when to give up on a flooder.

Pure logic: the caller passes the current time (any monotonic clock, in seconds) to every
call, so tests drive the clock by hand.

Policy (one per connection, see :class:`FloodControl`): a client may send ``burst``
messages at once and ``rate`` messages per second on average. A *message* is a line, or, with
``paste_lines > 1``, up to that many lines that arrived in one read (a paste: a person who
pastes 15 lines has sent one message, not 15). Beyond the pace, with ``lag`` > 0, the
client is first *slowed* (:attr:`Verdict.SLOW`: the line is delivered and the caller stops
reading from the client for :attr:`FloodControl.delay` seconds, like ergo's fakelag) for up
to ``lag`` messages of debt; only past that are messages dropped (the caller tells the
client). The dropped messages are themselves rate limited: a client that has more than
``kick_after`` dropped within the time a full bucket takes to refill (``burst / rate``
seconds) is not a person typing fast but a program flooding, and is to be disconnected.
"""

from __future__ import annotations

import enum

__all__ = [
    "DEFAULT_KICK_AFTER",
    "DEFAULT_PASTE_LINES",
    "FloodControl",
    "TokenBucket",
    "Verdict",
]

# 50 refused messages within one refill period: a person who pastes a long text into a
# rate-limited chat loses a few lines, only a program gets that far.
DEFAULT_KICK_AFTER = 50
#: Lines of one read that count as one message: a screenful of pasted text.
DEFAULT_PASTE_LINES = 20


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
    """What to do with one line: deliver it, deliver it and stop reading from its sender for
    a moment, drop it, or disconnect its sender."""

    OK = "ok"
    SLOW = "slow"
    DROP = "drop"
    KICK = "kick"


class FloodControl:
    """Per-connection flood policy: :meth:`check` once per received line.

    ``rate`` (messages per second) and ``burst`` (messages at once) are the allowed pace;
    ``rate <= 0`` disables everything (always :attr:`Verdict.OK`). ``paste_lines`` lines of
    one read count as one message (1: every line is one). ``lag`` is how many messages past
    the pace are slowed (:attr:`Verdict.SLOW`) before any is dropped (0: drop at once).
    ``kick_after`` is how many dropped messages are tolerated per refill period (``burst /
    rate`` seconds, at least one second) before the verdict becomes :attr:`Verdict.KICK`;
    ``None`` never kicks and ``0`` kicks on the first dropped message. Once a client is
    kicked every later check says ``KICK``: the caller is expected to close the connection,
    with reason ``"flooding"``.
    """

    __slots__ = (
        "_block",
        "_block_verdict",
        "_can_kick",
        "_kicked",
        "_last",
        "_strikes",
        "_tokens",
        "burst",
        "delay",
        "fresh",
        "lag",
        "paste_lines",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        kick_after: int | None = DEFAULT_KICK_AFTER,
        paste_lines: int = 1,
        lag: int = 0,
    ) -> None:
        if kick_after is not None and kick_after < 0:
            raise ValueError(f"kick_after must be >= 0 or None (got {kick_after})")
        if rate > 0 and burst < 1:
            raise ValueError(f"burst must be at least 1 when rate > 0 (got {burst})")
        if paste_lines < 1 or lag < 0:
            raise ValueError(f"paste_lines must be >= 1 and lag >= 0 (got {paste_lines}, {lag})")
        self.rate = rate
        self.burst = burst
        self.paste_lines = paste_lines
        self.lag = lag
        #: After :attr:`Verdict.SLOW`: how long to stop reading from the client, in seconds.
        self.delay = 0.0
        #: Whether the last line checked began a message (else it joined a paste): a dropped
        #: message is announced once, on its first line.
        self.fresh = True
        # The message bucket, allowed to go ``lag`` tokens into debt (the slowed messages).
        self._tokens = float(burst)
        self._last: float | None = None
        # Lines counted in the current message (a paste), and that message's verdict.
        self._block = 0
        self._block_verdict = Verdict.OK
        self._kicked = False
        self._can_kick = rate > 0 and kick_after is not None
        # The drops are a second token bucket: ``kick_after`` of them at once, refilled over
        # the period the message bucket takes to refill. Running it dry means the client kept
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

    def check(self, now: float, same_read: bool = False) -> Verdict:
        """Account for one received line at time ``now`` (seconds, monotonic).
        ``same_read`` says the line arrived in the same read as the previous one: up to
        ``paste_lines`` such lines make one message, and share its verdict (a slowed
        message's other lines are delivered without slowing again)."""
        if self._kicked:
            return Verdict.KICK
        if self.rate <= 0:
            return Verdict.OK
        if same_read and self._block < self.paste_lines:
            self.fresh = False
            self._block += 1
            verdict = self._block_verdict
            return Verdict.OK if verdict is Verdict.SLOW else verdict
        self._block = 1
        self.fresh = True
        verdict = self._take(now)
        self._block_verdict = verdict
        return verdict

    def _take(self, now: float) -> Verdict:
        last = self._last
        self._last = now if last is None else max(now, last)
        if last is not None and now > last:
            self._tokens = min(float(self.burst), self._tokens + (now - last) * self.rate)
        tokens = self._tokens
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return Verdict.OK
        if tokens - 1.0 >= -self.lag:
            self._tokens = tokens = tokens - 1.0
            # Until the bucket holds a whole token again: the pace the client must keep.
            self.delay = (1.0 - tokens) / self.rate
            return Verdict.SLOW
        if not self._can_kick:
            return Verdict.DROP
        strikes = self._strikes
        if strikes is not None and strikes.allow(now):
            return Verdict.DROP
        self._kicked = True
        return Verdict.KICK

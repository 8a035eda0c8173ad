"""How many log lines may be written now: a token bucket with an exact count of the rest.

Pure logic: the caller passes the time (any monotonic clock, in seconds) to every call, so
tests drive the clock by hand. :class:`LogBudget` bounds the lines of a logger that clients
can trigger (their mistakes, see :mod:`twoway.net.complaints`) however fast they make them,
and counts what it held back so that one summary line can say how many.
"""

from __future__ import annotations

__all__ = ["LogBudget"]


class LogBudget:
    """At most ``burst`` log lines at once and ``rate`` per second on average, summaries
    included; the lines held back are counted, exactly.

    Over any span of ``t`` seconds from the first call, at most ``burst + rate * t`` lines
    pass. Once a line is held back, the next ones are held back too until ``resume``
    tokens have gathered (``resume / rate`` seconds of quiet, or of a flood's share): then
    :meth:`admit` (or :meth:`summary`) hands over the count held back and the span it covers,
    for one summary line. This hysteresis means a steady flood logs one summary and
    ``resume - 1`` lines every ``resume / rate`` seconds, rather than a summary of one line
    between every two lines. Every call of :meth:`admit` is either admitted or counted in
    exactly one summary (or in :attr:`held`, the summary still due).

    ``rate`` must be positive, ``burst`` at least 2 and ``resume`` between 2 and ``burst``
    (default: one second's worth, within those bounds): a resuming line needs a token for
    the summary and one for itself. Anything else is a programming error: ``ValueError``.
    A clock that goes backwards counts as no time passing (no token made or lost).
    """

    __slots__ = ("_last", "_tokens", "burst", "held", "held_since", "rate", "resume")

    def __init__(self, rate: float, burst: int, resume: int | None = None) -> None:
        if resume is None:
            resume = min(burst, max(2, round(rate)))
        if not (rate > 0 and burst >= 2 and 2 <= resume <= burst):
            raise ValueError(
                f"need rate > 0, burst >= 2 and 2 <= resume <= burst ({rate}, {burst}, {resume})"
            )
        self.rate = rate
        self.burst = burst
        self.resume = resume
        #: Lines held back since the last summary.
        self.held = 0
        #: When the first of them was held back (``None`` when none is).
        self.held_since: float | None = None
        self._tokens = float(burst)
        self._last: float | None = None

    def admit(self, now: float) -> tuple[int, float] | None:
        """Ask to log one line at ``now``. ``None``: stay silent (the line is counted in
        :attr:`held`). Otherwise log it, after a summary if the first number is not 0:
        ``(count, seconds)`` says how many lines were held back, over how many seconds
        (from the first held back to now); ``(0, 0.0)`` when nothing was."""
        now = self._refill(now)
        if self.held:
            if self._tokens < self.resume:
                self.held += 1
                return None
            self._tokens -= 2.0  # the summary's token and the line's
            return self._report(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return (0, 0.0)
        self.held = 1
        self.held_since = now
        return None

    def summary(self, now: float) -> tuple[int, float] | None:
        """The summary alone, if one is due and logging has resumed (at least ``resume``
        tokens): ``(count, seconds)`` as :meth:`admit` gives it, the summary's token taken;
        else ``None``. For a timer that reports a flood once it stops, when no later line
        would."""
        now = self._refill(now)
        if not self.held or self._tokens < self.resume:
            return None
        self._tokens -= 1.0
        return self._report(now)

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until logging resumes (``0.0`` if it would now): when to
        call :meth:`summary` after a line was held back."""
        self._refill(now)
        need = (self.resume if self.held else 1.0) - self._tokens
        return max(0.0, need / self.rate)

    def _report(self, now: float) -> tuple[int, float]:
        count, since = self.held, self.held_since
        self.held = 0
        self.held_since = None
        return (count, now - since) if count and since is not None else (0, 0.0)

    def _refill(self, now: float) -> float:
        """Add the tokens made since the last call; return the time to use: ``now``, or the
        latest time seen if the clock went backwards."""
        last = self._last
        if last is not None:
            if now <= last:
                return last
            self._tokens = min(float(self.burst), self._tokens + (now - last) * self.rate)
        self._last = now
        return now

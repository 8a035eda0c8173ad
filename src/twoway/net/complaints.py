"""The log lines of clients' mistakes: one per bad input, bounded per process.

Every bad input gets one ``error: ...`` line to the client and, through :func:`complain`,
one line in the server's log, on the ``twoway.complaints`` logger::

    INFO    127.0.0.1:50112: error: line too long (max 65536 bytes)
    INFO    127.0.0.1:50114 (alice in #lobby): error: unknown command "/frob" (type /help)
    WARNING suppressed 931 similar client errors in the last 1.0 s

A client can make mistakes as fast as it can send, so the lines are rate-limited for the
whole process (a :class:`~twoway.sansio.logbudget.LogBudget`): a flood can neither fill the
disk nor spend the server's time formatting lines, and what was held back is counted in one
summary line (``WARNING``: a flood is worth noticing) when logging resumes, or once the
flood stops. A held-back complaint costs a comparison and a counter, no formatting.

What is logged elsewhere is not a complaint: refused handshakes and connections, failed TLS
handshakes, PROXY headers and wrong passwords have their own rate-limited lines, and a
connection closed for a reason (idle, too slow, flooding...) says so in its ``closed`` line.
Passwords are never in a complaint: the errors quote at most a command's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from twoway.sansio.logbudget import LogBudget

__all__ = [
    "COMPLAINTS",
    "COMPLAINT_BURST",
    "COMPLAINT_RATE",
    "COMPLAINT_RESUME",
    "Complaints",
    "complain",
    "complaints_log",
]

#: The logger of clients' mistakes: ``--log-level warning`` mutes them (and a muted logger
#: takes nothing from the budget, so no summary follows either).
complaints_log = logging.getLogger("twoway.complaints")

# Complaint lines per second on average, per process, summaries included. At about 100 bytes
# a line that is 2 KB/s, 170 MB a day under a flood that never stops: bounded, and far below
# journald's default rate limit (10,000 lines per 30 s per service), which would otherwise
# start dropping the server's other lines, the ones that matter.
COMPLAINT_RATE = 20.0
# Lines at once before the rate applies: a client pasting a screenful of bad commands, or a
# hundred clients each making one mistake at the same moment, are logged line for line.
COMPLAINT_BURST = 100
# Once lines are held back, logging resumes when a second's worth of the rate has gathered:
# a steady flood then logs one summary and 19 sample lines a second, not a summary of one
# line between every two lines.
COMPLAINT_RESUME = 20


class Complaints:
    """One log line per client mistake on ``logger``, within a :class:`LogBudget` of
    ``rate`` lines per second, ``burst`` at once (see the module docstring).

    ``clock`` is monotonic seconds (injected by tests). With ``timers`` (the default), a
    summary still due when a flood stops is logged from a timer on the running event loop
    once logging could resume; without a running loop (or ``timers=False``), it waits for
    the next complaint or a call of :meth:`flush`.
    """

    def __init__(
        self,
        logger: logging.Logger = complaints_log,
        *,
        rate: float = COMPLAINT_RATE,
        burst: int = COMPLAINT_BURST,
        resume: int = COMPLAINT_RESUME,
        clock: Callable[[], float] = time.monotonic,
        timers: bool = True,
    ) -> None:
        self.logger = logger
        self.budget = LogBudget(rate, burst, resume)
        self.clock = clock
        self.timers = timers
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def complain(
        self,
        peer: str,
        text: str,
        *,
        nick: str | None = None,
        room: str | None = None,
        level: int = logging.INFO,
    ) -> None:
        """Log ``peer: text`` (``text`` as the client read it: ``error: ...``), naming the
        chat ``nick`` and ``room`` when given, unless the budget holds it back (then it is
        counted for the summary). Never raises; cheap when held back or when ``level`` is
        not enabled (then it is not counted either)."""
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        now = self.clock()
        admitted = self.budget.admit(now)
        if admitted is None:
            self._arm(now)
            return
        if admitted[0]:
            self._summarise(*admitted)
        if nick is None:
            who = peer
        elif room is None:
            who = f"{peer} ({nick})"
        else:
            who = f"{peer} ({nick} in {room})"
        extra: dict[str, object] = {"event": "client_error", "peer": peer, "error": text}
        if nick is not None:
            extra["nick"] = nick
        if room is not None:
            extra["room"] = room
        logger.log(level, "%s: %s", who, text, extra=extra)

    def flush(self) -> None:
        """Log the summary of the lines held back, if one is due and logging has resumed;
        otherwise (still flooded) try again later, from a timer. Idempotent."""
        self._timer = None
        now = self.clock()
        due = self.budget.summary(now)
        if due is not None:
            self._summarise(*due)
        elif self.budget.held:
            self._arm(now)

    def _summarise(self, count: int, seconds: float) -> None:
        self.logger.warning(
            "suppressed %d similar client errors in the last %.1f s",
            count,
            seconds,
            extra={
                "event": "client_errors_suppressed",
                "suppressed": count,
                "seconds": round(seconds, 3),
            },
        )

    def _arm(self, now: float) -> None:
        """A flush from a timer when logging can resume: a flood that stops is reported."""
        if not self.timers:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None and self._timer_loop is loop:
            return  # one is on its way (a timer left on a loop since closed is replaced)
        self._timer_loop = loop
        # A little past the exact moment, so that float rounding cannot make it early.
        self._timer = loop.call_later(self.budget.wait(now) + 0.001, self.flush)


#: The process's complaints: one budget for every server and service of the process.
COMPLAINTS = Complaints()


def complain(
    peer: str,
    text: str,
    *,
    nick: str | None = None,
    room: str | None = None,
    level: int = logging.INFO,
) -> None:
    """One line in the log for a client's mistake, within the process's budget: see
    :meth:`Complaints.complain`. Call it where the ``error: ...`` reply is sent."""
    COMPLAINTS.complain(peer, text, nick=nick, room=room, level=level)

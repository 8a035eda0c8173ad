"""What the chat keeps per connection: the client id and its flood control, with fakelag.

:class:`ChatClient` is the ``state`` of every chat connection. Flood control
(:class:`~twoway.sansio.flood.FloodControl`) decides per line; slowing a client down
(fakelag, :meth:`ChatClient.slow_down`) stops reading from its connection for a moment, so
its kernel buffer and then its sender wait, while the line itself is delivered.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from twoway.sansio.flood import FloodControl

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["ChatClient", "flood_control"]


class ChatClient:
    """One chat connection's state: its client id and flood control (None: off)."""

    __slots__ = ("cid", "flood", "paused", "read_mark")

    def __init__(self, cid: int, flood: FloodControl | None) -> None:
        self.cid = cid
        self.flood = flood
        #: ``bytes_read`` when the last line was seen: lines that see the same value arrived
        #: in one read (a paste, for flood control).
        self.read_mark = -1
        #: Reading paused by fakelag.
        self.paused = False

    def slow_down(self, conn: Conn, delay: float) -> None:
        """Fakelag: stop reading from ``conn`` for ``delay`` seconds (its kernel buffer, then
        its sender, wait meanwhile). Nothing if it is already slowed."""
        if self.paused:
            return
        self.paused = True
        conn.pause_reading()
        asyncio.get_running_loop().call_later(delay, self._resume, conn)

    def _resume(self, conn: Conn) -> None:
        self.paused = False
        if not conn.is_closing:
            conn.resume_reading()


def flood_control(rate: float, burst: int, paste_lines: int) -> FloodControl | None:
    """A new client's flood control: ``rate`` lines a second with bursts of ``burst`` (a
    paste of up to ``paste_lines`` lines in one read counts as one); None if ``rate`` is 0.
    It slows a client down (fakelag) for up to a burst's worth of lines before dropping any."""
    if rate <= 0:
        return None
    return FloodControl(rate, burst, paste_lines=paste_lines, lag=burst)

"""The server side of long transfers on a terminal: ``twoway serve dump`` and ``serve file``
draw one tqdm bar per transfer (the peer, bytes, rate, and the ETA when the size is known)
while stderr is a terminal, and never otherwise, so logs and pipes stay clean.

A service shows progress by having a ``progress(conn)`` method that returns ``(done,
total)`` for a connection (``total`` None when unknown) or None. The counters are read a
few times a second: nothing is added to the path of the bytes, which ``sendfile`` or
``splice`` may move without passing through Python. A bar appears once a transfer has lasted
:data:`SHOW_AFTER` seconds (short ones would only flicker) and goes when it ends: the access
log's ``closed`` line says what it came to. While bars are drawn, log lines are written above
them (through ``tqdm.write``), not through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.net.server import Server

__all__ = ["MAX_BARS", "REFRESH", "SHOW_AFTER", "show_transfers", "wanted"]

#: How often the bars are redrawn, seconds.
REFRESH = 0.25
#: A transfer gets a bar once it has lasted this long, seconds.
SHOW_AFTER = 1.0
#: At most this many bars at once (more transfers get none: a server's terminal is no place
#: for hundreds).
MAX_BARS = 8

Progress = Callable[["Conn"], "tuple[int, int | None] | None"]


def wanted(service: object) -> Progress | None:
    """The service's ``progress`` method, if it has one and stderr is a terminal where tqdm
    can draw; else None (nothing to show)."""
    progress = getattr(service, "progress", None)
    if progress is None or not _isatty(sys.stderr):
        return None
    try:
        import tqdm  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
    except ImportError:  # an install without it: no bars, everything else works
        return None
    return progress  # type: ignore[no-any-return]


async def show_transfers(server: Server, progress: Progress, refresh: float = REFRESH) -> None:
    """Draw the bars of ``server``'s transfers until cancelled, then close them."""
    from tqdm import tqdm

    bars: dict[Conn, tuple[Any, int]] = {}  # the bar, and the count it shows
    with _logs_above_bars():
        try:
            while True:
                now = time.time()
                shown = set()
                conn: Conn
                for conn in list(server.connections):
                    state = progress(conn)
                    if state is None or now - conn.opened_at < SHOW_AFTER:
                        continue
                    done, total = state
                    entry = bars.get(conn)
                    if entry is None:
                        if len(bars) >= MAX_BARS:
                            continue
                        bar = tqdm(
                            total=total,
                            desc=conn.peer,
                            unit="B",
                            unit_scale=True,
                            unit_divisor=1024,
                            file=sys.stderr,
                            leave=False,
                            **({"dynamic_ncols": True} if _columns() else {"ncols": 80}),
                        )
                        entry = (bar, 0)
                    bar, was = entry
                    if done != was:
                        bar.update(done - was)
                    bars[conn] = (bar, done)
                    shown.add(conn)
                for conn in [c for c in bars if c not in shown]:
                    _close(bars.pop(conn)[0])
                await asyncio.sleep(refresh)
        finally:
            for bar, _ in bars.values():
                _close(bar)


def _close(bar: Any) -> None:
    with contextlib.suppress(Exception):  # a closed terminal must not stop the server
        bar.close()


class _AboveBars:
    """A stream for the log handler: each line goes through ``tqdm.write``, which clears
    the bars, writes the line and draws them again."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, end="", file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _logs_above_bars() -> Iterator[None]:
    handlers = [
        h
        for h in logging.getLogger("twoway").handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
    ]
    for h in handlers:
        h.setStream(_AboveBars(sys.stderr))
    try:
        yield
    finally:
        for h in handlers:
            h.setStream(sys.stderr)


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False

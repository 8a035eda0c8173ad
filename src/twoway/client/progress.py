"""Long transfers are not silent: ``twoway connect -o FILE`` and a file piped into
``twoway connect`` show progress on stderr while it is a terminal (bytes, rate, and the ETA
when the size is known), with tqdm; never when stderr is not a terminal, so logs and pipes
stay clean. ``-v`` ends with a one-line summary wherever stderr goes.

The counters are read from the links a few times a second (:class:`Meter`): nothing is
added to the path of the bytes, which a ``sendfile`` may move without passing through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Clock", "Meter", "format_bytes", "run_progress", "summary", "upload_size"]

#: How often the bars are redrawn (tqdm also limits its own redraws).
REFRESH = 0.25


def format_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``47.7 MiB``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def upload_size(fd: int = 0) -> int | None:
    """The size of standard input if it is a regular file (``< file``), else ``None``."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def summary(sent: int, received: int, seconds: float) -> str:
    """``sent 1.0 MiB, received 2.0 MiB in 3.2 s (0.9 MiB/s)``: the rate of both together."""
    rate = (sent + received) / seconds if seconds > 0 else 0.0
    return (
        f"sent {format_bytes(sent)}, received {format_bytes(received)} in {seconds:.1f} s "
        f"({format_bytes(rate)}/s)"
    )


@dataclass
class Meter:
    """One direction's bar: ``count()`` reads its total, ``total`` is its size if known."""

    label: str
    count: Callable[[], int]
    total: int | None = None


def _tqdm(meter: Meter, position: int) -> Any | None:
    try:
        from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]
    except ImportError:  # an install without it: no bars, everything else works
        return None
    return tqdm(
        total=meter.total,
        desc=meter.label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        position=position,
        leave=True,
        # A terminal that does not tell its width (0 columns) would get empty bars.
        **({"dynamic_ncols": True} if _columns() else {"ncols": 80}),
    )


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


async def run_progress(meters: Sequence[Meter], refresh: float = REFRESH) -> None:
    """Draw one bar per meter on stderr until cancelled; then draw the last counts and close
    the bars. Does nothing when stderr is not a terminal or tqdm is not installed."""
    if not meters or not _isatty(sys.stderr):
        return
    made = [_tqdm(meter, i) for i, meter in enumerate(meters)]
    bars = [bar for bar in made if bar is not None]
    if len(bars) != len(meters):
        return
    shown = [0] * len(meters)

    def update() -> None:
        for i, (meter, bar) in enumerate(zip(meters, bars, strict=True)):
            now = meter.count()
            if now != shown[i]:
                bar.update(now - shown[i])
                shown[i] = now

    try:
        while True:
            update()
            await asyncio.sleep(refresh)
    finally:
        update()
        for bar in bars:
            with contextlib.suppress(Exception):  # a closed terminal must not stop the exit
                bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Clock:
    """Seconds since it was made (for the summary)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since it was made."""
        return time.monotonic() - self.started

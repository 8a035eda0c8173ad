"""Durations as people type them: ``30s``, ``10m``, ``2h``, ``7d``, ``1w``, ``1h30m``.

Pure functions; no clock. :func:`parse_duration` reads one, :func:`format_duration` writes
the shortest such spelling of a number of seconds (whole seconds).
"""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d{1,9})([smhdw])")
_WHOLE = re.compile(r"(?:\d{1,9}[smhdw])+")
#: The longest duration accepted (ten years): beyond that, say "permanent" (no duration).
MAX_DURATION = 10 * 365 * 86400


def parse_duration(text: str) -> int | None:
    """Seconds in ``text`` (``10m`` is 600; parts add up: ``1h30m`` is 5400), or None if
    ``text`` is not a duration (a bare number, a unit missing, zero, over ten years)."""
    t = text.strip().lower()
    if not _WHOLE.fullmatch(t):
        return None
    total = sum(int(n) * _UNITS[u] for n, u in _PART.findall(t))
    if total <= 0 or total > MAX_DURATION:
        return None
    return total


def format_duration(seconds: float) -> str:
    """``seconds`` (rounded up to whole seconds, at least 1) as ``1w2d3h4m5s``, largest unit
    first and zero parts left out."""
    left = max(1, int(-(-seconds // 1)))
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        n, left = divmod(left, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)

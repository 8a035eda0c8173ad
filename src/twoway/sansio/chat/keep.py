"""``--keep``: how much room history a durable store keeps, by count and/or age.

``10000`` keeps each room's newest 10 000 lines, ``30d`` the lines of the last thirty days,
``10000,30d`` whichever is less. Ages take a unit: ``s``, ``m``, ``h``, ``d`` or ``w``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_KEEP", "KeepPolicy", "parse_keep"]

#: The default: ten thousand lines per room (about 2 MB of a chatty room), any age.
DEFAULT_KEEP = "10000"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    """Keep at most ``lines`` per room (None: any number) no older than ``age`` seconds
    (None: any age)."""

    lines: int | None = None
    age: float | None = None

    def oldest_seq(self, last: int) -> int:
        """The number of the oldest line to keep when the newest is ``last`` (by count)."""
        return 1 if self.lines is None else max(1, last - self.lines + 1)

    def oldest_time(self, now: float) -> float | None:
        """Lines stamped before this (seconds, same clock as ``now``) go; None: no age limit."""
        return None if self.age is None else now - self.age

    def describe(self) -> str:
        """``10000 lines per room, 30 days`` — for the ready line."""
        parts = []
        if self.lines is not None:
            parts.append(f"{self.lines} lines per room")
        if self.age is not None:
            parts.append(f"{self.age / 86400:g} days" if self.age >= 86400 else f"{self.age:g} s")
        return ", ".join(parts) or "everything"


def parse_keep(raw: str) -> KeepPolicy:
    """``N``, ``AGE`` or ``N,AGE`` (either order). Raises :class:`ValueError` with a message
    that names what is wrong."""
    lines: int | None = None
    age: float | None = None
    parts = [p.strip() for p in raw.split(",")]
    if not raw.strip() or len(parts) > 2:
        raise ValueError(f"keep = {raw!r}: use N lines, an age (30d) or both (10000,30d)")
    for part in parts:
        if part.isdigit():
            if lines is not None or int(part) < 1:
                raise ValueError(f"keep = {raw!r}: one line count, at least 1")
            lines = int(part)
            continue
        m = _AGE.fullmatch(part)
        if m is None or age is not None:
            raise ValueError(
                f"keep = {raw!r}: {part!r} is neither a line count nor an age "
                "(e.g. 90s, 12h, 30d, 2w)"
            )
        age = float(m.group(1)) * _UNITS[m.group(2)]
        if age <= 0:
            raise ValueError(f"keep = {raw!r}: the age must be more than 0")
    return KeepPolicy(lines, age)

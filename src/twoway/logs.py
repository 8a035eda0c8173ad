"""Logging set-up for the ``twoway`` process (the library itself only emits records)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

__all__ = ["JsonFormatter", "RepeatFilter", "setup_logging"]


class RepeatFilter(logging.Filter):
    """Let through at most one record per message per ``interval`` seconds.

    For loggers that are not ours (asyncio's) and can repeat one line per event: thousands of
    resets must not become thousands of identical lines. The next record let through after a
    quiet spell says how many were held back.
    """

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)  # the message template: one "cause"
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        if len(self._last) > 1000:  # a bound on the keys, whatever the messages
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it not logged)"
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` (and ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", "%H:%M:%S")


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Send twoway's log records to stderr, one line each, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("twoway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.handlers[:] = [handler]
    asyncio_log.propagate = False
    asyncio_log.filters[:] = [RepeatFilter()]

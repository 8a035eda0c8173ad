"""Logging set-up for the ``twoway`` process (the library itself only emits records).

Three kinds of lines, each with its own say over whether it shows:

* the **process** lines (loggers ``twoway.process`` and ``twoway.workers``: the ready line,
  signals, shutdown, limits lowered, workers restarted) always show, whatever
  ``--log-level``: scripts wait for the ready line, and an operator must never wonder why a
  server stopped;
* the **access log**, one line per connection (loggers ``twoway.access`` and
  ``twoway.server``: ``connection from``, ``closed ...``, rejections) follows
  ``--access-log/--no-access-log`` (on by default), like uvicorn's;
* everything else follows ``--log-level``.

``--log-format json`` writes one object per line with real fields: ``ts`` (ISO-8601, local
time with its offset), ``level``, ``logger``, ``msg``, then whatever the call passed with
``extra=`` (``event``, ``peer``, ``bytes_in``, ``bytes_out``, ``duration_s``, ``reason``, ...)
and the process context (``service``, ``worker``). A record without extras is still one valid
object. The text format's time stamp is ``--log-time``: ``time`` (``12:00:00.001``), ``date``,
``iso`` or ``none`` (for journald, which stamps lines itself).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "ACCESS_LOGGERS",
    "LIFECYCLE_LOGGERS",
    "LOG_TIMES",
    "PROCESS_LOGGER",
    "ContextFilter",
    "JsonFormatter",
    "RepeatFilter",
    "TextFormatter",
    "iso_time",
    "log_context",
    "setup_logging",
]

#: The logger of the lines that always show (ready line, signals, shutdown).
PROCESS_LOGGER = "twoway.process"
#: The loggers whose lines always show: the process's and the workers' supervisor's.
LIFECYCLE_LOGGERS = (PROCESS_LOGGER, "twoway.workers")
#: The loggers of the per-connection lines. ``twoway.server`` logs them today, alongside
#: nothing else at INFO; ``twoway.access`` is where they belong.
ACCESS_LOGGERS = ("twoway.access", "twoway.server")
#: The text format's time stamps.
LOG_TIMES = ("time", "date", "iso", "none")

# The attributes every LogRecord has: anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# Fields the JSON formatter writes itself, in this order, before the extras.
_OWN = ("ts", "level", "logger", "msg")

# What the process adds to every record (the service, the worker number): set by the runner.
_context: dict[str, Any] = {}


def log_context(**fields: Any) -> None:
    """Add ``fields`` (``service="chat"``, ``worker=2``) to every record from now on; a value
    of ``None`` removes the field. Process-wide: only the runner calls it."""
    for key, value in fields.items():
        if value is None:
            _context.pop(key, None)
        else:
            _context[key] = value


def iso_time(created: float) -> str:
    """``2026-12-06T01:03:28.123+00:00``: local time with its offset, to the millisecond."""
    local = time.localtime(created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
    offset = time.strftime("%z", local)
    return f"{stamp}.{int(created % 1 * 1000):03d}{offset[:3]}:{offset[3:]}"


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


class ContextFilter(logging.Filter):
    """Puts the process context on each record that does not carry the field already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO-8601), ``level``, ``logger``, ``msg``, the
    record's ``extra=`` fields (``event``, ``peer``, ``bytes_in``...) and ``exc`` for a
    traceback. Values JSON cannot hold are written as strings."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _OWN and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:00.001 INFO    message``; the stamp is chosen by ``when`` (see
    :data:`LOG_TIMES`)."""

    def __init__(self, when: str = "time") -> None:
        if when not in LOG_TIMES:
            raise ValueError(f"log time {when!r}: not one of {', '.join(LOG_TIMES)}")
        self.when = when
        super().__init__("%(levelname)-7s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if self.when == "none":
            return line
        if self.when == "iso":
            return f"{iso_time(record.created)} {line}"
        fmt = "%Y-%m-%d %H:%M:%S" if self.when == "date" else "%H:%M:%S"
        stamp = time.strftime(fmt, time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d} {line}"


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    access_log: bool = True,
    log_time: str = "time",
    verbose: int = 0,
) -> None:
    """Send twoway's log records to stderr, one line each (see the module docstring).

    ``level`` governs the diagnostic lines; each ``verbose`` step makes it one level more
    verbose (``-v``: debug; ``-vv`` also shows asyncio's own debug lines). The process lines
    always show; the access log follows ``access_log``. Idempotent: a second call replaces
    the first set-up.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(log_time))
    handler.addFilter(ContextFilter())
    chosen = logging.getLevelName(level.upper())
    if not isinstance(chosen, int):
        raise ValueError(f"unknown log level {level!r}")
    effective = max(logging.DEBUG, chosen - 10 * verbose)
    root = logging.getLogger("twoway")
    root.handlers[:] = [handler]
    root.setLevel(effective)
    root.propagate = False
    # Child loggers have no handler of their own: their records reach the one above, and
    # their level alone decides (a parent's level is not consulted again on the way up).
    for name in LIFECYCLE_LOGGERS:
        logging.getLogger(name).setLevel(min(logging.INFO, effective))
    # Without the access log the per-connection INFO lines go, the warnings stay: they are
    # lifecycle too (a rejection, a grace period that ran out).
    access_level = min(logging.INFO, effective) if access_log else logging.WARNING
    for name in ACCESS_LOGGERS:
        logging.getLogger(name).setLevel(access_level)
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.handlers[:] = [handler]
    asyncio_log.propagate = False
    asyncio_log.setLevel(logging.DEBUG if verbose > 1 else max(logging.INFO, effective))
    # asyncio repeats one line per event (a write to a lost peer): one per cause per second.
    asyncio_log.filters[:] = [RepeatFilter()]

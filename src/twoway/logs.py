"""Logging set-up for the ``twoway`` process (the library itself only emits records)."""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["JsonFormatter", "setup_logging"]


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

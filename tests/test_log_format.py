"""The log formatters without a process: records with and without ``extra=`` fields."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from twoway.logs import ContextFilter, JsonFormatter, TextFormatter, iso_time, log_context


@pytest.fixture(autouse=True)
def _no_context() -> Iterator[None]:
    yield
    log_context(service=None, worker=None)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("twoway.access", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _json(record: logging.LogRecord) -> dict[str, object]:
    ContextFilter().filter(record)
    out = json.loads(JsonFormatter().format(record))
    assert isinstance(out, dict)
    return out


def test_a_close_line_with_its_fields() -> None:
    log_context(service="upper", worker=2)
    entry = _json(
        _record(
            "closed %s (in %s, out %s, %.1f s)",
            "127.0.0.1:5000",
            "6 B",
            "17 B",
            0.25,
            event="close",
            peer="127.0.0.1:5000",
            bytes_in=6,
            bytes_out=17,
            duration_s=0.25,
            reason="closed by the client",
        )
    )
    assert entry["msg"] == "closed 127.0.0.1:5000 (in 6 B, out 17 B, 0.2 s)"
    assert entry["event"] == "close"
    assert entry["peer"] == "127.0.0.1:5000"
    assert (entry["bytes_in"], entry["bytes_out"], entry["duration_s"]) == (6, 17, 0.25)
    assert entry["reason"] == "closed by the client"
    assert (entry["service"], entry["worker"]) == ("upper", 2)
    assert entry["level"] == "info" and entry["logger"] == "twoway.access"
    stamp = datetime.fromisoformat(str(entry["ts"]))
    assert stamp.tzinfo is not None  # an offset, so the time means one instant


def test_a_record_without_extras_is_still_one_object() -> None:
    entry = _json(_record("plain %d", 5))
    assert set(entry) == {"ts", "level", "logger", "msg"}
    assert entry["msg"] == "plain 5"


def test_a_field_of_the_record_itself_wins_over_the_context() -> None:
    log_context(worker=1)
    assert _json(_record("x", worker=3))["worker"] == 3


def test_values_json_cannot_hold_become_strings() -> None:
    entry = _json(_record("x", peer=("127.0.0.1", 1), when=datetime(2026, 1, 2)))
    assert entry["peer"] == ["127.0.0.1", 1]
    assert entry["when"] == "2026-01-02 00:00:00"


def test_iso_time_has_milliseconds_and_an_offset() -> None:
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", iso_time(1_700_000_000.5)
    )


@pytest.mark.parametrize(
    ("when", "pattern"),
    [
        ("time", r"\d\d:\d\d:\d\d\.\d{3} INFO    hello"),
        ("date", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO    hello"),
        ("iso", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO    hello"),
        ("none", r"INFO    hello"),
    ],
)
def test_text_time_stamps(when: str, pattern: str) -> None:
    assert re.fullmatch(pattern, TextFormatter(when).format(_record("hello")))

"""Logs an operator can use (issue 13): the ready and lifecycle lines whatever the level, the
access log on its own switch, JSON with real fields, time stamps, ``-v``."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime
from pathlib import Path

import pytest

from helpers import connect, recv_line, start_cli


def _talk(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"x\n")
        assert recv_line(sock) == b'You said "X"\n'


@pytest.mark.parametrize("level", ["warning", "error"])
def test_ready_and_lifecycle_lines_show_at_any_level(level: str) -> None:
    with start_cli("serve", "upper", "--port", "0", "--log-level", level) as server:
        _talk(server.port)
        server.wait_for(r"closed 127\.0\.0\.1:")  # the access log is on by default
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert re.search(r"INFO    twoway upper listening on 127\.0\.0\.1:\d+", server.stderr)
    assert "SIGTERM received: shutting down" in server.stderr
    assert "stopped: 1 connection(s) served" in server.stderr


def test_no_access_log_drops_the_connection_lines_but_not_the_rest() -> None:
    args = ("--no-access-log", "--max-conns", "1")
    with start_cli("serve", "upper", "--port", "0", *args) as server:
        with connect(server.port) as first:
            first.sendall(b"a\n")
            assert recv_line(first) == b'You said "A"\n'
            with connect(server.port) as second:
                assert recv_line(second).startswith(b"error: server full (max 1 ")
            # A rejection is a warning: it stays.
            server.wait_for("rejected: server full")
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert "connection from" not in server.stderr
    assert not re.search(r"\bclosed 127", server.stderr)
    assert "stopped: 2 connection(s) served" in server.stderr


def test_access_log_from_the_environment_and_the_config_file() -> None:
    with start_cli("serve", "upper", "--port", "0", env={"TWOWAY_ACCESS_LOG": "off"}) as server:
        _talk(server.port)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert "connection from" not in server.stderr


def test_json_lines_carry_fields() -> None:
    with start_cli("serve", "upper", "--port", "0", "--log-format", "json") as server:
        _talk(server.port)
        server.wait_for(r'"msg": "closed 127\.0\.0\.1:')
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    entries = [json.loads(line) for line in server.lines]
    by_event = {e.get("event"): e for e in entries}
    ready = by_event["listening"]
    assert (ready["host"], ready["port"]) == ("127.0.0.1", server.port)
    assert (ready["max_conns"], ready["max_line"], ready["keepalive"]) == (10000, 65536, "60,10,5")
    assert by_event["signal"]["signal"] == "SIGTERM"
    stopped = by_event["stopped"]
    assert (stopped["connections"], stopped["bytes_in"], stopped["bytes_out"]) == (1, 2, 13)
    for entry in entries:
        assert entry["service"] == "upper"
        assert datetime.fromisoformat(entry["ts"]).tzinfo is not None


def test_json_access_lines_carry_peer_bytes_and_duration() -> None:
    with start_cli("serve", "upper", "--port", "0", "--log-format", "json") as server:
        _talk(server.port)
        server.wait_for(r'"msg": "closed 127\.0\.0\.1:')
    entries = [json.loads(line) for line in server.lines]
    opened = next(e for e in entries if e["msg"].startswith("connection from"))
    closed = next(e for e in entries if e["msg"].startswith("closed "))
    assert opened["event"] == "open" and opened["peer"] == closed["peer"]
    assert closed["event"] == "close"
    assert (closed["bytes_in"], closed["bytes_out"]) == (2, 13)
    assert isinstance(closed["duration_s"], float)
    assert "reason" in closed


@pytest.mark.parametrize(
    ("when", "stamp"),
    [
        ("date", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"),
        ("iso", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"),
        ("none", ""),
    ],
)
def test_log_time(when: str, stamp: str) -> None:
    with start_cli("serve", "upper", "--port", "0", "--log-time", when) as server:
        pass
    assert re.match(rf"^{stamp} ?INFO    twoway upper listening", server.lines[0]), server.lines


def test_v_adds_debug_lines_and_can_be_repeated() -> None:
    with start_cli("serve", "upper", "--port", "0") as quiet:
        pass
    assert "DEBUG" not in quiet.stderr
    with start_cli("serve", "upper", "--port", "0", "-v") as one:
        pass
    assert re.search(r"DEBUG   event loop \w+, open files limit \d+", one.stderr)
    # -v counts from --log-level: two steps from warning is debug.
    with start_cli("serve", "upper", "--port", "0", "--log-level", "warning", "-vv") as two:
        pass
    assert "DEBUG   event loop" in two.stderr


def test_the_stopped_line_writes_sizes_like_the_access_log(tmp_path: Path) -> None:
    """Sizes read the same everywhere: ``47.7 MiB``, not ``50000000 B``."""
    with start_cli("serve", "dump", "--port", "0", "--dir", str(tmp_path)) as server:
        with connect(server.port) as sock:
            sock.sendall(b"x" * (12 * 1024 * 1024))
        server.wait_for(r"closed 127\.0\.0\.1:\d+ \(in 12\.0 MiB")
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert re.search(r"stopped: 1 connection\(s\) served, in 12\.0 MiB, out 0 B", server.stderr)

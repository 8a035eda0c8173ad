"""Complaints: one log line per client mistake, bounded per process, with a summary of the
rest. In process with a hand-held clock; then ``twoway serve upper`` as a subprocess, fed
over-long lines by a real socket, its log read line by line."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator

import pytest

from helpers import (
    COMPLAINTS_SUMMARY,
    READ_TIMEOUT,
    UNIT,
    complaints_accounted,
    connect,
    recv_line,
    start_cli,
)
from twoway.net.complaints import (
    COMPLAINT_BURST,
    COMPLAINT_RATE,
    COMPLAINTS,
    Complaints,
    complaints_log,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Records(logging.Handler):
    """The records a logger emitted; ``arrived`` is set by each (for the timer test)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.arrived: asyncio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.arrived is not None:
            self.arrived.set()

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


_names = iter(range(1_000_000))


@pytest.fixture
def records() -> Iterator[tuple[logging.Logger, _Records]]:
    """A logger of its own (nothing else writes to it), at INFO, and what it emitted."""
    logger = logging.getLogger(f"test.complaints.{next(_names)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _Records()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def test_one_line_naming_the_peer_and_the_error(records: tuple[logging.Logger, _Records]) -> None:
    logger, got = records
    c = Complaints(logger, clock=_Clock(), timers=False)
    c.complain("127.0.0.1:5000", "error: line too long (max 16 bytes)")
    c.complain("[::1]:5001", 'error: unknown command "/frob" (type /help)', nick="alice")
    c.complain("10.0.0.1:5002", "error: not permitted", nick="bob", room="#lobby")
    assert got.messages == [
        "127.0.0.1:5000: error: line too long (max 16 bytes)",
        '[::1]:5001 (alice): error: unknown command "/frob" (type /help)',
        "10.0.0.1:5002 (bob in #lobby): error: not permitted",
    ]
    assert [r.levelno for r in got.records] == [logging.INFO] * 3
    # The JSON format's fields.
    last = got.records[-1].__dict__
    assert last["event"] == "client_error"
    assert (last["peer"], last["error"]) == ("10.0.0.1:5002", "error: not permitted")
    assert (last["nick"], last["room"]) == ("bob", "#lobby")
    assert "nick" not in got.records[0].__dict__


def test_a_flood_is_cut_and_summarised_exactly_when_logging_resumes(
    records: tuple[logging.Logger, _Records],
) -> None:
    logger, got = records
    clock = _Clock()
    # Times in binary fractions: the token counts are exact.
    c = Complaints(logger, rate=8.0, burst=5, resume=3, clock=clock, timers=False)
    for i in range(20):
        c.complain("127.0.0.1:5000", f"error: bad {i}")
    assert got.messages == [f"127.0.0.1:5000: error: bad {i}" for i in range(5)]
    clock.now += 0.125  # one token: still held back
    c.complain("127.0.0.1:5000", "error: bad 20")
    assert len(got.records) == 5
    clock.now += 0.25  # three tokens: the summary, then the line
    c.complain("127.0.0.1:5000", "error: bad 21")
    assert got.messages[5:] == [
        "suppressed 16 similar client errors in the last 0.4 s",
        "127.0.0.1:5000: error: bad 21",
    ]
    summary = got.records[5]
    assert summary.levelno == logging.WARNING
    assert summary.__dict__["event"] == "client_errors_suppressed"
    assert summary.__dict__["suppressed"] == 16


def test_flush_reports_a_flood_that_stopped(records: tuple[logging.Logger, _Records]) -> None:
    logger, got = records
    clock = _Clock()
    c = Complaints(logger, rate=8.0, burst=2, resume=2, clock=clock, timers=False)
    for _ in range(7):
        c.complain("127.0.0.1:5000", "error: bad")
    c.flush()  # no token yet: nothing, and no harm
    assert len(got.records) == 2
    clock.now += 0.25
    c.flush()
    assert got.messages[2:] == ["suppressed 5 similar client errors in the last 0.2 s"]
    c.flush()  # idempotent
    assert len(got.records) == 3


def test_a_muted_logger_costs_nothing_and_counts_nothing(
    records: tuple[logging.Logger, _Records],
) -> None:
    logger, got = records
    logger.setLevel(logging.WARNING)
    c = Complaints(logger, rate=10.0, burst=2, resume=2, clock=_Clock(), timers=False)
    for _ in range(50):
        c.complain("127.0.0.1:5000", "error: bad")
    assert got.records == []
    assert c.budget.held == 0
    c.complain("127.0.0.1:5000", "error: warned", level=logging.WARNING)
    assert got.messages == ["127.0.0.1:5000: error: warned"]


async def test_the_summary_comes_from_a_timer_once_the_flood_stops(
    records: tuple[logging.Logger, _Records],
) -> None:
    logger, got = records
    got.arrived = asyncio.Event()
    c = Complaints(logger, rate=50.0, burst=3, resume=2)
    for _ in range(10):
        c.complain("127.0.0.1:5000", "error: bad")
    assert len(got.records) == 3
    got.arrived.clear()
    await asyncio.wait_for(got.arrived.wait(), READ_TIMEOUT)  # no complaint needed
    m = re.fullmatch(r"suppressed 7 similar client errors in the last ([\d.]+) s", got.messages[3])
    assert m is not None, got.messages


def test_a_timer_left_on_a_closed_loop_is_replaced(
    records: tuple[logging.Logger, _Records],
) -> None:
    logger, got = records
    c = Complaints(logger, rate=50.0, burst=2, resume=2)

    async def flood() -> None:
        for _ in range(5):
            c.complain("127.0.0.1:5000", "error: bad")

    first = asyncio.new_event_loop()
    first.run_until_complete(flood())  # its timer never runs: the loop closes first
    first.close()
    assert len(got.records) == 2

    async def flood_and_wait() -> None:
        got.arrived = asyncio.Event()
        await flood()
        await asyncio.wait_for(got.arrived.wait(), READ_TIMEOUT)

    asyncio.run(flood_and_wait())
    assert got.messages[2].startswith("suppressed 8 similar client errors"), got.messages


def test_the_process_wide_complaints_log_on_their_own_logger() -> None:
    assert COMPLAINTS.logger is complaints_log
    assert complaints_log.name == "twoway.complaints"
    assert (COMPLAINTS.budget.rate, COMPLAINTS.budget.burst) == (COMPLAINT_RATE, COMPLAINT_BURST)


# --------------------------------------------------------------------------- the process


def _peer(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def test_an_over_long_line_is_answered_and_logged_once(loop: str) -> None:
    with (
        start_cli("serve", "upper", "--port", "0", "--max-line", "16", "--loop", loop) as server,
        connect(server.port) as sock,
    ):
        sock.sendall(b"x" * 17 + b"\n")
        assert recv_line(sock) == b"error: line too long (max 16 bytes)\n"
        line = re.escape(f"INFO    {_peer(sock)}: error: line too long (max 16 bytes)")
        server.wait_for(line + "$")
        sock.sendall(b"fine\n")  # the connection is as good as new
        assert recv_line(sock) == b'You said "FINE"\n'
        assert server.count("error: line too long") == 1


def test_a_flood_of_bad_lines_logs_a_bounded_number_and_loses_nothing(loop: str) -> None:
    bad, every = 1000, 100
    with (
        start_cli("serve", "upper", "--port", "0", "--max-line", "16", "--loop", loop) as server,
        connect(server.port, timeout=10 * UNIT) as sock,
    ):
        peer = _peer(sock)
        mine = re.escape(f"{peer}: error: line too long (max 16 bytes)") + "$"
        # 1000 over-long lines, and after every 100th a good one: all in one go.
        data = bytearray()
        for i in range(bad):
            data += b"y" * 40 + b"\n"
            if i % every == every - 1:
                data += b"ok %d\n" % (i // every)
        started = time.monotonic()
        sock.sendall(data)
        errors = goods = 0
        for _ in range(bad + bad // every):
            answer = recv_line(sock)
            if answer == b"error: line too long (max 16 bytes)\n":
                errors += 1
            else:  # every accepted line answered, in order, none lost
                assert answer == b'You said "OK %d"\n' % goods, answer
                goods += 1
        assert (errors, goods) == (bad, bad // every)

        # Every bad line is logged or counted in a summary (the last one from the timer,
        # a second after the flood, with no further complaint).
        assert server.wait_lines(lambda lines: complaints_accounted(lines, mine, bad), 10 * UNIT), (
            server.tail()
        )
        window = time.monotonic() - started
        lines = [
            line
            for line in server.lines
            if re.search(mine, line) or COMPLAINTS_SUMMARY.search(line)
        ]
        summaries = [line for line in lines if COMPLAINTS_SUMMARY.search(line)]
        assert summaries, server.tail()
        assert all(" WARNING " in line for line in summaries)
        # The bound: the burst plus the rate over the time it all took (an over-estimate of
        # the server's own window, so the bound only gets looser).
        assert len(lines) <= COMPLAINT_BURST + COMPLAINT_RATE * window, (len(lines), window)
        sock.sendall(b"still here\n")
        assert recv_line(sock) == b'You said "STILL HERE"\n'

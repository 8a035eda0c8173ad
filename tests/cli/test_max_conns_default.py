"""``--max-conns`` has a default that fits the open-files limit, and the ready line says the
limits in force (issue 11): an operator reads what the server will accept, not the defaults
of a manual page."""

from __future__ import annotations

import contextlib
import re
import shutil

import pytest

from helpers import TWOWAY, CliServer, connect, recv_line, start_cli
from twoway.proclimits import FD_RESERVE, fit_max_conns


def test_fit_max_conns() -> None:
    assert fit_max_conns(10000, 1024) == 1024 - FD_RESERVE
    assert fit_max_conns(100, 1024) == 100
    assert fit_max_conns(None, 64) is None  # "no limit" was asked for
    assert fit_max_conns(10000, 10) == 1  # never 0 or less: 0 would mean no limit


def test_default_is_10000_and_the_ready_line_states_the_limits() -> None:
    with start_cli("serve", "upper", "--port", "0") as server:
        line = server.wait_for(r"listening on 127\.0\.0\.1:\d+.*").group(0)
    assert "max 10000 connections" in line, line
    assert "64 KiB lines" in line, line
    assert "lowered" not in server.stderr


def test_every_limit_that_is_set_is_in_the_ready_line() -> None:
    args = ["--max-conns", "5", "--max-conns-per-ip", "2", "--max-line", "4KiB"]
    args += ["--idle-timeout", "30", "--keepalive", "60,10,3"]
    with start_cli("serve", "upper", "--port", "0", *args) as server:
        line = server.wait_for(r"listening on 127\.0\.0\.1:\d+.*").group(0)
    assert line.endswith(
        "; max 5 connections, 2 per IP, 4 KiB lines, timeout 30 s without traffic, "
        "line timeout 60 s, keep-alive 60 s (probes every 10 s, 3 tries)"
    ), line


def test_no_limit_and_a_raw_service_say_so() -> None:
    with start_cli("serve", "echo", "--port", "0", "--max-conns", "0") as server:
        line = server.wait_for(r"listening on 127\.0\.0\.1:\d+.*").group(0)
    # echo has no lines: no line limit or line timeout is claimed.
    assert line.endswith("; no connection limit, keep-alive 60 s (probes every 10 s, 5 tries)")
    with start_cli("serve", "echo", "--port", "0", "--keepalive", "0") as server:
        line = server.wait_for(r"listening on 127\.0\.0\.1:\d+.*").group(0)
    assert line.endswith("keep-alive off"), line


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_max_conns_is_lowered_to_fit_a_low_open_files_limit(loop: str) -> None:
    nofile = 64
    fits = nofile - FD_RESERVE
    program = ["prlimit", f"--nofile={nofile}:{nofile}", *TWOWAY]
    server = CliServer(["serve", "upper", "--port", "0", "--loop", loop], program=program)
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        server.wait_ready()
        assert (
            server.count(
                rf"WARNING max-conns lowered from 10000 to {fits}: the open-files limit is {nofile}"
            )
            == 1
        ), server.stderr
        ready = server.wait_for(r"listening on .*").group(0)
        assert f"; max {fits} connections," in ready
        socks = [stack.enter_context(connect(server.port)) for _ in range(fits)]
        for i, sock in enumerate(socks):
            sock.sendall(b"n%d\n" % i)
            assert recv_line(sock) == b'You said "N%d"\n' % i
        # One more is told why, in one line, instead of finding the server out of files.
        with connect(server.port) as extra:
            assert recv_line(extra) == f"error: server full (max {fits} connections)\n".encode()
        assert "Traceback" not in server.stderr
        assert not re.search("too many open files", server.stderr)
    assert server.returncode == 0

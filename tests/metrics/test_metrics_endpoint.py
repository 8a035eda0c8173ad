"""``twoway serve --metrics``: the endpoint scraped with a real HTTP client and read with
prometheus_client's parser; promtool accepts it; every protection drives its counter to
the value the clients saw; bad requests, health, readiness and the token."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from helpers import UNIT, connect, recv_line, recv_until_eof, run_cli

from .metricskit import get, raw_request, scrape, start_metrics, wait_metric


def test_scrape_parses_and_counts_connections(servers: list[Any], loop: str) -> None:
    server, mport = start_metrics(servers, "upper", loop=loop)
    socks = [connect(server.port) for _ in range(3)]
    try:
        for s in socks:
            s.sendall(b"hi\n")
            assert recv_line(s) == b'You said "HI"\n'
        samples = scrape(mport)
        assert samples["twoway_connections_open"] == 3
        assert samples["twoway_connections_accepted_total"] == 3
        assert samples['twoway_info{service="upper"}'] == 1
        assert samples["twoway_bytes_received_total"] == 9
        assert samples["twoway_bytes_sent_total"] == 3 * len(b'You said "HI"\n')
        assert samples["process_resident_memory_bytes"] > 1e6
    finally:
        for s in socks:
            s.close()
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert samples['twoway_connections_closed_total{reason="normal"}'] == 3
    assert samples['twoway_connection_duration_seconds_bucket{le="+Inf"}'] == 3
    assert samples["twoway_connection_duration_seconds_count"] == 3
    assert samples["twoway_connections_peak"] == 3


def test_promtool_accepts_the_exposition(servers: list[Any]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    server, mport = start_metrics(servers, "chat", "--flood-rate", "0")
    with connect(server.port) as s:
        s.sendall(b"hello\n")
        recv_line(s)
        _, _, body = get(mport, "/metrics")
    assert b"twoway_chat_members 1.0" in body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30 * UNIT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_line_too_long_counts_each_line(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "upper", "--max-line", "1KiB")
    with connect(server.port) as s:
        for _ in range(3):
            s.sendall(b"x" * 5000 + b"\n")
            assert recv_line(s) == b"error: line too long (max 1024 bytes)\n"
        samples = scrape(mport)
    assert samples["twoway_line_too_long_total"] == 3


@pytest.mark.parametrize(
    ("args", "reason", "message"),
    [
        (("--max-conns", "1"), "full", b"error: server full (max 1 connection)\n"),
        (("--max-conns-per-ip", "1"), "per_ip", b"error: too many connections from"),
        (("--deny", "127.0.0.1/32"), "denied", b"error: access denied\n"),
    ],
)
def test_refusals_count_by_reason(
    servers: list[Any], args: tuple[str, ...], reason: str, message: bytes
) -> None:
    server, mport = start_metrics(servers, "upper", *args)
    keep = connect(server.port) if reason != "denied" else None
    try:
        if keep is not None:
            keep.sendall(b"a\n")
            recv_line(keep)  # admitted: the refusals below are the next three
        for _ in range(3):
            with connect(server.port) as s:
                assert recv_until_eof(s).startswith(message)
        samples = scrape(mport)
    finally:
        if keep is not None:
            keep.close()
    assert samples[f'twoway_connections_refused_total{{reason="{reason}"}}'] == 3
    others = {"full", "per_ip", "denied", "tls", "proxy"} - {reason}
    assert all(samples[f'twoway_connections_refused_total{{reason="{r}"}}'] == 0 for r in others)


def test_idle_and_line_timeouts(servers: list[Any]) -> None:
    server, mport = start_metrics(
        servers, "upper", "--idle-timeout", "0.6", "--line-timeout", "0.2"
    )
    with connect(server.port) as a, connect(server.port) as b, connect(server.port) as c:
        c.sendall(b"unfinished")  # a line that never ends: the line deadline
        assert recv_until_eof(a).startswith(b"error: idle for 0.6 s")
        assert recv_until_eof(b).startswith(b"error: idle for 0.6 s")
        assert recv_until_eof(c).startswith(b"error: line not finished within 0.2 s")
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert samples["twoway_idle_closes_total"] == 2
    assert samples["twoway_line_timeouts_total"] == 1
    assert samples['twoway_connections_closed_total{reason="idle"}'] == 2
    assert samples['twoway_connections_closed_total{reason="line timeout"}'] == 1


def test_slow_consumer_is_dropped_and_counted(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "upper", "--max-queued", "16KiB", "--slow-grace", "0.2")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    sock.settimeout(5 * UNIT)
    sock.connect(("127.0.0.1", server.port))
    with sock:
        line = b"y" * 1000 + b"\n"
        try:
            for _ in range(4000):  # never reads: the replies pile up on the server
                sock.sendall(line)
        except OSError:
            pass  # dropped meanwhile (reset): what the test waits for below
        samples = wait_metric(mport, "twoway_slow_disconnects_total", lambda v: v >= 1)
    assert samples["twoway_slow_disconnects_total"] == 1
    assert samples["twoway_write_paused_total"] >= 1
    assert samples["twoway_write_queue_high_water_bytes"] >= 4096


def test_flood_drops_and_kicks_match_what_the_client_read(servers: list[Any]) -> None:
    server, mport = start_metrics(
        servers, "chat", "--flood-rate", "0.5", "--flood-burst", "2", "--paste-lines", "1"
    )
    with connect(server.port) as s:
        s.sendall(b"".join(b"line %d\n" % i for i in range(80)))
        text = recv_until_eof(s).decode()
    drops = text.count("error: slow down")
    kicked = "error: flooding, disconnecting" in text
    assert drops > 0 and kicked
    samples = wait_metric(mport, "twoway_connections_open", lambda v: v == 0)
    assert samples["twoway_chat_flood_drops_total"] == drops
    assert samples["twoway_chat_flood_kicks_total"] == 1
    assert samples['twoway_connections_closed_total{reason="flooding"}'] == 1


def test_health_and_readiness(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "echo")
    status, ctype, body = get(mport, "/healthz")
    assert (status, ctype) == (200, "text/plain; charset=utf-8")
    assert body.startswith(b"ok (event loop lag")
    assert get(mport, "/readyz")[::2] == (200, b"ready\n")
    # During a graceful shutdown the endpoint still answers, and readiness says why not.
    with connect(server.port):
        server.signal()
        server.wait_for("shutting down")
        deadline = time.monotonic() + 5 * UNIT
        while get(mport, "/readyz")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert get(mport, "/readyz")[2] == b"shutting down\n"
        assert get(mport, "/healthz")[0] == 200


def test_bad_requests_get_one_line_and_change_nothing(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "upper")
    with connect(server.port) as client:  # a client of the service, there all along
        client.sendall(b"before\n")
        assert recv_line(client) == b'You said "BEFORE"\n'
        cases = {
            b"garbage\r\n\r\n": b"400 Bad Request",
            b"\x00\xff\xfe\r\n\r\n": b"400 Bad Request",
            b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n": b"431 ",
            b"POST /metrics HTTP/1.1\r\n\r\n": b"405 Method Not Allowed",
            b"GET /nope HTTP/1.1\r\n\r\n": b"404 Not Found",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello": b"413 ",
        }
        for request, expected in cases.items():
            answer = raw_request(mport, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + expected), (request[:40], answer[:200])
            assert body.count(b"\n") == 1, body
        # A slow client that never finishes its request holds nothing the others need.
        slow = [socket.create_connection(("127.0.0.1", mport)) for _ in range(5)]
        for s in slow:
            s.sendall(b"GET /metr")
        assert scrape(mport)["twoway_connections_open"] == 1
        client.sendall(b"after\n")
        assert recv_line(client) == b'You said "AFTER"\n'
        for s in slow:
            s.close()
    assert not server.error_lines()
    assert server.count(r"metrics: 127\.0\.0\.1: 400") >= 1  # logged, one line each


def test_slow_request_head_times_out(servers: list[Any]) -> None:
    _server, mport = start_metrics(servers, "echo")
    with socket.create_connection(("127.0.0.1", mport), timeout=10 * UNIT) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        start = time.monotonic()
        answer = recv_until_eof(s, timeout=10 * UNIT)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert 4.0 <= time.monotonic() - start < 8.0


def test_token_is_required_when_set(servers: list[Any]) -> None:
    _server, mport = start_metrics(servers, "echo", env={"TWOWAY_METRICS_TOKEN": "s3cret"})
    status, _, body = get(mport, "/metrics")
    assert (status, body) == (401, b"unauthorized: give the metrics token (Bearer)\n")
    assert get(mport, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(mport, "/healthz")[0] == 401
    assert scrape(mport, {"Authorization": "Bearer s3cret"})["twoway_connections_open"] == 0
    assert get(mport, "/status.json?token=s3cret")[0] == 200  # the status page's way


def test_exit_summary_without_metrics(servers: list[Any]) -> None:
    from .metricskit import CliServer, serve_args

    server = CliServer(serve_args("upper", "--max-line", "1KiB", "--max-conns", "2"))
    servers.append(server)
    server.wait_ready()
    with connect(server.port) as a, connect(server.port) as b:
        a.sendall(b"x" * 2000 + b"\nok\n")
        recv_line(a)
        recv_line(a)
        b.sendall(b"hi\n")
        recv_line(b)
        with connect(server.port) as c:
            recv_until_eof(c)  # refused: full
    assert server.stop() == 0
    line = server.wait_for(r"stopped: .*").group(0)
    assert line.startswith("stopped: 3 connection(s) served, in ")
    assert "; up " in line and "peak 2 at once" in line
    assert line.endswith("; dropped: 1 line too long; refused: 1 full")


def test_status_command(servers: list[Any]) -> None:
    server, mport = start_metrics(servers, "chat", "--flood-rate", "0")
    with connect(server.port) as s:
        s.sendall(b"hello\n")
        recv_line(s)
        result = run_cli("status", str(mport))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"twoway chat at 127.0.0.1:{mport}: up ")
    assert lines[1] == "connections  1 open (peak 1), 1 accepted"
    assert lines[2] == "refused      denied 0, full 0, per_ip 0, proxy 0, tls 0"
    assert any(line.startswith("chat         1 members in 1 rooms, 1 lines in") for line in lines)
    assert lines[-1].startswith("process      RSS ")
    gone = run_cli("status", "127.0.0.1:1")
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        "twoway: cannot reach http://127.0.0.1:1/metrics: connection refused"
    )


def test_status_command_with_token(servers: list[Any]) -> None:
    _, mport = start_metrics(servers, "echo", "--metrics-token", "t0k")
    denied = run_cli("status", str(mport))
    assert denied.returncode == 1
    assert "HTTP 401" in denied.stderr and "--token" in denied.stderr
    ok = run_cli("status", str(mport), env={"TWOWAY_METRICS_TOKEN": "t0k"})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"twoway echo at 127.0.0.1:{mport}")


def test_stats_command_is_public_only_when_asked(servers: list[Any]) -> None:
    server, _ = start_metrics(servers, "chat", "--stats-public", "--flood-rate", "0")
    with connect(server.port) as s:
        s.sendall(b"/stats\n")
        lines = [recv_line(s).decode() for _ in range(9)]
    stats = [line for line in lines if line.startswith("*** stats:")]
    assert stats[0].startswith("*** stats: up ")
    assert ", 1 connected (peak 1), 1 accepted" in stats[0]
    assert any("1 members in 1 rooms" in line for line in stats)
    plain, _ = start_metrics(servers, "chat", "--flood-rate", "0")
    with connect(plain.port) as s:
        s.sendall(b"/stats\n")
        lines = [recv_line(s).decode()]
        while not lines[-1].startswith("error:"):  # after the welcome, however long
            lines.append(recv_line(s).decode())
    assert lines[-1] == "error: not permitted\n"  # /stats is for operators


def test_bad_metrics_address_is_a_usage_error() -> None:
    result = run_cli("serve", "echo", "--metrics", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("twoway: metrics = 'nope': ")
    assert "Traceback" not in result.stderr


def test_metrics_port_in_use_is_one_line(servers: list[Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "echo", "--port", "0", "--metrics", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == f"twoway: --metrics 127.0.0.1:{port}: address already in use"


def test_prometheus_client_is_not_imported_without_metrics() -> None:
    code = (
        "import sys, twoway, twoway.runner, twoway.serving, twoway.observe, twoway.metrics, "
        "twoway.metrics.source, twoway.metrics.summary; "
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""What the process says about its server: the ready lines, systemd's status, the exit summary.

A server that starts logs one ``listening on`` line per address with its effective limits
(:func:`log_listening`, :func:`describe_limits`), one line per WebSocket gateway
(:func:`log_gateway`) and where its metrics are (:func:`log_metrics`); one that stops logs
its totals (:func:`log_stopped`), and a ``--workers`` supervisor the sum of its workers'
(:func:`log_workers_summary`). These are process lines (:data:`twoway.logs.PROCESS_LOGGER`):
they show whatever ``--log-level``, and carry fields for ``--log-format json``. Nothing here
decides anything: :mod:`twoway.runner` and :mod:`twoway.serving` call these at the right
moments.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from twoway.logs import PROCESS_LOGGER
from twoway.metrics.figures import read_figures
from twoway.metrics.summary import exit_summary
from twoway.net.address import format_address
from twoway.net.registry import format_size

if TYPE_CHECKING:
    from twoway.net.server import Server
    from twoway.net.ws import WsGateway

__all__ = [
    "describe_limits",
    "log_gateway",
    "log_listening",
    "log_metrics",
    "log_stopped",
    "log_workers_summary",
    "systemd_status",
]

#: The lines that always show, whatever --log-level: ready, signals, shutdown, limits.
plog = logging.getLogger(PROCESS_LOGGER)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def describe_limits(server: Server) -> str:
    """The effective limits of ``server`` for its ready line: ``max 10000 connections, 64 KiB
    lines, keep-alive off`` (timeouts only where set)."""
    opts = server.options
    total = server.max_connections
    noun = "connection" if total == 1 else "connections"
    parts = [f"max {total} {noun}" if total is not None else "no connection limit"]
    if server.max_connections_per_ip is not None:
        parts.append(f"{server.max_connections_per_ip} per IP")
    if server.service.framing != "raw" and opts.max_line is not None:
        parts.append(f"{_size(opts.max_line)} lines")
    if opts.idle_timeout is not None:
        # Not "idle": tests (and greps) take that word in a log for a connection closed idle.
        parts.append(f"timeout {opts.idle_timeout:g} s without traffic")
    # The line deadline of issue 11 (nginx's client_header_timeout), where net has it.
    line_timeout = getattr(opts, "line_timeout", None)
    if line_timeout is not None:
        parts.append(f"line timeout {line_timeout:g} s")
    ka = opts.keepalive
    note = getattr(server.service, "ready_note", "")  # the chat's store: where history lives
    parts.append(
        "keep-alive off"
        if ka is None
        else f"keep-alive {ka.idle} s (probes every {ka.interval} s, {ka.count} tries)"
    )
    if note:
        parts.append(note)
    return ", ".join(parts)


def log_listening(server: Server, name: str, tag: str) -> None:
    """The ready lines of a started ``server``: one per address and Unix socket, each with
    :func:`describe_limits`. ``name`` starts each line (``twoway``); ``tag`` follows the
    address (`` (worker 2, pid 4711)``)."""
    for host, port in server.addresses:
        where = format_address((host, port))
        plog.info(
            "%s %s listening on %s%s; %s",
            name,
            server.service.name,
            where,
            tag,
            describe_limits(server),
            extra=_ready_fields(server, host, port),
        )
    for path in server.unix_paths:
        plog.info(
            "%s %s listening on unix:%s%s; %s",
            name,
            server.service.name,
            path,
            tag,
            describe_limits(server),
            extra={"event": "listening", "unix": path, "max_conns": server.max_connections},
        )


def log_gateway(server: Server, gateway: WsGateway, name: str, worker: str = "") -> None:
    """The ready lines of a started ``--ws`` ``gateway`` of ``server``: one per address,
    ending with ``worker`` (`` (worker 1, pid 123)`` in a worker of ``--workers``)."""
    for host, port in gateway.addresses:
        where = format_address((host, port))
        plog.info(
            "%s %s WebSocket gateway on %s://%s/ (the web chat page at /)%s",
            name,
            server.service.name,
            gateway.scheme,
            where,
            worker,
            extra={"event": "listening_ws", "host": host, "port": port},
        )


def log_stopped(server: Server, started: float, started_at: float) -> None:
    """The exit summary of ``server``: the run's totals, the same figures as the metrics
    (issue 15). ``started``: when it started on :func:`time.monotonic`, for how long it ran;
    ``started_at``: the same moment on :func:`time.time`, for the figures."""
    s = server.stats
    figures = read_figures(server.registry, server.service, started=started_at, with_process=False)
    summary, fields = exit_summary(figures, time.monotonic() - started)
    plog.info(
        "stopped: %d connection(s) served, in %s, out %s; %s",
        s.accepted,
        format_size(s.bytes_in),
        format_size(s.bytes_out),
        summary,
        extra={
            "event": "stopped",
            "connections": s.accepted,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            **fields,
        },
    )


def systemd_status(server: Server) -> str:
    """systemd's ``STATUS=``: where the server listens and how busy it is."""
    where = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in server.addresses]
    where += [f"unix:{path}" for path in server.unix_paths]
    return f"serving {server.service.name} on {', '.join(where)}"


def _ready_fields(server: Server, host: str, port: int) -> dict[str, Any]:
    """The ready line's fields for ``--log-format json``: the address and the limits."""
    opts = server.options
    ka = opts.keepalive
    return {
        "event": "listening",
        "host": host,
        "port": port,
        "max_conns": server.max_connections,
        "max_conns_per_ip": server.max_connections_per_ip,
        "max_line": opts.max_line if server.service.framing != "raw" else None,
        "idle_timeout_s": opts.idle_timeout,
        "line_timeout_s": getattr(opts, "line_timeout", None),
        "keepalive": None if ka is None else f"{ka.idle},{ka.interval},{ka.count}",
    }


def log_metrics(sock: Any, more: str = "") -> None:
    """The line saying where the metrics endpoint listens on ``sock``; ``more`` ends it
    (`` for 4 workers``)."""
    host, port = sock.getsockname()[:2]
    where = format_address((host, port))
    plog.info(
        "metrics on http://%s/ (/metrics, /healthz, /readyz, status page)%s",
        where,
        more,
        extra={"event": "metrics", "host": host, "port": port},
    )


def log_workers_summary(report_dir: str, workers: int, started: float) -> None:
    """The supervisor's exit summary: the totals every worker left when it stopped, added
    up, in one line like each worker's (``stopped (all 4 workers): ...``). ``report_dir``:
    where the workers left them (see :mod:`twoway.metrics.workers`); ``started``: when the
    supervisor started (wall clock)."""
    from twoway.metrics.figures import merge
    from twoway.metrics.workers import read_finals

    finals = read_finals(report_dir, workers)
    if not finals:
        return
    fig = merge(finals)
    accepted = int(fig.get("connections_accepted_total"))
    bytes_in, bytes_out = int(fig.get("bytes_received_total")), int(fig.get("bytes_sent_total"))
    summary, fields = exit_summary(fig, time.time() - started)
    plog.info(
        "stopped (all %d workers%s): %d connection(s) served, in %s, out %s; %s",
        workers,
        "" if len(finals) == workers else f", {len(finals)} of them reported",
        accepted,
        format_size(bytes_in),
        format_size(bytes_out),
        summary,
        extra={
            "event": "stopped_all",
            "workers": len(finals),
            "connections": accepted,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            **fields,
        },
    )

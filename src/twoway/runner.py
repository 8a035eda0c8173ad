"""The process around a server: event loop, signals, limits, logging, exit codes.

Only this module and :mod:`twoway.cli` install signal handlers, configure logging or decide
how the process ends. :func:`run` is the library entry point (``twoway.run(MyService())``);
:func:`serve_settings` is what ``twoway serve`` calls.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twoway._version import __version__
from twoway.errors import describe_oserror
from twoway.logs import PROCESS_LOGGER, log_context, setup_logging
from twoway.loops import loop_factory, resolve_loop
from twoway.metrics.figures import read_figures
from twoway.metrics.summary import exit_summary
from twoway.net.asyncapi import AsyncHandler
from twoway.net.options import ConnectionOptions
from twoway.net.registry import format_size
from twoway.net.server import Server, serve
from twoway.net.service import Framing, Service
from twoway.systemd import Notifier, listen_sockets
from twoway.traffic import HEXDUMP_LOGGER, hexdump_tap
from twoway.transfers import show_transfers, wanted

if TYPE_CHECKING:  # `import twoway` must not load the CLI's option table
    from twoway.config import Settings
    from twoway.metrics.workers import EndpointThread
    from twoway.net.ws import WsGateway

__all__ = [
    "FD_RESERVE",
    "ExceptionFilter",
    "describe_limits",
    "fit_max_conns",
    "raise_nofile_limit",
    "run",
    "run_server",
    "serve_settings",
    "tune_malloc",
]

log = logging.getLogger("twoway")
#: The lines that always show, whatever --log-level: ready, signals, shutdown, limits.
plog = logging.getLogger(PROCESS_LOGGER)

_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


# glibc serves allocations of 128 KiB and more with mmap and gives them back on free, so every
# 256 KiB read a busy stream receives costs fresh page faults. Measured on `compare push`:
# +21 % MiB/s and -19 % CPU per GiB with these two settings, the same peak RSS.
_MMAP_THRESHOLD = 8 * 1024 * 1024
_TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep large buffers in glibc's heap instead of mmap/munmap per allocation (Linux with
    glibc only; skipped when the user set ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_``). Returns True if the settings were applied. Process-wide, so
    only the runner calls it, never the library."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(
        mallopt(m_trim_threshold, _TRIM_THRESHOLD)
    )


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


#: Descriptors kept back from ``--max-conns`` for what is not a client: the listening sockets,
#: the event loop's own, the log, a Redis bus, files a service opens. Redis keeps the same 32
#: (``CONFIG_MIN_RESERVED_FDS``) when it lowers ``maxclients`` to fit ``ulimit -n``.
FD_RESERVE = 32


def fit_max_conns(requested: int | None, nofile: int, reserve: int = FD_RESERVE) -> int | None:
    """``requested`` connections, lowered to what ``nofile`` open files allow with ``reserve``
    kept back (at least 1); ``None`` (no limit) stays ``None``: the user asked for it."""
    if requested is None:
        return None
    return min(requested, max(1, nofile - reserve))


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


class ExceptionFilter:
    """A loop exception handler that turns accept failures for lack of resources (out of file
    descriptors, buffers or memory) into at most one log line per second, where plain asyncio
    logs a traceback per failed accept. Everything else goes to the default handler."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            now = time.monotonic()
            if now - self._last >= self.interval:
                more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
                log.error(
                    "cannot accept connections: %s%s; still serving", describe_oserror(exc), more
                )
                self._last = now
                self.suppressed = 0
            else:
                self.suppressed += 1
            return
        loop.default_exception_handler(context)


#: Signals that stop the server gracefully; a second one forces. SIGQUIT (Ctrl-\) too: a
#: graceful stop in nginx, and its default action (a core dump) ends a server silently.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
#: Signals a user may send by habit whose default action would end the server without a
#: word: each is logged and the server carries on.
NOTED_SIGNALS = {
    signal.SIGHUP: "reload is not supported yet: carrying on with the same settings",
    signal.SIGUSR1: "ignored (no action is assigned to it)",
    signal.SIGUSR2: "ignored (no action is assigned to it)",
}


async def run_server(
    server: Server,
    grace: float,
    *,
    name: str = "twoway",
    tag: str = "",
    reload: Callable[[], None] | None = None,
    progress: bool = False,
    gateways: Sequence[WsGateway] = (),
    notify: Notifier | None = None,
) -> int:
    """Start ``server``, log the ready line, serve until a stop signal, shut down gracefully.
    With ``progress``, a service that reports it shows its transfers on a terminal (see
    :mod:`twoway.transfers`).

    ``gateways`` (``--ws``) start after the server, each with its own ready line, and stop
    accepting before it shuts down (their connections are the server's: it ends them).

    SIGINT, SIGTERM and SIGQUIT start a shutdown that lasts at most ``grace`` seconds; a
    second one aborts every connection at once. SIGHUP calls ``reload`` (it logs what it did
    and never raises; see :meth:`twoway.frontdoor.FrontDoor.reload`), or without one is logged
    and changes nothing; SIGUSR1 and SIGUSR2 are logged and change nothing. Returns the exit
    code (0). Installs signal handlers: for a process's main thread only (:func:`run`,
    ``twoway serve``, or an ``asyncio.run(main())`` of yours). ``notify`` tells systemd
    ``READY=1`` once listening, ``RELOADING=1`` then ``READY=1`` around a reload and
    ``STOPPING=1`` at shutdown.
    """
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(ExceptionFilter())
    stop = asyncio.Event()
    signals = 0
    bars: asyncio.Task[None] | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals
        sig = signal.Signals(signum).name
        fields = {"event": "signal", "signal": sig}
        if signum == signal.SIGHUP and reload is not None:
            plog.info("SIGHUP received: reloading", extra=fields)
            if notify is not None:
                notify.reloading()
            reload()
            if notify is not None:
                notify.ready(_status(server))
            return
        note = NOTED_SIGNALS.get(signal.Signals(signum))
        if note is not None:
            plog.warning("%s received: %s", sig, note, extra=fields)
            return
        signals += 1
        if signals == 1:
            if notify is not None:
                notify.stopping()
            plog.info(
                "%s received: shutting down (grace %g s, %d connection(s))",
                sig,
                grace,
                server.connection_count,
                extra=fields,
            )
            stop.set()
        else:
            plog.warning("%s received again: closing every connection now", sig, extra=fields)
            for conn in server.connections:
                conn.abort(reason="forced shutdown")

    # Handlers first: a script that signals as soon as it reads the ready line must get the
    # graceful shutdown, not the default action of the signal.
    handled = (*STOP_SIGNALS, *NOTED_SIGNALS)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.monotonic()
    started_at = time.time()
    try:
        await server.start()
        for host, port in server.addresses:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
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
        watch = wanted(server.service) if progress else None
        if watch is not None:
            bars = loop.create_task(show_transfers(server, watch))
        for gateway in gateways:
            try:
                await gateway.start()
            except BaseException:
                await server.shutdown(0)
                raise
            for host, port in gateway.addresses:
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                plog.info(
                    "%s %s WebSocket gateway on %s://%s/ (the web chat page at /)",
                    name,
                    server.service.name,
                    gateway.scheme,
                    where,
                    extra={"event": "listening_ws", "host": host, "port": port},
                )
        if notify is not None:
            notify.ready(_status(server))
        await stop.wait()
        for gateway in gateways:
            gateway.close()
        await server.shutdown(grace)
        for gateway in gateways:
            await gateway.wait_closed()
    finally:
        if bars is not None:
            bars.cancel()
            await asyncio.wait([bars])
        for sig in handled:
            loop.remove_signal_handler(sig)
    s = server.stats
    # The exit summary: the run's totals, the same figures as the metrics (issue 15).
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
    return 0


def _status(server: Server) -> str:
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


def _fit_logged(requested: int | None, nofile: int) -> int | None:
    """:func:`fit_max_conns`, with one line when the limit had to be lowered."""
    fitted = fit_max_conns(requested, nofile)
    if fitted != requested:
        plog.warning(
            "max-conns lowered from %d to %d: the open-files limit is %d (%d kept for the "
            "server itself); raise it with ulimit -n or systemd's LimitNOFILE=",
            requested,
            fitted,
            nofile,
            FD_RESERVE,
            extra={"event": "limit_lowered", "max_conns": fitted, "nofile": nofile},
        )
    return fitted


def serve_settings(
    settings: Settings,
    service: Service,
    options: ConnectionOptions,
    *,
    verbose: int = 0,
    reload_settings: Callable[[], Settings] | None = None,
) -> int:
    """Run ``service`` with per-connection ``options`` as configured by ``settings`` until a
    signal; return the exit code. Each ``verbose`` step (``-v``) logs one level more.
    ``reload_settings`` loads the settings again on SIGHUP (see :mod:`twoway.reload`).

    Raises :class:`~twoway.errors.TwowayError` for expected failures (the CLI prints them).
    """
    setup_logging(
        settings.log_level,
        settings.log_format,
        access_log=settings.access_log,
        log_time=settings.log_time,
        verbose=verbose,
    )
    log_context(service=settings.service)
    if settings.hexdump:
        options = replace(options, tap=hexdump_tap(settings.hexdump_max))
        logging.getLogger(HEXDUMP_LOGGER).setLevel(logging.INFO)  # asked for: any --log-level
    for level, message in settings.notices:
        plog.log(level, message)
    tune_malloc()
    limit = raise_nofile_limit()
    loop_name = resolve_loop(settings.loop)
    plog.debug("event loop %s, open files limit %d", loop_name, limit)
    max_conns = _fit_logged(settings.max_conns, limit)

    from twoway.frontdoor import FrontDoor
    from twoway.reload import Reloader
    from twoway.wsgate import check_ws

    check_ws(settings)
    door = FrontDoor(settings)  # a bad certificate or network: ConfigError before any worker
    metrics_sock = None
    if settings.metrics is not None:
        from twoway.config import metrics_address
        from twoway.metrics.http import bind_metrics

        metrics_sock = bind_metrics(*metrics_address(settings.metrics))
    endpoint: EndpointThread | None = None
    report_dir: str | None = None
    supervisor_started = time.time()
    if settings.workers > 1:
        # Each worker answers on a socket of its own with its figures, for the supervisor's
        # endpoint and the workers' /stats, and leaves its totals there when it stops, for
        # the supervisor's exit summary (see metrics.workers).
        report_dir = tempfile.mkdtemp(prefix="twoway-metrics-")
    if report_dir is not None and metrics_sock is not None:
        # The supervisor serves the endpoint and adds up its workers.
        from twoway.metrics.workers import EndpointThread, WorkersSource

        source = WorkersSource(report_dir, settings.workers, started=supervisor_started)
        endpoint = EndpointThread(
            metrics_sock, source, token=settings.metrics_token, version=__version__
        )
    on = settings.systemd == "auto"
    notifier = Notifier() if on else Notifier({})
    where = _Listen(settings, listen_sockets() if on else [])
    where.prepare()

    def serve_one(index: int | None, port: int) -> int:
        if endpoint is not None:
            endpoint.after_fork()
        server = Server(
            service,
            where.hosts,
            port,
            options=options,
            max_connections=max_conns,
            max_connections_per_ip=settings.max_conns_per_ip,
            ipv6_prefix=settings.ipv6_prefix,
            reuse_port=index is not None,
            sock=where.socks,
            ipv6_only=settings.ipv6_only,
            unix=where.unix,
            unix_mode=settings.unix_mode_bits,
            **door.server_options(),
        )
        reloader = Reloader(
            settings,
            reload_settings,
            door,
            service,
            fit=lambda n: fit_max_conns(n, limit),
            verbose=verbose,
        )
        tag = f" (worker {index + 1}, pid {os.getpid()})" if index is not None else ""
        tag += where.describe() + door.describe()
        if index is not None:
            log_context(worker=index + 1)
        report = None
        if report_dir is not None and index is not None:
            from twoway.metrics.workers import socket_path

            report = socket_path(report_dir, index)
        gateways = []
        if settings.ws is not None:
            from twoway.wsgate import build_gateway

            gateways.append(build_gateway(settings, server, door))
        main = run_server(
            server,
            settings.grace,
            tag=tag,
            reload=lambda: reloader(server),
            progress=index is None,  # workers would draw over each other
            gateways=gateways,
            notify=notifier if index is None else None,
        )
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
            return runner.run(
                _observed(
                    main,
                    server,
                    settings,
                    metrics_sock=metrics_sock if index is None else None,
                    report=report,
                    workers=(report_dir, index, settings.workers) if report_dir else None,
                )
            )

    try:
        if settings.workers > 1:
            from twoway.workers import supervise

            if endpoint is not None:
                endpoint.start()
                _log_metrics(endpoint.sock, f" for {settings.workers} workers")
            try:
                code = supervise(
                    settings.workers,
                    where.hosts[0] if where.hosts else None,
                    settings.port,
                    settings.grace,
                    serve_one,
                    notify=notifier,
                )
                if report_dir is not None:
                    _log_server_summary(report_dir, settings.workers, supervisor_started)
                return code
            finally:
                if endpoint is not None:
                    endpoint.stop()
                if report_dir is not None:
                    shutil.rmtree(report_dir, ignore_errors=True)
        return serve_one(None, settings.port)
    finally:
        where.cleanup()


class _Listen:
    """Where ``twoway serve`` listens: the sockets systemd passed (then nothing else), or
    the ``--host`` addresses and/or the ``--unix`` socket. With ``--workers``, a Unix socket
    is bound here, before the fork, and every worker accepts on it (``SO_REUSEPORT`` has no
    Unix-socket equivalent)."""

    def __init__(self, settings: Settings, activated: list[Any]) -> None:
        self.settings = settings
        self.activated = activated
        self.socks = [a.sock for a in activated]
        given = settings.sources.get("host") is not None or settings.sources.get("port")
        tcp = settings.unix is None or bool(given)
        self.hosts: tuple[str, ...] = settings.hosts if tcp and not activated else ()
        self.unix = settings.unix if not activated else None
        self._bound: tuple[str, int] | None = None

    def prepare(self) -> None:
        """Log what is ignored under activation; bind the Unix socket for workers."""
        s = self.settings
        if self.activated:
            ignored = [f"--{k}" for k in ("host", "port", "unix") if s.sources.get(k)]
            if ignored:
                plog.warning(
                    "systemd socket activation: %s ignored (the sockets come from systemd)",
                    "/".join(ignored),
                )
            return
        if self.unix is not None and s.workers > 1:
            from twoway.net.unixsock import bind_unix

            sock, inode = bind_unix(self.unix, s.unix_mode_bits)
            self._bound = (self.unix, inode)
            self.socks.append(sock)
            self.unix = None

    def describe(self) -> str:
        """For the ready line: `` (socket from systemd: chat)``; empty otherwise."""
        if not self.activated:
            return ""
        names = ", ".join(a.name for a in self.activated)
        return f" (socket{'s' if len(self.activated) > 1 else ''} from systemd: {names})"

    def cleanup(self) -> None:
        """Remove the Unix socket file bound for the workers."""
        if self._bound is not None:
            from twoway.net.unixsock import remove_unix

            remove_unix(*self._bound)


def _log_metrics(sock: Any, more: str = "") -> None:
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    plog.info(
        "metrics on http://%s/ (/metrics, /healthz, /readyz, status page)%s",
        where,
        more,
        extra={"event": "metrics", "host": host, "port": port},
    )


def _log_server_summary(report_dir: str, workers: int, started: float) -> None:
    """The supervisor's exit summary: the totals every worker left when it stopped, added
    up, in one line like each worker's (``stopped (all 4 workers): ...``)."""
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


async def _observed(
    main: Coroutine[Any, Any, int],
    server: Server,
    settings: Settings,
    *,
    metrics_sock: Any,
    report: str | None,
    workers: tuple[str, int | None, int] | None = None,
) -> int:
    """Run ``main`` (:func:`run_server`) with what watches it: the metrics endpoint on
    ``metrics_sock`` (one process), the worker's answers to its supervisor and to the other
    workers on ``report`` (``--workers``), and chat's ``/stats``. ``workers``: the report
    directory, this worker's index and the number of workers: ``/stats`` then adds up every
    worker, and the worker leaves its totals there when it stops."""
    from twoway.metrics.source import LocalSource
    from twoway.metrics.summary import stats_lines
    from twoway.services.chat import ChatService

    source = LocalSource(server)
    chat = server.service
    if isinstance(chat, ChatService):
        started = time.monotonic()
        chat.stats_public = settings.stats_public
        if workers is None:
            chat.stats_lines = lambda: stats_lines(
                source.read(with_process=False), time.monotonic() - started
            )
        else:
            from twoway.metrics.workers import WorkersSource

            everyone = WorkersSource(workers[0], workers[2], started=source.started)

            async def whole_server() -> list[str]:
                return stats_lines(await everyone.figures(), time.monotonic() - started)

            chat.stats_lines = whole_server
    if metrics_sock is None and report is None:
        return await main
    from twoway.metrics.http import MetricsServer
    from twoway.metrics.workers import WorkerReporter, write_final

    source.monitor.start()
    http = reporter = None
    try:
        if metrics_sock is not None:
            http = MetricsServer(source, token=settings.metrics_token, version=__version__)
            await http.start(metrics_sock)
            _log_metrics(metrics_sock)
        if report is not None:
            reporter = WorkerReporter(report, source)
            await reporter.start()
        code = await main
        if workers is not None and workers[1] is not None:
            write_final(workers[0], workers[1], source.read(with_process=False))
        return code
    finally:
        if http is not None:
            await http.close()
        if reporter is not None:
            await reporter.close()
        source.monitor.stop()


def run(
    handler: Service | AsyncHandler,
    host: str = "127.0.0.1",
    port: int = 4001,
    *,
    framing: Framing = "line",
    grace: float = 5.0,
    loop: str = "auto",
    log_level: str = "info",
    log_format: str = "text",
    log_time: str = "time",
    access_log: bool = True,
    options: ConnectionOptions | None = None,
    **server_kwargs: Any,
) -> int:
    """Run ``handler`` like ``twoway serve`` does: logging to stderr, signals, graceful
    shutdown. Blocks until SIGINT/SIGTERM (see :func:`run_server`); returns the exit code.

    ``handler`` and ``framing`` are what :func:`~twoway.net.server.serve` takes: a
    :class:`Service`, or an ``async def handler(conn)`` fed lines (``framing="line"``) or
    chunks (``"raw"``); other keyword arguments go to :class:`Server` as well
    (``max_connections``, ``max_connections_per_ip``...). A ``max_connections`` the
    open-files limit cannot hold is lowered, with one log line. Raises
    :class:`~twoway.errors.ListenError` if it cannot listen.
    """
    setup_logging(log_level, log_format, access_log=access_log, log_time=log_time)
    tune_malloc()
    nofile = raise_nofile_limit()
    wanted = server_kwargs.get("max_connections")
    if wanted is not None:
        server_kwargs["max_connections"] = _fit_logged(wanted, nofile)
    server = serve(handler, host, port, framing=framing, options=options, **server_kwargs)
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(run_server(server, grace))

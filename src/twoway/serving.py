"""``twoway serve`` as a process: the settings turned into one server, or ``--workers`` of them.

:func:`serve_settings` is what the CLI calls once the settings are loaded and the service
built: it sets up logging and the process's limits, checks the front door (TLS, allow/deny,
PROXY) and the gateway before anything listens, decides where to listen (the sockets systemd
passed, or ``--host``/``--unix``), and runs the server under
:func:`~twoway.runner.run_server` with its SIGHUP reloader, its watchers
(:mod:`twoway.observe`) and systemd's notifications, in this process or in each worker of a
supervisor (:mod:`twoway.workers`). It returns the exit code; expected failures raise
:class:`~twoway.errors.TwowayError` for the CLI to print.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twoway._version import __version__
from twoway.announce import log_metrics, log_workers_summary
from twoway.logs import PROCESS_LOGGER, log_context, setup_logging
from twoway.loops import loop_factory, resolve_loop
from twoway.net.options import ConnectionOptions
from twoway.net.server import Server
from twoway.net.service import Service
from twoway.observe import observed
from twoway.proclimits import fit_logged, fit_max_conns, raise_nofile_limit, tune_malloc
from twoway.runner import run_server
from twoway.systemd import Notifier, listen_sockets
from twoway.traffic import HEXDUMP_LOGGER, hexdump_tap

if TYPE_CHECKING:  # `import twoway` must not load the CLI's option table
    from twoway.config import Settings
    from twoway.metrics.workers import EndpointThread

__all__ = ["serve_settings"]

#: The lines that always show, whatever --log-level: ready, signals, shutdown, limits.
plog = logging.getLogger(PROCESS_LOGGER)


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
    max_conns = fit_logged(settings.max_conns, limit)

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
        worker = f" (worker {index + 1}, pid {os.getpid()})" if index is not None else ""
        tag = worker + where.describe() + door.describe()
        if index is not None:
            log_context(worker=index + 1)
        report = None
        if report_dir is not None and index is not None:
            from twoway.metrics.workers import socket_path

            report = socket_path(report_dir, index)
        gateways = []
        if settings.ws is not None:
            from twoway.wsgate import build_gateway

            gateways.append(build_gateway(settings, server, door, reuse_port=index is not None))
        main = run_server(
            server,
            settings.grace,
            tag=tag,
            reload=lambda: reloader(server),
            progress=index is None,  # workers would draw over each other
            gateways=gateways,
            notify=notifier if index is None else None,
            worker=worker,
        )
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
            return runner.run(
                observed(
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
                log_metrics(endpoint.sock, f" for {settings.workers} workers")
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
                    log_workers_summary(report_dir, settings.workers, supervisor_started)
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

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
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twoway.errors import describe_oserror
from twoway.logs import setup_logging
from twoway.loops import loop_factory, resolve_loop
from twoway.net.options import ConnectionOptions
from twoway.net.server import Server
from twoway.net.service import Service

if TYPE_CHECKING:  # `import twoway` must not load the CLI's option table
    from twoway.config import Settings

__all__ = [
    "ExceptionFilter",
    "raise_nofile_limit",
    "run",
    "run_server",
    "serve_settings",
    "tune_malloc",
]

log = logging.getLogger("twoway")

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


async def run_server(
    server: Server,
    grace: float,
    *,
    name: str = "twoway",
    tag: str = "",
    reload: Callable[[], None] | None = None,
) -> int:
    """Start ``server``, log the ready line, serve until SIGINT/SIGTERM, shut down gracefully.

    The first signal starts a shutdown that lasts at most ``grace`` seconds; a second one
    aborts every connection at once. SIGHUP calls ``reload`` (it logs what it did and never
    raises; see :meth:`twoway.frontdoor.FrontDoor.reload`). Returns the exit code (0).
    """
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(ExceptionFilter())
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "%s received: shutting down (grace %g s, %d connection(s))",
                signal.Signals(signum).name,
                grace,
                server.connection_count,
            )
            stop.set()
        else:
            log.warning(
                "%s received again: closing every connection now", signal.Signals(signum).name
            )
            for conn in server.connections:
                conn.abort(reason="forced shutdown")

    # Handlers first: a script that signals as soon as it reads the ready line must get the
    # graceful shutdown, not the default action of the signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, _on_reload, reload)
    try:
        await server.start()
        for host, port in server.addresses:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("%s %s listening on %s%s", name, server.service.name, where, tag)
        await stop.wait()
        await server.shutdown(grace)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    s = server.stats
    log.info(
        "stopped: %d connection(s) served, in %d B, out %d B", s.accepted, s.bytes_in, s.bytes_out
    )
    return 0


def _on_reload(reload: Callable[[], None] | None) -> None:
    if reload is None:
        log.info("SIGHUP received: nothing to reload")
    else:
        log.info("SIGHUP received: reloading")
        reload()


def serve_settings(settings: Settings, service: Service, options: ConnectionOptions) -> int:
    """Run ``service`` with per-connection ``options`` as configured by ``settings`` until a
    signal; return the exit code.

    Raises :class:`~twoway.errors.TwowayError` for expected failures (the CLI prints them).
    """
    setup_logging(settings.log_level, settings.log_format)
    tune_malloc()
    limit = raise_nofile_limit()
    loop_name = resolve_loop(settings.loop)
    log.debug("event loop %s, open files limit %d", loop_name, limit)
    from twoway.frontdoor import FrontDoor

    door = FrontDoor(settings)  # a bad certificate or network: ConfigError before any worker

    def serve_one(index: int | None, port: int) -> int:
        server = Server(
            service,
            settings.host,
            port,
            options=options,
            max_connections=settings.max_conns,
            max_connections_per_ip=settings.max_conns_per_ip,
            ipv6_prefix=settings.ipv6_prefix,
            reuse_port=index is not None,
            **door.server_options(),
        )
        tag = f" (worker {index + 1}, pid {os.getpid()})" if index is not None else ""
        tag += door.describe()
        with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
            return runner.run(
                run_server(server, settings.grace, tag=tag, reload=lambda: door.reload(server))
            )

    if settings.workers > 1:
        from twoway.workers import supervise

        return supervise(settings.workers, settings.host, settings.port, settings.grace, serve_one)
    return serve_one(None, settings.port)


def run(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 4001,
    *,
    grace: float = 5.0,
    loop: str = "auto",
    log_level: str = "info",
    options: ConnectionOptions | None = None,
    **server_kwargs: Any,
) -> int:
    """Run ``service`` like ``twoway serve`` does: logging to stderr, signals, graceful
    shutdown. Blocks until SIGINT/SIGTERM; returns the exit code."""
    setup_logging(log_level)
    tune_malloc()
    raise_nofile_limit()
    server = Server(service, host, port, options=options, **server_kwargs)
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(run_server(server, grace))

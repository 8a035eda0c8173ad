"""One server in this process until a signal: the library's entry points.

:func:`run_server` starts a :class:`~twoway.net.server.Server`, logs its ready lines, serves
until SIGINT, SIGTERM or SIGQUIT, shuts down gracefully (a second signal forces) and logs the
exit summary; SIGHUP reloads, other habitual signals are logged. :func:`run` is the library
entry point around it (``twoway.run(MyService())``): logging, the process's limits, the event
loop. :class:`ExceptionFilter` keeps accept failures for lack of descriptors to one line a
second. Only this module, :mod:`twoway.serving` (what ``twoway serve`` calls) and
:mod:`twoway.cli` install signal handlers, configure logging or decide how the process ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twoway.announce import log_gateway, log_listening, log_stopped, systemd_status
from twoway.errors import describe_oserror
from twoway.logs import PROCESS_LOGGER, setup_logging
from twoway.loops import loop_factory
from twoway.net.asyncapi import AsyncHandler
from twoway.net.options import ConnectionOptions
from twoway.net.server import Server, serve
from twoway.net.service import Framing, Service
from twoway.proclimits import fit_logged, raise_nofile_limit, tune_malloc
from twoway.transfers import show_transfers, wanted

if TYPE_CHECKING:
    from twoway.net.ws import WsGateway
    from twoway.systemd import Notifier

__all__ = ["ExceptionFilter", "run", "run_server"]

log = logging.getLogger("twoway")
#: The lines that always show, whatever --log-level: ready, signals, shutdown, limits.
plog = logging.getLogger(PROCESS_LOGGER)

_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


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
    worker: str = "",
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
                notify.ready(systemd_status(server))
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
        log_listening(server, name, tag)
        watch = wanted(server.service) if progress else None
        if watch is not None:
            bars = loop.create_task(show_transfers(server, watch))
        for gateway in gateways:
            try:
                await gateway.start()
            except BaseException:
                await server.shutdown(0)
                raise
            log_gateway(server, gateway, name, worker)
        if notify is not None:
            notify.ready(systemd_status(server))
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
    log_stopped(server, started, started_at)
    return 0


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
        server_kwargs["max_connections"] = fit_logged(wanted, nofile)
    server = serve(handler, host, port, framing=framing, options=options, **server_kwargs)
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(run_server(server, grace))

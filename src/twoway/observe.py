"""What watches a running server of ``twoway serve``: the metrics endpoint, the worker's
answers to its supervisor, chat's ``/stats``.

:func:`observed` wraps a server's :func:`~twoway.runner.run_server` coroutine: it starts the
``--metrics`` HTTP endpoint (one process) or the worker's reporter socket (``--workers``),
hands chat its ``/stats`` lines (this process's figures, or every worker's added up), runs
the server, leaves a worker's totals for the supervisor's exit summary, and stops what it
started whatever happens. The figures themselves are :mod:`twoway.metrics`'s.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from twoway._version import __version__
from twoway.announce import log_metrics

if TYPE_CHECKING:  # `import twoway` must not load the CLI's option table
    from twoway.config import Settings
    from twoway.net.server import Server

__all__ = ["observed"]


async def observed(
    main: Coroutine[Any, Any, int],
    server: Server,
    settings: Settings,
    *,
    metrics_sock: Any,
    report: str | None,
    workers: tuple[str, int | None, int] | None = None,
) -> int:
    """Run ``main`` (:func:`~twoway.runner.run_server`) with what watches it: the metrics
    endpoint on ``metrics_sock`` (one process), the worker's answers to its supervisor and to
    the other workers on ``report`` (``--workers``), and chat's ``/stats``. ``workers``: the
    report directory, this worker's index and the number of workers: ``/stats`` then adds up
    every worker, and the worker leaves its totals there when it stops."""
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
            log_metrics(metrics_sock)
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

"""Metrics with ``--workers N``: the supervisor serves the endpoint and adds up its workers.

Each worker answers on a Unix socket of its own (``DIR/N.sock``, in a directory only this
user can enter) with one JSON document: its reading, its health and its readiness
(:class:`WorkerReporter`, on the worker's event loop, so a reading is consistent). The
supervisor runs the endpoint in a thread with an event loop of its own
(:class:`EndpointThread`); on every scrape :class:`WorkersSource` asks all workers at once,
each within :data:`ASK_TIMEOUT`, and merges what came back: counters and gauges summed,
histograms added bucket by bucket (see :func:`~twoway.metrics.figures.merge`).

Why not prometheus_client's multiprocess mode: it needs a directory of memory-mapped files
written on every update, which means prometheus objects touched on the hot path (what the
plain integer counters avoid), and it cannot express the gauges read at scrape time
(connections open, chat members, loop lag). Asking each worker at scrape time keeps counting
free and makes the supervisor's ``/healthz`` a real check: a worker whose loop is stuck does
not answer, and ``/healthz`` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from twoway.metrics.figures import Figures, merge
from twoway.metrics.http import MetricsServer
from twoway.metrics.source import Check, LocalSource

__all__ = [
    "ASK_TIMEOUT",
    "EndpointThread",
    "WorkerReporter",
    "WorkersSource",
    "read_finals",
    "write_final",
]

log = logging.getLogger("twoway.metrics")

#: Seconds a worker has to answer its supervisor's question.
ASK_TIMEOUT = 1.0
#: The most a worker's answer may weigh (a reading is a few KiB).
MAX_ANSWER = 1 << 20


def socket_path(directory: str | os.PathLike[str], index: int) -> str:
    """Worker ``index``'s socket in ``directory``."""
    return str(Path(directory) / f"{index}.sock")


def final_path(directory: str | os.PathLike[str], index: int) -> Path:
    """Where worker ``index`` leaves its last reading when it stops."""
    return Path(directory) / f"{index}.final.json"


def write_final(directory: str | os.PathLike[str], index: int, figures: Figures) -> None:
    """Leave worker ``index``'s last reading for the supervisor's exit summary (written
    whole, then renamed: the supervisor never reads half of one). Never raises: a
    reading that cannot be written is left out of the sum, with one log line."""
    path = final_path(directory, index)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(figures.to_json()))
        tmp.replace(path)
    except OSError as exc:
        log.warning("metrics: cannot leave this worker's totals in %s: %s", path, exc)


def read_finals(directory: str | os.PathLike[str], workers: int) -> list[Figures]:
    """The last readings the workers left (those that did; a worker killed leaves none)."""
    out = []
    for index in range(workers):
        with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
            out.append(Figures.from_json(json.loads(final_path(directory, index).read_text())))
    return out


class WorkerReporter:
    """A worker's side: answers each connection to its socket with its reading and closes."""

    def __init__(self, path: str, source: LocalSource) -> None:
        self.path = path
        self.source = source
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (replacing the socket a worker before this one left behind)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._answer, path=self.path)

    async def close(self) -> None:
        """Stop answering. Idempotent."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            source = self.source
            answer = {
                "figures": source.read().to_json(),
                "health": list(source.monitor.check()),
                "ready": list(source.ready_now()),
            }
            writer.write(json.dumps(answer).encode())
            await asyncio.wait_for(writer.drain(), ASK_TIMEOUT)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class WorkersSource:
    """The supervisor's :class:`~twoway.metrics.source.Source`: asks ``workers`` workers
    whose sockets are in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str, workers: int, *, started: float) -> None:
        self.directory = directory
        self.workers = workers
        self.started = started

    async def _ask(self, index: int) -> dict[str, Any] | str:
        """Worker ``index``'s answer, or why there is none."""
        try:
            async with asyncio.timeout(ASK_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(
                    socket_path(self.directory, index), limit=MAX_ANSWER
                )
                try:
                    data = await reader.read(MAX_ANSWER)
                finally:
                    writer.close()
            answer = json.loads(data)
            if not isinstance(answer, dict):
                raise ValueError("not an object")
            return answer
        except TimeoutError:
            return f"worker {index + 1}: no answer within {ASK_TIMEOUT:g} s"
        except (OSError, ValueError) as exc:
            return f"worker {index + 1}: not answering ({type(exc).__name__})"

    async def _all(self) -> list[dict[str, Any] | str]:
        return list(await asyncio.gather(*(self._ask(i) for i in range(self.workers))))

    async def figures(self) -> Figures:
        """The workers' readings, merged; ``twoway_workers`` says how many answered."""
        readings = []
        for answer in await self._all():
            if isinstance(answer, dict):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    readings.append(Figures.from_json(answer["figures"]))
        fig = merge(readings)
        fig.values["workers"] = len(readings)
        if "start_time_seconds" in fig.values or not readings:
            fig.values["start_time_seconds"] = self.started
        return fig

    async def _verdict(self, key: str) -> Check:
        problems = []
        for answer in await self._all():
            if isinstance(answer, str):
                problems.append(answer)
                continue
            ok, reason = answer.get(key, [False, "no verdict"])
            if not ok:
                problems.append(str(reason))
        if problems:
            return False, "; ".join(problems)
        return True, f"ok ({self.workers} workers)" if key == "health" else "ready"

    async def health(self) -> Check:
        """Healthy when every worker answers in time and says its loop is responsive."""
        return await self._verdict("health")

    async def ready(self) -> Check:
        """Ready when every worker is ready."""
        return await self._verdict("ready")


class EndpointThread:
    """The supervisor's endpoint: a :class:`MetricsServer` for a :class:`WorkersSource`, on
    an event loop in a thread of its own (the supervisor's own loop is a plain signal wait).

    The thread blocks every signal, so the supervisor's ``sigtimedwait`` still takes them
    all. A forked worker must call :meth:`after_fork` (it closes its copy of the
    listening socket, which it would otherwise hold open).
    """

    def __init__(self, sock: socket.socket, source: WorkersSource, *, token: str | None,
                 version: str) -> None:  # fmt: skip
        self.sock = sock
        self.source = source
        self.token = token
        self.version = version
        self.thread = threading.Thread(target=self._run, name="twoway-metrics", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    def start(self) -> None:
        """Start serving; returns once the endpoint listens."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread.start()  # inherits the mask: every signal blocked
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._started.wait(10.0)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = MetricsServer(self.source, token=self.token, version=self.version)
        try:
            await server.start(self.sock)
        finally:
            self._started.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()

    def stop(self) -> None:
        """Stop serving and wait (a few seconds at most) for the thread. Idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
            self.thread.join(5.0)

    def after_fork(self) -> None:
        """In a forked worker: close the inherited listening socket."""
        # detach(): this copy of the socket object must not close the number again later.
        with contextlib.suppress(OSError):
            os.close(self.sock.detach())

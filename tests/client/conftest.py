"""Fixtures for the client tests: servers and clients as subprocesses, stopped at the end.

``procs.server("upper")`` starts ``python -m twoway serve upper --port 0`` (a
:class:`helpers.CliServer`) and returns once its ``listening on HOST:PORT`` line is read;
``procs.client(...)`` starts ``python -m twoway connect ...``. At teardown every process
still running gets SIGTERM (then SIGKILL), and every pipe is released, so no transport is
left to the garbage collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers import CliServer, serve_args

from .clientkit import TWOWAY, UNIT, Proc, PtyProc


class Server(CliServer):
    """A :class:`helpers.CliServer` for async tests: its blocking waits run in a thread, so
    the event loop keeps reading the clients' output meanwhile."""

    async def ready(self, within: float = 15 * UNIT) -> Server:
        await asyncio.to_thread(self.wait_ready, within)
        return self

    async def wait(self, within: float = 10 * UNIT) -> int:
        """Wait for the exit (after :meth:`kill`, say); return the exit code."""
        return await asyncio.to_thread(self.wait_exit, within)


class Procs:
    """Starts processes and remembers them for teardown."""

    def __init__(self) -> None:
        self.started: list[Proc] = []
        self.servers: list[Server] = []
        self.ptys: list[PtyProc] = []

    async def start(self, *args: str, stdin: Any = asyncio.subprocess.DEVNULL) -> Proc:
        proc = await Proc.start(*args, stdin=stdin)
        self.started.append(proc)
        return proc

    async def server(self, service: str, *options: str, port: int = 0) -> Server:
        """A ``twoway serve SERVICE`` on 127.0.0.1, ready."""
        server = Server(serve_args(service, *options, port=port))
        self.servers.append(server)
        return await server.ready()

    async def client(self, *args: str, stdin: Any = asyncio.subprocess.DEVNULL) -> Proc:
        """A ``twoway connect ARGS`` (stdin from /dev/null unless given)."""
        return await self.start(*TWOWAY, "connect", *args, stdin=stdin)

    async def pty_client(self, *args: str) -> PtyProc:
        """A ``twoway connect ARGS`` on a terminal."""
        proc = await PtyProc.start(*TWOWAY, "connect", *args)
        self.ptys.append(proc)
        return proc

    async def close(self) -> None:
        for pty in self.ptys:
            await pty.close()
        await asyncio.gather(
            *(proc.stop() for proc in self.started),
            *(asyncio.to_thread(server.stop, 5 * UNIT) for server in self.servers),
        )


@pytest.fixture
async def procs() -> AsyncIterator[Procs]:
    registry = Procs()
    try:
        yield registry
    finally:
        await registry.close()

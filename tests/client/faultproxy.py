"""A small TCP fault proxy for tests, in the vocabulary of Toxiproxy.

It listens on a free port of 127.0.0.1 and forwards every connection to ``upstream``. Faults
are switched on and off from the test, in the same event loop:

* :meth:`FaultProxy.timeout` — Toxiproxy's ``timeout`` toxic with ``timeout=0``: from now on
  nothing gets through in either direction and nothing is closed. Each direction reads at
  most one more chunk and holds it; after that the kernel buffers fill and TCP itself goes
  quiet, so the peers see a silent partition (the proxy's kernel still acknowledges
  segments, so TCP keep-alive cannot see it either: only an application timeout can).
  New connections are accepted and held the same way.
* :meth:`FaultProxy.heal` — removes the toxic: held chunks go through and forwarding resumes.
* :meth:`FaultProxy.reset_peer` — Toxiproxy's ``reset_peer``: every connection is reset (RST).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["FaultProxy"]


class FaultProxy:
    """See the module docstring. ``async with await FaultProxy.start(port) as proxy:``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, upstream_port: int, upstream_host: str = "127.0.0.1") -> FaultProxy:
        proxy = cls((upstream_host, upstream_port))
        proxy._server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    @property
    def holding(self) -> bool:
        return not self._flowing.is_set()

    def timeout(self) -> None:
        """Hold everything from now on (a silent partition)."""
        self._flowing.clear()

    def heal(self) -> None:
        """Let data through again."""
        self._flowing.set()

    def reset_peer(self) -> None:
        """Reset every connection, both sides."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._forward(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(65536)
                await self._flowing.wait()  # a chunk read just before the fault is held
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            dst.transport.abort()

    async def close(self) -> None:
        """Stop listening, drop every connection, wait for all of it to be released."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
        self._writers.clear()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

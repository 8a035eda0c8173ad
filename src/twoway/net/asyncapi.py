"""The async/await convenience layer: an ``async def handler(conn)`` over the same protocol.

:class:`AsyncService` adapts a coroutine function to the callback API: received lines (or
chunks) go into the connection's bounded inbox, ``async for line in conn`` takes them out, and
reading pauses while the inbox is over ``inbox_limit``. When the handler returns, the
connection is closed; if it raises, the error is logged and the connection aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from twoway.errors import ConnectionClosed
from twoway.net.service import Framing, LineService

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.net.connection import Connection

__all__ = ["AsyncHandler", "AsyncService"]

AsyncHandler = Callable[["Connection"], Awaitable[None]]


class AsyncService(LineService):
    """Runs ``handler(conn)`` as one task per connection."""

    quit_command = False  # the handler sees every line, ``quit`` included
    name = "async"

    def __init__(self, handler: AsyncHandler, framing: Framing = "line") -> None:
        self.handler = handler
        self.framing = framing  # type: ignore[misc]
        self.name = getattr(handler, "__name__", "async")  # type: ignore[misc]
        #: The running handlers (a handler may outlive its connection).
        self.tasks: set[asyncio.Task[None]] = set()

    def on_connect(self, conn: Conn) -> None:
        # net builds every connection this service gets: the full Connection, whose async
        # API (readline, async for) the handler uses.
        task = asyncio.get_running_loop().create_task(self._run(cast("Connection", conn)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def finish_handlers(self, grace: float) -> None:
        """Give the running handlers ``grace`` seconds to return, then cancel them."""
        tasks = [t for t in self.tasks if not t.done()]
        if not tasks:
            return
        if grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=2.0)

    async def _run(self, conn: Connection) -> None:
        try:
            await self.handler(conn)
        except (ConnectionClosed, ConnectionError):
            conn.abort()
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception as exc:
            try:
                self.on_error(conn, exc)
            finally:
                conn.abort()
        else:
            conn.close()

    def on_line(self, conn: Conn, line: str) -> None:
        cast("Connection", conn).feed_inbox(line)

    def on_data(self, conn: Conn, data: bytes) -> None:
        cast("Connection", conn).feed_inbox(data)

    def on_eof(self, conn: Conn) -> None:
        """The handler reads the end of the stream and decides when to close."""

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        if self.framing != "raw":
            conn.send_line(reason)
        conn.close()

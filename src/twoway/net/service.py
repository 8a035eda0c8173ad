"""The callback API: what a service implements to handle connections.

A :class:`Service` is one object shared by every connection of a server, like the
``'connection'`` listener of a Node.js ``net.Server``; per-connection state lives on the
connection (``conn.state``). Its callbacks run inside the protocol callbacks, synchronously:
they must not block and cannot await. That is the fast path. For ``async def`` handlers, see
:func:`twoway.net.server.serve`, which wraps them in an :class:`~twoway.net.asyncapi.AsyncService`.

An exception escaping a callback is a bug in the service: it is logged with its traceback via
:meth:`Service.on_error` and the connection is aborted; the server keeps running.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar, Literal

from twoway.net.complaints import complain

if TYPE_CHECKING:
    from twoway.net.conn import Conn, Listening
    from twoway.sansio.buckets import Buckets

__all__ = ["Framing", "LineService", "Service", "deliver_line"]

Framing = Literal["raw", "line", "chunk"]

log = logging.getLogger("twoway.service")


class Service:
    """Base class of a raw-bytes service: override the ``on_*`` methods you need."""

    #: How received bytes are cut before they reach the service: ``raw`` calls
    #: :meth:`on_data` with every chunk; line services use ``line`` or ``chunk``.
    framing: ClassVar[Framing] = "raw"
    #: The service's name in logs.
    name: ClassVar[str] = "service"

    async def on_start(self, server: Listening) -> None:
        """Awaited by :meth:`Server.start` before it binds: set up what connections will need
        (a chat bus, for instance). If it raises, the server does not start. Once it has run,
        :meth:`on_stopped` is awaited at the end, even when binding fails."""

    def on_listening(self, server: Listening) -> None:
        """The server is listening (``server.addresses`` holds the real ports)."""

    def on_connect(self, conn: Conn) -> None:
        """A connection was accepted (or, on the client side, established)."""

    def on_data(self, conn: Conn, data: bytes) -> None:
        """Bytes arrived (``raw`` framing)."""

    def on_eof(self, conn: Conn) -> None:
        """The peer half-closed (sent FIN). Default: finish writing, then close."""
        conn.close()

    def on_close(self, conn: Conn, exc: BaseException | None) -> None:
        """The connection is gone; ``exc`` is the OS error that ended it, if any."""

    def on_error(self, conn: Conn, exc: BaseException) -> None:
        """A callback of this service raised: log it. The connection is aborted afterwards."""
        log.error("%s: error in service %s: %r", conn.peer, self.name, exc, exc_info=exc)

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        """The server is shutting down: finish what is queued and close (the default)."""
        conn.close()

    def on_idle(self, conn: Conn) -> None:
        """Nothing was sent or received for ``idle_timeout`` seconds: close (the default)."""
        conn.close()

    async def finish_handlers(self, grace: float) -> None:
        """Awaited by :meth:`Server.shutdown` once the connections are gone: work this service
        runs beyond its connections' callbacks (``async def`` handlers) gets ``grace``
        seconds to end, then is cancelled. Nothing to do for a callback service."""

    async def on_stopped(self) -> None:
        """The server has shut down and every connection is gone: finish background work
        (flush files, ...). Awaited by :meth:`Server.shutdown`."""

    def on_slow(self, conn: Conn) -> None:
        """The peer is not reading fast enough (see ``max_queued``/``slow_grace``): drop it."""
        conn.close(timeout=1.0)

    def figures(self) -> dict[str, float]:
        """The service's own counters and gauges, by metric name without the ``twoway_``
        prefix (``chat_members``, ``dump_bytes_stored_total``...), for metrics and the exit
        summary. Called at scrape time, never on the hot path: it only reads plain integers
        the service keeps anyway. Default: none."""
        return {}

    def histograms(self) -> dict[str, Buckets]:
        """The service's histograms, by metric name without the prefix
        (``dump_fsync_seconds``...): the :class:`~twoway.sansio.buckets.Buckets` it keeps,
        read at scrape time like :meth:`figures`. Default: none."""
        return {}


class LineService(Service):
    """Base class of a line service: :meth:`on_line` is called once per received line.

    Lines are decoded as UTF-8 with replacement (bad bytes never crash anything) and have no
    terminator; :meth:`Connection.send_line` answers with the peer's own line ending.
    An over-long line is reported to the peer by :meth:`on_line_too_long` and skipped; a
    line that is exactly ``quit`` (any case) gets ``Bye Bye!`` and ends the connection
    unless :attr:`quit_command` is false.
    """

    framing: ClassVar[Framing] = "line"
    #: Whether a bare ``quit`` line ends the connection (handled before :meth:`on_line`).
    quit_command: ClassVar[bool] = True
    #: Whether to consume telnet negotiation (IAC) bytes and refuse options.
    telnet: ClassVar[bool] = False
    #: Whether a read that is exactly one ASCII line goes to :meth:`on_ascii_line` as bytes
    #: (no decode, no encode: the fast path of a service that can answer in bytes).
    ascii_lines: ClassVar[bool] = False

    def on_line(self, conn: Conn, line: str) -> None:
        """One complete line (or, with ``chunk`` framing, one received chunk)."""

    def on_ascii_line(self, conn: Conn, line: bytes) -> None:
        """With :attr:`ascii_lines`: one line of ASCII bytes, its ending (LF) included, for
        a service that answers in bytes. Must answer exactly as :meth:`on_line` would (the
        default calls it); lines that are not ASCII, or not alone in their read, still go
        to :meth:`on_line`."""
        self.on_line(conn, line[:-1].decode("ascii"))

    def on_line_too_long(self, conn: Conn, limit: int) -> None:
        """A line exceeded ``max_line``: tell the peer, and the log (see
        :func:`~twoway.net.complaints.complain`); the connection stays usable."""
        text = f"error: line too long (max {limit} bytes)"
        conn.send_line(text)
        complain(conn.peer, text)

    def on_quit(self, conn: Conn) -> None:
        """The peer sent ``quit``: say goodbye and close."""
        conn.send_line("Bye Bye!")
        conn.close()

    def on_shutdown(self, conn: Conn, reason: str) -> None:
        """Tell the peer why (``server shutting down``), then close."""
        conn.send_line(reason)
        conn.close()

    def on_idle(self, conn: Conn) -> None:
        """Tell the peer it was idle too long, then close."""
        conn.send_line(f"error: idle for {conn.options.idle_timeout:g} s, disconnecting")
        conn.close()

    def on_line_timeout(self, conn: Conn, timeout: float) -> None:
        """A line stayed unfinished for ``line_timeout`` seconds: say so, then close."""
        conn.send_line(f"error: line not finished within {timeout:g} s, disconnecting")
        conn.close()

    def on_slow(self, conn: Conn) -> None:
        """Drop a peer that does not read, after one last line saying so."""
        conn.send_line("error: too slow, disconnecting")
        conn.close(timeout=1.0)


def deliver_line(service: LineService, conn: Conn, text: str) -> None:
    """Hand one received line to ``service``: the ``quit`` rule, then :meth:`~LineService.
    on_line`. The one statement of the rule; the two hot paths in ``net.connection`` (one
    line per read, and the batch loop) write it inline on purpose, since a call per message
    there costs about a tenth of the message's time."""
    if len(text) == 4 and service.quit_command and text.lower() == "quit":
        service.on_quit(conn)
    else:
        service.on_line(conn, text)

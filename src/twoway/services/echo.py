"""The echo family: ``echo``, ``upper``, ``stamp`` and ``peers``.

Each is written only with the public callback API, as a user would write theirs. The reply
strings are the contract (the README lists them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from twoway.net.service import Framing, LineService, Service

if TYPE_CHECKING:
    from twoway.net.conn import Conn, Listening

__all__ = ["EchoService", "PeersService", "StampService", "UpperService"]


class EchoService(Service):
    """Sends back every byte it receives, unchanged (no framing, no decoding)."""

    name = "echo"

    def on_data(self, conn: Conn, data: bytes) -> None:
        conn.write(data)

    def on_eof(self, conn: Conn) -> None:
        # The peer has finished: everything it sent is already queued back; end our side too.
        conn.close()


class _Line(LineService):
    """A service that answers every line with exactly one line: it counts the lines it
    answered (one integer add per line, the whole cost of its metrics), which are both the
    lines received and the lines sent (``quit`` is answered by the server, not counted)."""

    def __init__(self, framing: Framing = "line") -> None:
        if framing not in ("line", "chunk"):
            raise ValueError(f"{self.name} is a line service: framing must be line or chunk")
        self.framing = framing  # type: ignore[misc]
        #: Lines answered (each received line gets one answer).
        self.lines = 0

    def figures(self) -> dict[str, float]:
        """Lines in and out (equal: one answer per line; see :meth:`Service.figures`)."""
        return {"lines_received_total": self.lines, "lines_sent_total": self.lines}


class UpperService(_Line):
    """Answers each line with ``You said "<LINE IN UPPER CASE>"``."""

    name = "upper"
    ascii_lines = True

    def on_line(self, conn: Conn, line: str) -> None:
        self.lines += 1
        conn.send_line(f'You said "{line.upper()}"')

    def on_ascii_line(self, conn: Conn, line: bytes) -> None:
        self.lines += 1
        # bytes.upper() changes ASCII letters only: on an ASCII line, what str.upper() does.
        conn.write(b'You said "' + line[:-1].upper() + b'"\n')


class StampService(_Line):
    """Greets with ``Hello``, then answers each line with ``HH:MM:SS - server reply: <line>``
    in local time."""

    name = "stamp"
    ascii_lines = True

    def on_connect(self, conn: Conn) -> None:
        conn.send_line("Hello")

    # The clock text changes once a second; strftime costs about a microsecond, so it is
    # formatted once per second, and the reply prefix is kept as str and as bytes.
    _next = 0.0
    _prefix = ""
    _prefix_bytes = b""

    def _tick(self, now: float) -> None:
        second = int(now)
        self._next = second + 1.0
        self._prefix = time.strftime("%H:%M:%S", time.localtime(second)) + " - server reply: "
        self._prefix_bytes = self._prefix.encode()

    def on_line(self, conn: Conn, line: str) -> None:
        now = time.time()
        if not self._next - 1.0 <= now < self._next:  # a new second (or the clock went back)
            self._tick(now)
        self.lines += 1
        conn.send_line(self._prefix + line)

    def on_ascii_line(self, conn: Conn, line: bytes) -> None:
        now = time.time()
        if not self._next - 1.0 <= now < self._next:  # a new second (or the clock went back)
            self._tick(now)
        self.lines += 1
        conn.write(self._prefix_bytes + line)


class PeersService(_Line):
    """Answers each line with ``You have N peers on this server`` (N = other connections)."""

    name = "peers"

    def __init__(self, framing: Framing = "line") -> None:
        super().__init__(framing)
        self.server: Listening | None = None

    def on_listening(self, server: Listening) -> None:
        self.server = server

    def on_line(self, conn: Conn, line: str) -> None:
        self.lines += 1
        count = self.server.connection_count - 1 if self.server is not None else 0
        noun = "peer" if count == 1 else "peers"
        conn.send_line(f"You have {count} {noun} on this server")

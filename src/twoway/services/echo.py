"""The echo family: ``echo``, ``upper``, ``stamp`` and ``peers``.

Each is written only with the public callback API, as a user would write theirs. The reply
strings are the contract (see DESIGN.md).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from twoway.net.handlers import Framing, LineService, Service

if TYPE_CHECKING:
    from twoway.net.connection import Connection
    from twoway.net.server import Server

__all__ = ["EchoService", "PeersService", "StampService", "UpperService"]


class EchoService(Service):
    """Sends back every byte it receives, unchanged (no framing, no decoding)."""

    name = "echo"

    def on_data(self, conn: Connection, data: bytes) -> None:
        conn.write(data)

    def on_eof(self, conn: Connection) -> None:
        # The peer has finished: everything it sent is already queued back; end our side too.
        conn.close()


class _Line(LineService):
    def __init__(self, framing: Framing = "line") -> None:
        if framing not in ("line", "chunk"):
            raise ValueError(f"{self.name} is a line service: framing must be line or chunk")
        self.framing = framing  # type: ignore[misc]


class UpperService(_Line):
    """Answers each line with ``You said "<LINE IN UPPER CASE>"``."""

    name = "upper"

    def on_line(self, conn: Connection, line: str) -> None:
        conn.send_line(f'You said "{line.upper()}"')


class StampService(_Line):
    """Greets with ``Hello``, then answers each line with ``HH:MM:SS - server reply: <line>``
    in local time."""

    name = "stamp"

    def on_connect(self, conn: Connection) -> None:
        conn.send_line("Hello")

    _second = -1
    _clock = ""

    def on_line(self, conn: Connection, line: str) -> None:
        now = int(time.time())
        if now != self._second:  # strftime costs about a microsecond: once a second is enough
            self._second = now
            self._clock = time.strftime("%H:%M:%S", time.localtime(now))
        conn.send_line(f"{self._clock} - server reply: {line}")


class PeersService(_Line):
    """Answers each line with ``You have N peers on this server`` (N = other connections)."""

    name = "peers"

    def __init__(self, framing: Framing = "line") -> None:
        super().__init__(framing)
        self.server: Server | None = None

    def on_listening(self, server: Server) -> None:
        self.server = server

    def on_line(self, conn: Connection, line: str) -> None:
        count = self.server.connection_count - 1 if self.server is not None else 0
        noun = "peer" if count == 1 else "peers"
        conn.send_line(f"You have {count} {noun} on this server")

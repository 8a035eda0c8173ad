"""Helpers for the WebSocket gateway tests: a ``twoway serve ... --ws`` subprocess and a raw
WebSocket client built on the websockets library's sans-I/O client (frames exactly as the
test writes them: bad UTF-8, binary, endless fragments...), over a plain blocking socket.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from helpers import UNIT, CliServer, serve_args

__all__ = ["WS_READY", "RawWs", "free_port", "start_ws"]

#: The gateway's ready line: scheme, host, port.
WS_READY = re.compile(r"WebSocket gateway on (wss?)://([^/\s]+):(\d+)/")
TIMEOUT = 5 * UNIT


def free_port() -> int:
    """A port that was free a moment ago (for a server restarted on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ws(
    servers: list[CliServer],
    service: str,
    *args: str,
    ws: str = "127.0.0.1:0",
    port: int = 0,
    loop: str = "asyncio",
) -> tuple[CliServer, int]:
    """``twoway serve SERVICE --ws WS ARGS``, ready; returns the server and its WebSocket
    port (the TCP port is ``server.port``)."""
    server = CliServer(serve_args(service, "--ws", ws, *args, port=port, loop=loop))
    servers.append(server)
    server.wait_ready()
    m = server.wait_for(WS_READY)
    return server, int(m.group(3))


class RawWs:
    """One WebSocket client over a blocking socket: the library's ClientProtocol does the
    handshake and the masking; what is sent is up to the test."""

    def __init__(
        self,
        port: int,
        *,
        origin: str | None = None,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
        handshake: bool = True,
    ) -> None:
        scheme = "wss" if tls is not None else "ws"
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.proto = ClientProtocol(
            parse_uri(f"{scheme}://127.0.0.1:{port}/"),
            origin=origin,  # type: ignore[arg-type]
            max_size=None,
        )
        self.response: Response | None = None
        self.messages: list[str] = []
        self.closed: tuple[int | None, str] | None = None
        self.eof = False
        self._parts: list[bytes] = []
        if handshake:
            self.handshake()

    def handshake(self) -> Response:
        """Send the HTTP upgrade and read the response (101 or a refusal)."""
        self.proto.send_request(self.proto.connect())
        self.flush()
        deadline = time.monotonic() + TIMEOUT
        while self.response is None:
            if not self._pump(deadline):
                raise AssertionError("no handshake response")
        return self.response

    # -- sending -----------------------------------------------------------------------

    def flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def send_text(self, data: str | bytes, fin: bool = True) -> None:
        """A text frame; bytes are sent as they are (valid UTF-8 or not)."""
        self.proto.send_text(data.encode() if isinstance(data, str) else data, fin=fin)
        self.flush()

    def send_binary(self, data: bytes) -> None:
        self.proto.send_binary(data)
        self.flush()

    def send_continuation(self, data: bytes, fin: bool) -> None:
        self.proto.send_continuation(data, fin=fin)
        self.flush()

    def send_raw(self, data: bytes) -> None:
        """Bytes straight to the socket (what no client library would send)."""
        self.sock.sendall(data)

    # -- receiving ---------------------------------------------------------------------

    def _pump(self, deadline: float) -> bool:
        """Read once and process what arrived; False at EOF or the deadline."""
        if self.eof:
            return False
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if data:
            self.proto.receive_data(data)
        else:
            self.eof = True
            self.proto.receive_eof()
        for event in self.proto.events_received():
            if isinstance(event, Response):
                self.response = event
            elif isinstance(event, Frame):
                self._frame(event)
        self.flush()  # pongs, the close answer
        return not self.eof

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.CONT):
            self._parts.append(bytes(frame.data))
            if frame.fin:
                self.messages.append(b"".join(self._parts).decode())
                self._parts = []
        elif frame.opcode is Opcode.CLOSE:
            rcvd = self.proto.close_rcvd
            self.closed = (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")

    def lines(self) -> list[str]:
        """Every line received so far (messages split on LF)."""
        return [line for m in self.messages for line in m.split("\n")]

    def expect(self, text: str, timeout: float = TIMEOUT) -> str:
        """Read until a received line contains ``text``; return that line."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            lines = self.lines()
            for line in lines[seen:]:
                if text in line:
                    self.messages = []  # what was read is consumed
                    return line
            seen = len(lines)
            if not self._pump(deadline) and (self.eof or time.monotonic() >= deadline):
                raise AssertionError(f"no line with {text!r}; got {self.lines()[-20:]}")

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Read until the server's close frame (then its EOF); the (code, reason)."""
        deadline = time.monotonic() + timeout
        while self.closed is None:
            if not self._pump(deadline) and (self.eof or time.monotonic() >= deadline):
                break
        while not self.eof and time.monotonic() < deadline:
            self._pump(deadline)
        if self.closed is None:
            raise AssertionError(f"no close frame (eof={self.eof}); got {self.lines()[-10:]}")
        return self.closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def chat_pair(port: int, names: Sequence[str] = ("alice", "bob")) -> list[RawWs]:
    """Clients that have read their welcome and set their nicks."""
    out = []
    for name in names:
        c = RawWs(port)
        c.expect("type /help for commands")
        c.send_text(f"/nick {name}")
        c.expect(f"is now known as {name}")
        out.append(c)
    return out

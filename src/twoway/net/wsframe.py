"""Lines over WebSocket messages, both ways, and the close code that says why a socket
was closed.

**One text message in is one line** to the service (a message holding newlines is several
lines; the ``quit`` rule applies): :class:`WsReceiver`, a base class of
:class:`~twoway.net.wsconn.WsConnection`, turns the protocol's frames into lines and
enforces the message limits. A message longer than ``max_line`` bytes (fragments counted
together) closes with 1009 (the library finds that one); binary messages on a text service
with 1003; bad UTF-8 with 1007; more than :data:`MAX_FRAGMENTS` fragments in one message
with 1009. Each is one log line.

**One write out is one text message**: the written lines without their final newline (a
chat batch of ten lines is one message with nine ``\\n`` inside; the web page splits on
them). :func:`text_frame` builds the frame once for all the connections a write goes to
(chat writes the same batch object to every member).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

from twoway.net.complaints import complain
from twoway.net.service import deliver_line
from twoway.net.wsalive import WsKeepalive

__all__ = ["CLOSE_CODES", "MAX_FRAGMENTS", "WsReceiver", "close_code", "text_frame"]


#: Fragments one message may have: a flood of empty continuation frames is cut here.
MAX_FRAGMENTS = 1024

# The last write turned into a frame, and that frame: chat writes one batch object to every
# member of a room, so the frame is built once per batch, not once per member.
_last_data: bytes | None = None
_last_frame = b""


def text_frame(data: bytes) -> bytes:
    """The unmasked text frame (the library's serializer) carrying ``data``: the lines
    written, without the final newline; bytes that are not UTF-8 are replaced."""
    global _last_data, _last_frame
    if data is _last_data:
        return _last_frame
    payload = data[:-1] if data.endswith(b"\n") else data
    try:
        payload.decode()
    except UnicodeDecodeError:
        payload = payload.decode("utf-8", "replace").encode()
    frame = Frame(Opcode.TEXT, payload).serialize(mask=False)
    _last_data, _last_frame = data, frame
    return frame


#: The close code a close reason maps to (anything else: 1000, normal closure).
CLOSE_CODES = {
    "server shutting down": CloseCode.GOING_AWAY,
    "shutdown": CloseCode.GOING_AWAY,
    "too slow": CloseCode.POLICY_VIOLATION,
    "idle": CloseCode.POLICY_VIOLATION,
    "no pong": CloseCode.POLICY_VIOLATION,
}


def close_code(reason: str | None, going_away: bool) -> CloseCode:
    """The code of the close frame for ``reason`` (see :data:`CLOSE_CODES`); always 1001
    (going away) once the server is shutting down."""
    if going_away:
        return CloseCode.GOING_AWAY
    return CLOSE_CODES.get(reason or "", CloseCode.NORMAL_CLOSURE)


class WsReceiver(WsKeepalive):
    """The receive path of a WebSocket connection: the protocol's frames in, the service's
    lines out (see the module docstring)."""

    __slots__ = ("_fragments", "_message")

    # Provided by the connection (besides what its bases list).
    started: bool

    def __init__(self) -> None:
        super().__init__()
        self._message: bytearray | None = None  # the fragments of a message so far
        self._fragments = 0

    if TYPE_CHECKING:  # what the connection provides

        def start_closing(self, timeout: float) -> None: ...

        def close_received(self) -> None: ...

    def receive_frame(self, frame: Frame) -> None:
        """Handle one frame the protocol parsed (the library answers pings and close frames
        itself)."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.CONT:
            if self.is_closing:
                return
            if opcode is Opcode.TEXT:
                if frame.fin:
                    self._text(bytes(frame.data))
                    return
                self._message = bytearray(frame.data)
                self._fragments = 1
                return
            message = self._message
            if message is None:
                return  # the protocol refused the stray continuation already
            message += frame.data
            self._fragments += 1
            if frame.fin:
                self._message = None
                self._text(bytes(message))
            elif self._fragments > MAX_FRAGMENTS:
                self._fail(
                    CloseCode.MESSAGE_TOO_BIG, f"more than {MAX_FRAGMENTS} fragments in a message"
                )
        elif opcode is Opcode.BINARY:
            if not self.is_closing:
                self._fail(CloseCode.UNSUPPORTED_DATA, "binary message on a text service")
        elif opcode is Opcode.PONG:
            self.pong_received()
        elif opcode is Opcode.CLOSE:
            self.close_received()

    def protocol_failed(self, exc: Exception) -> None:
        """The library refused what the peer sent (and sent the close frame itself)."""
        if isinstance(exc, PayloadTooBig):
            reason = f"message too big (max {self.options.max_line} bytes)"
        elif isinstance(exc, EOFError):
            reason = "the peer went away without a close frame"
        else:
            reason = f"protocol error: {exc}"
        if self.started:
            complain(self.peer, f"WebSocket closed: {reason}")
        self.give_reason(reason)
        self.start_closing(self.options.close_timeout)

    def forget_message(self) -> None:
        """Drop the fragments of an unfinished message (closing: no more lines)."""
        self._message = None

    def _text(self, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
            return
        self.traffic += 1
        service = self.service
        # A WsReceiver is always a WsConnection, a Conn (a cast would cost a call per line).
        if "\n" not in text:
            deliver_line(service, self, text)  # type: ignore[arg-type]
            return
        for line in text.split("\n"):
            if self.is_closing:
                return
            deliver_line(service, self, line.removesuffix("\r"))  # type: ignore[arg-type]

    def _fail(self, code: CloseCode, reason: str) -> None:
        """Close for a protocol violation: one log line, a close frame with ``reason``."""
        complain(self.peer, f"WebSocket closed: {reason}")
        self.give_reason(reason)
        proto = self.protocol
        if proto is not None and proto.state is State.OPEN:
            proto.fail(code, reason)
            self.send_pending()
        self.start_closing(self.options.close_timeout)

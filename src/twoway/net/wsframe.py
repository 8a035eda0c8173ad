"""Lines on a WebSocket: what a line service's writes become, the limit on a message's
fragments, and the close code that says why a socket was closed.

**One write out is one text message**: the written lines without their final newline (a
chat batch of ten lines is one message with nine ``\\n`` inside; the web page splits on
them). :func:`text_frame` builds the frame once for all the connections a write goes to
(chat writes the same batch object to every member).
"""

from __future__ import annotations

from websockets.frames import CloseCode, Frame, Opcode

__all__ = ["CLOSE_CODES", "MAX_FRAGMENTS", "close_code", "text_frame"]

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

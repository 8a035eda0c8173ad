"""Cutting a received byte stream into lines for display, and sent input into lines.

Pure: bytes in, lines out. Unlike the server's decoder, nothing is ever discarded here: a
client shows the user everything that arrived, so an over-long partial line is handed out in
pieces of ``limit`` bytes instead (which also bounds the memory it holds).
"""

from __future__ import annotations

__all__ = ["DEFAULT_DISPLAY_LIMIT", "LineSplitter", "split_keepends"]

# A screenful of text; longer lines are shown in pieces of this size.
DEFAULT_DISPLAY_LIMIT = 64 * 1024


class LineSplitter:
    """Split a stream into lines without their terminator (LF, or CRLF).

    :meth:`feed` returns the complete lines; the rest is held until more data, or until
    :meth:`flush` hands it out (the stream paused or ended in the middle of a line).
    """

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = DEFAULT_DISPLAY_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._buf = bytearray()

    @property
    def pending(self) -> bool:
        """True when part of a line is held."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the lines it completed (and any over-long pieces)."""
        buf = self._buf
        buf += data
        if b"\n" not in data:
            return self._cut_long() if len(buf) > self.limit else []
        *lines, rest = buf.split(b"\n")
        self._buf = bytearray(rest)
        out = [line[:-1] if line.endswith(b"\r") else line for line in map(bytes, lines)]
        if len(self._buf) > self.limit:
            out.extend(self._cut_long())
        return out

    def flush(self) -> bytes | None:
        """The held partial line, if any (then forgotten); a trailing CR is removed."""
        if not self._buf:
            return None
        data = bytes(self._buf)
        self._buf.clear()
        return data[:-1] if data.endswith(b"\r") else data

    def _cut_long(self) -> list[bytes]:
        buf = self._buf
        limit = self.limit
        pieces = [bytes(buf[i : i + limit]) for i in range(0, len(buf) - limit + 1, limit)]
        del buf[: len(pieces) * limit]
        return pieces


def split_keepends(data: bytes, held: bytes = b"") -> tuple[list[bytes], bytes]:
    """Split ``held + data`` after every LF: the complete lines, terminators kept, and the
    unterminated rest to hold for the next call."""
    data = held + data if held else data
    if b"\n" not in data:
        return [], data
    parts = data.split(b"\n")
    rest = parts.pop()
    return [part + b"\n" for part in parts], rest

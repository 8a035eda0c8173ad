"""Line framing: bytes in, line events out.

A line ends with ``\\n``; one ``\\r`` before it is part of the terminator (CRLF), and any
further ``\\r`` at the end of the content is dropped too, so a bare carriage return at a
line's end never reaches a service. The limit counts the content, not the terminator: a
line of exactly ``max_line`` bytes is accepted, one byte more is not.

The limit is enforced while scanning, before the newline arrives: a peer that sends an
endless line costs at most ``max_line + 1`` buffered bytes. The over-long line becomes one
:class:`LineTooLong` event, the rest of it is discarded up to the next newline and decoding
resumes there, so no fragment of it is ever delivered as a line (asyncio's ``readline`` hands
back the tail of such a line as if it were one; this decoder never does).

Every way of splitting the same byte stream gives the same events: the tests check it with
hypothesis. Scanning remembers where it stopped, so a long line arriving one byte at a time
stays O(n).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["DEFAULT_MAX_LINE", "Event", "Line", "LineDecoder", "LineTooLong", "PartialLine"]

# 64 KiB: far longer than any line a person types or a chat message needs, small enough that
# ten thousand peers each holding a maximal partial line cost well under 1 GiB.
DEFAULT_MAX_LINE = 64 * 1024

_CR = 13


class Line(NamedTuple):
    """A complete line: its content without the terminator, and whether it ended in CRLF."""

    data: bytes
    crlf: bool


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line grew past ``limit`` bytes; it is being discarded up to its newline."""

    limit: int


@dataclass(frozen=True, slots=True)
class PartialLine:
    """The stream ended in the middle of a line: its content so far (never empty)."""

    data: bytes


Event = Line | LineTooLong | PartialLine


# NamedTuple's generated __new__ is a Python function; tuple.__new__ builds the same object
# several times faster, which matters once per received line.
_tuple_new = tuple.__new__


def _content(raw: bytes) -> tuple[bytes, bool]:
    if raw and raw[-1] == _CR:
        return raw.rstrip(b"\r"), True
    return raw, False


class LineDecoder:
    """Incremental line decoder with a length limit (``None`` disables the limit).

    :meth:`feed` and :meth:`feed_eof` never raise on any input; bad input becomes events.
    After :meth:`feed_eof` the decoder is empty and may be fed a new stream.
    """

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int | None = DEFAULT_MAX_LINE) -> None:
        if max_line is not None and max_line < 1:
            raise ValueError(f"max_line must be at least 1 (got {max_line})")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (at most ``max_line + 1``)."""
        return len(self._buf)

    @property
    def discarding(self) -> bool:
        """Whether the rest of an over-long line is being skipped (up to its newline)."""
        return self._discarding

    def reset(self) -> None:
        """Forget any partial line: the next :meth:`feed` starts at a line boundary.

        For a caller that stopped handling a fed chunk's events part-way and will feed the
        unhandled rest again (see ``LineConnection`` backpressure)."""
        self._buf.clear()
        self._discarding = False

    def is_single(self, data: bytes) -> bool:
        """Whether ``data`` is exactly one LF-terminated line within the limit, with nothing
        pending: then :meth:`feed` would return exactly ``[Line(data[:-1], False)]`` and
        leave the decoder as it is, so a caller may skip it (see :meth:`feed_single`)."""
        n = len(data)
        if (
            self._buf
            or self._discarding
            or not n
            or data[n - 1] != 10
            or (n > 1 and data[n - 2] == _CR)
            or data.find(b"\n") != n - 1
        ):
            return False
        limit = self.max_line
        return limit is None or n - 1 <= limit

    def feed_single(self, data: bytes) -> bytes | None:
        """The content of ``data`` if it is exactly one LF-terminated line within the limit and
        nothing is pending; else ``None`` (call :meth:`feed`). A fast path for the common
        interactive case: when it returns bytes, :meth:`feed` would have returned exactly
        ``[Line(content, False)]`` and the decoder state is unchanged."""
        return data[:-1] if self.is_single(data) else None

    def feed(self, data: bytes) -> list[Event]:
        """Decode ``data`` and return the events it completes (often an empty list)."""
        out: list[Event] = []
        if not data:
            return out
        if self._discarding:
            i = data.find(b"\n")
            if i < 0:
                return out
            self._discarding = False
            data = data[i + 1 :]
            if not data:
                return out
        buf = self._buf
        if not buf:
            # Fast path, the common case: exactly one complete line and nothing pending.
            n = len(data)
            if data[n - 1] == 10 and data.find(b"\n") == n - 1:
                limit = self.max_line
                if limit is None or n <= limit + 1 or (n == limit + 2 and data[n - 2] == _CR):
                    if n > 1 and data[n - 2] == _CR:
                        out.append(_tuple_new(Line, (data[: n - 1].rstrip(b"\r"), True)))
                    else:
                        out.append(_tuple_new(Line, (data[: n - 1], False)))
                else:
                    out.append(LineTooLong(limit))
                return out
        else:
            # ``buf`` has already been scanned and holds no newline: search only the new part.
            i = data.find(b"\n")
            if i < 0:
                buf += data
                self._check_pending(out)
                return out
            buf += data[:i]
            self._emit(bytes(buf), out)
            buf.clear()
            data = data[i + 1 :]
            if not data:
                return out
        parts = data.split(b"\n")
        tail = parts.pop()
        emit = self._emit
        for raw in parts:
            emit(raw, out)
        if tail:
            buf += tail
            self._check_pending(out)
        return out

    def feed_eof(self) -> list[Event]:
        """End of stream: a pending partial line becomes a :class:`PartialLine` event."""
        out: list[Event] = []
        if self._buf:
            content, _ = _content(bytes(self._buf))
            self._buf.clear()
            if content:
                out.append(PartialLine(content))
        self._discarding = False
        return out

    def _emit(self, raw: bytes, out: list[Event]) -> None:
        limit = self.max_line
        if (
            limit is not None
            and len(raw) > limit
            and not (len(raw) == limit + 1 and raw[-1] == _CR)
        ):
            out.append(LineTooLong(limit))
            return
        if raw and raw[-1] == _CR:
            out.append(_tuple_new(Line, (raw.rstrip(b"\r"), True)))
        else:
            out.append(_tuple_new(Line, (raw, False)))

    def _check_pending(self, out: list[Event]) -> None:
        limit = self.max_line
        buf = self._buf
        n = len(buf)
        # One extra byte is allowed only if it may turn out to be the CR of a CRLF terminator.
        if limit is not None and n > limit and not (n == limit + 1 and buf[-1] == _CR):
            out.append(LineTooLong(limit))
            buf.clear()
            self._discarding = True

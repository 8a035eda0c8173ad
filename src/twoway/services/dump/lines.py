"""Where a shared ``--lines`` file's chunks are cut: at line ends, so that lines from
different connections never land inside one another.

Pure functions over a sink's buffered chunks (what the connection read and no write has taken
yet); the sink (:class:`~twoway.services.dump.sink.Sink`) keeps the state they are given
and writes what they return.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["whole_lines", "without_partial_line"]


def whole_lines(
    buf: Sequence[bytes], *, final: bool, line_open: bool, cut_line: bool, over_high: bool
) -> tuple[bytes, bytes]:
    """Split what is buffered into what may be written now and what stays buffered: the
    whole lines, keeping a line's start until its end arrives. At the end of the connection
    (``final``) an unterminated last line is closed with a newline, so the next connection's
    bytes never glue onto it; ``line_open`` says a line was partly written without its end
    (it is closed too, even with nothing buffered). ``cut_line``: the turn is up, so an open
    line with no end buffered is ended with a newline where it stands. ``over_high``: the
    buffer is above buffer_high (where reading pauses), so a line without its end is written
    as it is: held back, it would hold the client forever."""
    joined = b"".join(buf)
    if final:
        cut = len(joined)
        if (joined and not joined.endswith(b"\n")) or (not joined and line_open):
            joined += b"\n"
            cut += 1
    else:
        cut = joined.rfind(b"\n") + 1
        if not cut and cut_line and line_open:
            joined += b"\n"  # the turn is up: end the line where it stands
            cut = len(joined)
        elif not cut and over_high:
            cut = len(joined)
    return joined[:cut], joined[cut:]


def without_partial_line(buf: Sequence[bytes], *, line_open: bool) -> bytes:
    """What is kept of the buffer when the quota cut a line: only whole lines are stored, so
    the part of the cut line that is still buffered is dropped. (A line already partly
    written, being longer than buffer_high — ``line_open`` — keeps what is buffered of it
    and is closed with a newline.)"""
    joined = b"".join(buf)
    cut = joined.rfind(b"\n") + 1
    return joined[: cut if cut or not line_open else len(joined)]

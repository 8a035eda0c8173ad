"""The framed connection classes: how received bytes reach a service.

:class:`RawConnection` hands over every chunk; :class:`LineConnection` cuts lines (with its
twins for one-ASCII-line reads and telnet clients); :class:`ChunkConnection` treats each
chunk as one message. Their ``data_received`` paths are the hot path of every service: they
inline the coalescer's prologue and epilogue (see :mod:`twoway.net.coalesce`) instead of
calling :meth:`~twoway.net.connection.Connection.run_callback`, which would cost a call per
message.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

from twoway.net.coalesce import coalescer
from twoway.net.connection import Connection
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry
from twoway.net.service import LineService, Service, deliver_line
from twoway.net.state import CloseReason, Phase
from twoway.sansio.framing import Line, LineDecoder, LineTooLong, PartialLine
from twoway.sansio.telnet import TelnetFilter

__all__ = [
    "AsciiLineConnection",
    "ChunkConnection",
    "LineConnection",
    "RawConnection",
    "TelnetLineConnection",
    "connection_class",
    "tapped",
]

#: A read longer than this is decoded in slices of it (see LineConnection._feed_slices).
_SLICE = 16 * 1024

_co = coalescer
_CLOSING = Phase.CLOSING.value


class RawConnection(Connection):
    """A connection whose service gets every received chunk as bytes (``on_data``)."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.phase >= _CLOSING:
            return
        co = _co
        if co.batching:
            self.run_callback(self.service.on_data, data)
            return
        # run_callback, inlined: this is the hot path of every raw service.
        co.batching = True
        co.owner = self
        try:
            self.service.on_data(self, data)
        except Exception as exc:
            self.report_error(exc)
            self.abort()
        finally:
            co.end(self)


class LineConnection(Connection):
    """A connection whose service gets decoded lines (``on_line``).

    Answering obeys the write queue: once a server connection's queue passes its high-water
    mark, the rest of the read is kept as bytes (at most one read) and answered when the
    peer has read enough (``resume_writing``); reading stays paused meanwhile. One read can
    hold a quarter of a million empty lines, so answering them all first would let a peer
    that never reads pin megabytes.
    """

    __slots__ = ("_backlog", "_decoder", "_line_since", "_line_start")

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        super().__init__(service, options, registry)
        self._decoder = LineDecoder(options.max_line)
        #: Received bytes not answered yet because the write queue is full (see the class).
        self._backlog: bytes | None = None
        #: Where the unfinished line the last sweep saw began (a stream offset; -1 while an
        #: over-long line is skipped), and since when it has been unfinished.
        self._line_start: int | None = None
        self._line_since = 0.0

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.phase >= _CLOSING:
            return
        if self._backlog is not None:
            self._backlog += data  # a read that was already under way when reading paused
            return
        if not _co.batching and self._decoder.is_single(data):
            self._one_line(data[:-1])
            return
        self._feed(data)

    def answer_backlog(self) -> bool:
        """The peer read enough: answer the rest of the last read before reading more."""
        backlog = self._backlog
        if backlog is None:
            return True
        self._backlog = None
        if self.phase < _CLOSING:
            self._feed(backlog)
        # Over the high-water mark again: reading stays paused.
        return not (self.write_paused or self._backlog is not None)

    def _feed(self, data: bytes) -> None:
        if self.bytes_read == len(data) and data[:2] == b"\x16\x03" and self.registry is not None:
            # A TLS record as the very first bytes: a TLS client on a plain port. Checked here,
            # off the one-line hot path (a ClientHello is never one line), for one log line
            # instead of a binary "line" reaching the service.
            self.registry.tls_on_plain_port(self)
            return
        decoder = self._decoder
        if len(data) > _SLICE:
            self._feed_slices(data)
            return
        # A feed that starts inside an over-long line ends it at the first newline without an
        # event: _keep_rest must count that newline too.
        skip = 1 if decoder.discarding else 0
        events = decoder.feed(data)
        if events:
            self._deliver(events, data, skip)

    def _feed_slices(self, data: bytes) -> None:
        """A big read, decoded a slice at a time: a 256 KiB read of empty lines would be a
        quarter of a million events alive at once (16 MiB); a slice holds at most 16 K."""
        decoder = self._decoder
        n = len(data)
        pos = 0
        while pos < n and self.phase < _CLOSING:
            piece = data[pos : pos + _SLICE]
            pos += _SLICE
            skip = 1 if decoder.discarding else 0
            events = decoder.feed(piece)
            if events:
                self._deliver(events, piece, skip)
            if self._backlog is not None:  # answering stopped inside this slice
                self._backlog += data[pos:]
                return

    def _one_line(self, raw: bytes) -> None:
        """The hot path for a read holding exactly one LF line: no event objects at all."""
        co = _co
        co.batching = True
        co.owner = self
        service: LineService = self.service  # type: ignore[assignment]
        try:
            self._newline = b"\n"
            text = raw.decode("utf-8", "replace")
            if len(text) == 4 and service.quit_command and text.lower() == "quit":
                service.on_quit(self)
            else:
                service.on_line(self, text)
        except Exception as exc:
            self.report_error(exc)
            self.abort()
        finally:
            co.end(self)

    def _deliver(self, events: list[Any], data: bytes, skip: int) -> None:
        co = _co
        if co.batching:
            self.run_callback(self._dispatch, events, data, skip)
            return
        # run_callback, inlined: this is the hot path of every line service.
        co.batching = True
        co.owner = self
        try:
            self._dispatch(self, events, data, skip)
        except Exception as exc:
            self.report_error(exc)
            self.abort()
        finally:
            co.end(self)

    def _dispatch(self, _conn: Connection, events: list[Any], data: bytes, skip: int) -> None:
        service: LineService = self.service  # type: ignore[assignment]
        for done, event in enumerate(events, 1):
            if type(event) is Line:
                raw, crlf = event
                self._newline = b"\r\n" if crlf else b"\n"
                text = raw.decode("utf-8", "replace")
                if len(text) == 4 and service.quit_command and text.lower() == "quit":
                    service.on_quit(self)
                else:
                    service.on_line(self, text)
            elif type(event) is LineTooLong:
                if self.registry is not None:
                    self.registry.note("line too long")
                service.on_line_too_long(self, event.limit)
            if self.phase >= _CLOSING:
                return
            if self.write_paused and self.registry is not None and done < len(events):
                self._keep_rest(data, done + skip)
                return

    def _check_line_deadline(self, now: float, timeout: float) -> None:
        decoder = self._decoder
        buffered = decoder.buffered
        if buffered:
            start = self.bytes_read - buffered
        elif decoder.discarding:
            start = -1
        else:
            self._line_start = None
            return
        if start != self._line_start:
            self._line_start = start
            self._line_since = now
        elif now - self._line_since >= timeout:
            if self.close_reason is None:
                self.close_reason = CloseReason.LINE_TIMEOUT
            if self.registry is not None:
                self.registry.note(CloseReason.LINE_TIMEOUT)
            service = cast(LineService, self.service)
            self.run_callback(service.on_line_timeout, timeout)

    def _keep_rest(self, data: bytes, newlines: int) -> None:
        """Keep what follows the ``newlines``-th newline of ``data`` unanswered (the events
        after the ones handled); the decoder starts again at that line boundary later."""
        pos = -1
        for _ in range(newlines):
            pos = data.index(b"\n", pos + 1)
        self._decoder.reset()
        self._backlog = data[pos + 1 :]

    def _at_eof(self, _conn: Connection) -> None:
        events = self._decoder.feed_eof()
        service = cast(LineService, self.service)
        for event in events:
            if self.phase >= _CLOSING or not isinstance(event, PartialLine):
                break
            deliver_line(service, self, event.data.decode("utf-8", "replace"))
        super()._at_eof(_conn)


class AsciiLineConnection(LineConnection):
    """A line connection for a service with ``ascii_lines``: a read that is exactly one
    ASCII line goes to :meth:`LineService.on_ascii_line` as the received bytes, ending
    included, with no decoding and no encoding (UTF-8 and ASCII agree on every such line).
    Anything else takes the :class:`LineConnection` path."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.phase >= _CLOSING:
            return
        if self._backlog is not None:
            self._backlog += data
            return
        if not _co.batching and data.isascii() and self._decoder.is_single(data):
            self._one_ascii_line(data)
            return
        self._feed(data)

    def _one_ascii_line(self, data: bytes) -> None:
        """:meth:`LineConnection._one_line`'s twin for bytes, written out on purpose like the
        other hot-path callbacks here: a shared helper would cost a call per message."""
        co = _co
        co.batching = True
        co.owner = self
        service: LineService = self.service  # type: ignore[assignment]
        try:
            self._newline = b"\n"
            if len(data) == 5 and service.quit_command and data.lower() == b"quit\n":
                service.on_quit(self)
            else:
                service.on_ascii_line(self, data)
        except Exception as exc:
            self.report_error(exc)
            self.abort()
        finally:
            co.end(self)


class TelnetLineConnection(LineConnection):
    """A line connection that also speaks just enough telnet for a real ``telnet`` client:
    IAC sequences are consumed (never reach the service), options are refused, and
    ``\\r\\0`` ends a line. Used when the service sets ``telnet = True``."""

    __slots__ = ("_telnet",)

    def __init__(
        self, service: Service, options: ConnectionOptions, registry: Registry | None = None
    ) -> None:
        super().__init__(service, options, registry)
        self._telnet = TelnetFilter()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.phase >= _CLOSING:
            return
        data, reply = self._telnet.feed(data)
        if reply:
            self.write(reply)
        if data:
            if self._backlog is not None:
                self._backlog += data
            else:
                self._feed(data)


class ChunkConnection(Connection):
    """A line-service connection that treats each received chunk as one message.

    For clients that send without newlines (``client.write('I am Chuck Norris!')``). TCP
    keeps no message boundaries: two quick writes may arrive as one chunk, or one as two.
    A trailing CRLF or LF is removed; the reply uses it, else LF.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.phase >= _CLOSING:
            return
        self.run_callback(self._dispatch, data)

    def _dispatch(self, _conn: Connection, data: bytes) -> None:
        service = cast(LineService, self.service)
        limit = self.options.max_line
        if data.endswith(b"\n"):
            self._newline = b"\r\n" if data.endswith(b"\r\n") else b"\n"
            data = data.rstrip(b"\r\n")
        if limit is not None and len(data) > limit:
            if self.registry is not None:
                self.registry.note("line too long")
            service.on_line_too_long(self, limit)
            return
        deliver_line(service, self, data.decode("utf-8", "replace"))


def _ascii_fast_path(service: Service) -> bool:
    """``ascii_lines``, unless ``on_line`` is overridden below the ``on_ascii_line`` that
    would bypass it (a subclass of ``UpperService`` that changes ``on_line`` must get it)."""
    if not getattr(service, "ascii_lines", False):
        return False
    # An on_line set on the instance itself. Not ``vars(service)``: that would build the
    # instance's __dict__, after which CPython no longer specializes the service's own
    # attribute reads and writes in its callbacks (about 1,000 instructions per line for
    # a counter in upper's on_ascii_line, measured with bench/hotpath_ir.sh).
    bound = getattr(service, "on_line", None)
    if getattr(bound, "__func__", None) is not getattr(type(service), "on_line", None):
        return False
    mro = type(service).__mro__
    line_owner = next(k for k in mro if "on_line" in vars(k))
    ascii_owner = next(k for k in mro if "on_ascii_line" in vars(k))
    return issubclass(ascii_owner, line_owner)


def connection_class(service: Service) -> type[Connection]:
    """The connection class matching ``service.framing``."""
    framing = service.framing
    if framing == "line":
        if getattr(service, "telnet", False):
            return TelnetLineConnection
        return AsciiLineConnection if _ascii_fast_path(service) else LineConnection
    if framing == "chunk":
        return ChunkConnection
    if framing == "raw":
        return RawConnection
    raise ValueError(f"unknown framing {framing!r} (raw, line or chunk)")


def tapped(cls: type[Connection]) -> type[Connection]:
    """``cls`` with ``options.tap`` called on every chunk read and written and at the end
    (``serve -x``). A subclass, chosen by the server only when a tap is set: connections
    without one run the untouched methods and pay nothing, not even a test."""

    class Tapped(cls):  # type: ignore[valid-type, misc]  # a class chosen at run time
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            self.options.tap(self, "in", data)
            super().data_received(data)

        def write(self, data: bytes) -> Awaitable[None]:
            if self.phase < Phase.ENDED:  # what write() drops is not shown
                self.options.tap(self, "out", data)
            return super().write(data)  # type: ignore[no-any-return]

        def connection_lost(self, exc: Exception | None) -> None:
            self.options.tap(self, "close", b"")  # before the close is logged
            super().connection_lost(exc)

    Tapped.__name__ = Tapped.__qualname__ = f"Tapped{cls.__name__}"
    return Tapped

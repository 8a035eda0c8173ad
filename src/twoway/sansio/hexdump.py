"""``twoway connect -x`` and ``twoway serve -x``: a bounded hex dump of what goes each way,
like ``ncat -x`` and ``socat -x`` (the client shows it on standard error, the server in its
log, each line led by the peer's address).

Each line is ``hexdump -C``'s, led by the direction (``>`` sent, ``<`` received, from this
side) and with an
offset per direction since the connection started::

    > 00000000  68 65 6c 6c 6f 0a                                 |hello.|
    < 00000000  59 6f 75 20 73 61 69 64  20 22 48 45 4c 4c 4f 22  |You said "HELLO"|

At most ``limit`` bytes of each direction are shown per connection, so a large transfer
cannot flood the terminal; the close reports how many were left out. Pure: the caller hands
in where lines go.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DEFAULT_LIMIT", "HexDump", "hexdump_lines"]

#: Bytes shown per direction and connection: 1,024 lines each way, a screenful or twenty.
DEFAULT_LIMIT = 16 * 1024

_PRINTABLE = bytes(range(0x20, 0x7F))
_DOTS = bytes(b if b in _PRINTABLE else 0x2E for b in range(256))


def hexdump_lines(data: bytes, offset: int = 0, lead: str = "") -> list[str]:
    """``data`` as ``hexdump -C`` lines (16 bytes each), numbered from ``offset``. A partial
    line is padded so the text column stays aligned."""
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        left = " ".join(f"{b:02x}" for b in row[:8])
        right = " ".join(f"{b:02x}" for b in row[8:])
        hexes = f"{left:<23}  {right:<23}"
        text = row.translate(_DOTS).decode("ascii")
        lines.append(f"{lead}{offset + start:08x}  {hexes}  |{text}|")
    return lines


class _Direction:
    __slots__ = ("lead", "offset", "shown", "skipped")

    def __init__(self, lead: str) -> None:
        self.lead = lead
        self.offset = 0
        self.shown = 0
        self.skipped = 0


class HexDump:
    """The dump of one link: call :meth:`sent` and :meth:`received` with the bytes, and
    :meth:`reset` when a new connection starts (offsets and budgets start over).
    ``limit=None`` shows everything."""

    def __init__(self, emit: Callable[[str], None], limit: int | None = DEFAULT_LIMIT) -> None:
        self.emit = emit
        self.limit = limit
        self._out = _Direction("> ")
        self._in = _Direction("< ")

    def reset(self) -> None:
        """A new connection: offsets and budgets start over."""
        self._out = _Direction("> ")
        self._in = _Direction("< ")

    def sent(self, data: bytes) -> None:
        """Bytes written to the connection."""
        self._show(self._out, data)

    def received(self, data: bytes) -> None:
        """Bytes read from the connection."""
        self._show(self._in, data)

    def finish(self) -> None:
        """The connection ended: one line per direction that was cut short."""
        for way, what in ((self._out, "sent"), (self._in, "received")):
            if way.skipped:
                self.emit(
                    f"{way.lead}hexdump: {way.skipped} more byte(s) {what} not shown "
                    f"(limit {self.limit} per direction; --hexdump-max 0 shows all)"
                )
                way.skipped = 0

    def _show(self, way: _Direction, data: bytes) -> None:
        room = len(data) if self.limit is None else max(0, self.limit - way.shown)
        part = data[:room]
        # Lines restart at each chunk: a dump shows the chunks as they went, like socat's.
        for line in hexdump_lines(part, way.offset, way.lead):
            self.emit(line)
        way.shown += len(part)
        way.skipped += len(data) - len(part)
        way.offset += len(data)

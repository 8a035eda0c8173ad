"""Pure protocol logic: no sockets, no event loop, no clock (time is passed in)."""

from __future__ import annotations

from twoway.sansio.framing import Line, LineDecoder, LineTooLong, PartialLine

__all__ = ["Line", "LineDecoder", "LineTooLong", "PartialLine"]

"""A connection's life as one ordered phase, and the reasons this side closes one.

The phases only move forward; :data:`TRANSITIONS` says which moves exist (a refused
connection goes from ``NEW`` straight to ``CLOSED``: its service never hears of it). The
peer's half-close is not a phase of ours: it is the separate ``at_eof`` fact, since either
side may half-close first.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["TRANSITIONS", "CloseReason", "Phase"]


class Phase(IntEnum):
    """Where a connection is in its life. Ordered: ``phase >= Phase.CLOSING`` means "no
    more writes, no more service callbacks but ``on_close``"."""

    NEW = 0  #: made, not admitted yet (``on_connect`` has not run)
    OPEN = 1  #: admitted; ``on_connect`` ran, so ``on_close`` will
    ENDED = 2  #: this side sent FIN (:meth:`~twoway.net.connection.Connection.end`); reads on
    CLOSING = 3  #: closed or aborted by this side, or found gone; the transport is going
    CLOSED = 4  #: the transport is gone (``connection_lost`` ran)


#: Every move a connection's phase can make.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.NEW: frozenset({Phase.OPEN, Phase.CLOSING, Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.ENDED, Phase.CLOSING, Phase.CLOSED}),
    Phase.ENDED: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class CloseReason(StrEnum):
    """Why the network layer (or the server) closed a connection: the ``close_reason`` it
    sets, which the connection log line and the counters by reason use. Services give
    their own reasons as plain strings (``"quota exceeded"``...); these are the ones every
    service shares."""

    QUIT = "quit"
    IDLE = "idle"
    LINE_TIMEOUT = "line timeout"
    TOO_SLOW = "too slow"
    TLS_ON_PLAIN_PORT = "TLS on a plain port"
    SHUTDOWN = "shutdown"
    FORCED_SHUTDOWN = "forced shutdown"

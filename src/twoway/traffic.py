"""``twoway serve -x``: a hex dump of each connection's traffic in the log, both ways, like
``ncat -x`` and ``socat -x``, each line led by the peer's address::

    127.0.0.1:51234 < 00000000  68 65 6c 6c 6f 0a                                 |hello.|
    127.0.0.1:51234 > 00000000  59 6f 75 20 73 61 69 64  20 22 48 45 4c 4c 4f 22  |You said "HELLO"|

``<`` is what the server received, ``>`` what it sent. At most ``limit`` bytes of each
direction are shown per connection (``--hexdump-max``), so a large transfer cannot flood the
log; the close says how many were left out. The lines are :mod:`twoway.sansio.hexdump`'s,
as ``connect -x`` prints them; the bytes come from the connection's tap
(:attr:`~twoway.net.options.ConnectionOptions.tap`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from twoway.sansio.hexdump import HexDump

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["HEXDUMP_LOGGER", "hexdump_tap"]

#: The logger of the dump's lines.
HEXDUMP_LOGGER = "twoway.hexdump"

log = logging.getLogger(HEXDUMP_LOGGER)


def hexdump_tap(limit: int | None) -> Callable[[Conn, str, bytes], None]:
    """A tap for :class:`~twoway.net.options.ConnectionOptions` that logs each connection's
    traffic, at most ``limit`` bytes each way (None: all)."""
    dumps: dict[int, HexDump] = {}  # by id(conn), from its first bytes to its close

    def tap(conn: Conn, way: str, data: bytes) -> None:
        dump = dumps.get(id(conn))
        if dump is None:
            if way == "close":
                return  # nothing went either way
            peer = conn.peer
            fields = {"event": "hexdump", "peer": peer}

            def emit(line: str) -> None:
                log.info("%s %s", peer, line, extra=fields)

            dump = dumps[id(conn)] = HexDump(emit, limit)
        if way == "in":
            dump.received(data)
        elif way == "out":
            dump.sent(data)
        else:
            del dumps[id(conn)]
            dump.finish()

    return tap

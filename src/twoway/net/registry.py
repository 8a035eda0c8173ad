"""The connection registry of a server: admission, per-address counts, statistics.

A :class:`~twoway.net.server.Server` owns one :class:`Registry` and hands it to each of its
connections, which report to it (``admit`` when made, ``note`` when a protection fires,
``forget`` when gone). A connection never sees the server itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from twoway.errors import describe_oserror
from twoway.net.address import limit_key
from twoway.net.conn import Conn

__all__ = ["Registry", "ServerStats"]

log = logging.getLogger("twoway.server")
#: One line per connection (opened, closed): the access log, which ``--no-access-log`` mutes.
access = logging.getLogger("twoway.access")


@dataclass(slots=True)
class ServerStats:
    """Counters kept for logs and metrics (all since start)."""

    accepted: int = 0
    rejected_full: int = 0
    rejected_per_ip: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    slow_disconnects: int = 0
    idle_timeouts: int = 0
    line_timeouts: int = 0
    errors: int = 0


#: What :meth:`Registry.note` counts, by the event a connection reports.
_NOTED = {
    "too slow": "slow_disconnects",
    "idle": "idle_timeouts",
    "line timeout": "line_timeouts",
}


class Registry:
    """The open connections of one server, its limits and its counters.

    Limits: ``max_connections`` and ``max_connections_per_ip`` (``None`` disables); IPv6
    clients count per network of ``ipv6_prefix`` bits (see
    :func:`~twoway.net.address.limit_key`). A connection over a limit reads one
    ``error: ...`` line and is closed; the others never notice.
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        ipv6_prefix: int = 64,
    ) -> None:
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 1 to 128 (got {ipv6_prefix})")
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.ipv6_prefix = ipv6_prefix
        self.stats = ServerStats()
        #: The open connections (admitted and not yet gone).
        self.conns: set[Conn] = set()
        #: False once the server stops accepting: a connection made after that is reset.
        self.accepting = True
        self._keys: dict[Conn, str] = {}
        self._per_key: dict[str, int] = {}
        self._empty: asyncio.Event | None = None
        self._log_info = access.isEnabledFor(logging.INFO)

    def open(self) -> None:
        """Called when the server starts (inside its event loop)."""
        self._empty = asyncio.Event()
        if not self.conns:
            self._empty.set()
        self._log_info = access.isEnabledFor(logging.INFO)

    # ------------------------------------------------------------------ reports

    def admit(self, conn: Conn) -> bool:
        """A new connection: enforce the limits, register it, log it. False if refused
        (the connection is then being closed, and gets neither on_connect nor on_close)."""
        self.stats.accepted += 1
        if not self.accepting:
            conn.abort()
            return False
        limit = self.max_connections
        if limit is not None and len(self.conns) >= limit:
            self.stats.rejected_full += 1
            noun = "connection" if limit == 1 else "connections"
            self._refuse(conn, f"error: server full (max {limit} {noun})")
            return False
        per_ip = self.max_connections_per_ip
        if per_ip is not None:
            # Only counted when limited: the key costs memory per connection.
            addr = conn.remote_address
            key = limit_key(str(addr[0]), self.ipv6_prefix) if addr else "?"
            count = self._per_key.get(key, 0)
            if count >= per_ip:
                self.stats.rejected_per_ip += 1
                self._refuse(conn, f"error: too many connections from {key} (max {per_ip})")
                return False
            self._per_key[key] = count + 1
            self._keys[conn] = key
        self.conns.add(conn)
        if self._empty is not None:
            self._empty.clear()
        if self._log_info:
            access.info("connection from %s", conn.peer, extra={"event": "open", "peer": conn.peer})
        return True

    def note(self, event: str) -> None:
        """A protection fired on a connection: ``"too slow"``, ``"idle"``, ``"line
        timeout"``."""
        field = _NOTED[event]
        setattr(self.stats, field, getattr(self.stats, field) + 1)

    def forget(self, conn: Conn, exc: BaseException | None) -> None:
        """A connection is gone: count it, log it, release its per-address slot."""
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        key = self._keys.pop(conn, None)
        if key is not None:
            left = self._per_key.get(key, 1) - 1
            if left > 0:
                self._per_key[key] = left
            else:
                self._per_key.pop(key, None)
        stats = self.stats
        stats.closed += 1
        stats.bytes_in += conn.bytes_read
        stats.bytes_out += conn.bytes_written
        if exc is not None:
            stats.errors += 1
        if self._log_info:
            error = describe_oserror(exc) if exc is not None else None
            why = f", {conn.close_reason}" if conn.close_reason else ""
            err = f", error: {error}" if error is not None else ""
            duration = conn.duration
            access.info(
                "closed %s (in %s, out %s, %.1f s%s%s)",
                conn.peer,
                format_size(conn.bytes_read),
                format_size(conn.bytes_written),
                duration,
                why,
                err,
                extra={
                    "event": "close",
                    "peer": conn.peer,
                    "bytes_in": conn.bytes_read,
                    "bytes_out": conn.bytes_written,
                    "duration_s": round(duration, 3),
                    "reason": conn.close_reason,
                    "error": error,
                },
            )
        if not self.conns and self._empty is not None:
            self._empty.set()

    # ------------------------------------------------------------------ waiting

    async def wait_empty(self) -> None:
        """Wait until no connection is open."""
        if self._empty is not None:
            await self._empty.wait()

    def _refuse(self, conn: Conn, message: str) -> None:
        reason = message.removeprefix("error: ")
        log.warning(
            "%s: rejected: %s",
            conn.peer,
            reason,
            extra={"event": "reject", "peer": conn.peer, "reason": reason},
        )
        conn.write(message.encode() + b"\n")
        conn.close(timeout=1.0)


def format_size(n: int) -> str:
    """A byte count for a log line: ``512 B``, ``47.7 KiB``, ``12.3 MiB``."""
    if n < 10 * 1024:
        return f"{n} B"
    if n < 10 * 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1048576:.1f} MiB"

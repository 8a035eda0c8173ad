"""The connection registry of a server: admission, per-address counts, statistics.

A :class:`~twoway.net.server.Server` owns one :class:`Registry` and hands it to each of its
connections, which report to it (``admit`` when made, ``note`` when a protection fires,
``forget`` when gone). A connection never sees the server itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from twoway.errors import describe_oserror
from twoway.net.address import format_address, limit_key
from twoway.net.conn import Conn
from twoway.sansio.access import AccessPolicy, LogLimiter, normalize_ip

__all__ = ["DURATION_BUCKETS", "TRANSPORTS", "Registry", "ServerStats", "transport_of"]

log = logging.getLogger("twoway.server")
#: One line per connection (opened, closed): the access log, which ``--no-access-log`` mutes.
access_log = logging.getLogger("twoway.access")


#: The upper bounds (seconds) of :attr:`ServerStats.durations`: from a probe that connects and
#: leaves to a chat member who stays all day.
DURATION_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)
#: Close reasons kept apart in :attr:`ServerStats.closed_by_reason`; later new ones are
#: counted as ``other`` (a guard: today's reasons are a dozen of the code's own phrases).
MAX_CLOSE_REASONS = 32
#: What a connection came over, for the metrics' ``transport`` label (a fixed set).
TRANSPORTS = ("tcp", "tls", "ws", "wss", "unix")


def transport_of(conn: Conn) -> str:
    """One of :data:`TRANSPORTS` for ``conn``: a WebSocket connection says which
    (``transport_kind``); otherwise TLS if its transport has an SSL context, ``unix`` if its
    local address is a path, else ``tcp``. Asked once at connect and never per message."""
    kind: str | None = getattr(conn, "transport_kind", None)
    if kind is not None:
        return kind
    transport = conn.transport
    if transport is None:
        return "tcp"
    if transport.get_extra_info("sslcontext") is not None:
        return "tls"
    if isinstance(transport.get_extra_info("sockname"), (str, bytes)):
        return "unix"
    return "tcp"


@dataclass(slots=True)
class ServerStats:
    """Counters kept for logs and metrics (all since start)."""

    accepted: int = 0
    rejected_full: int = 0
    rejected_per_ip: int = 0
    rejected_access: int = 0
    tls_failures: int = 0
    proxy_failures: int = 0
    closed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    slow_disconnects: int = 0
    idle_timeouts: int = 0
    line_timeouts: int = 0
    errors: int = 0
    # For metrics (issue 15), all updated off the per-message path: on accept, on close, when
    # a protection fires or a write queue passes its high-water mark.
    line_too_long: int = 0
    #: The most connections open at once.
    peak_connections: int = 0
    #: Times a peer's write queue passed its high-water mark (its reading then paused).
    write_paused: int = 0
    #: The largest write queue seen when it passed the high-water mark, in bytes.
    write_queue_high_water: int = 0
    #: Closed connections by close reason (``""``: closed normally): a bounded set, since the
    #: reasons are the code's own phrases (``idle``, ``too slow``, ``disk error``...).
    closed_by_reason: dict[str, int] = field(default_factory=dict)
    #: Closed connections by duration: ``durations[i]`` counts those that lasted at most
    #: ``DURATION_BUCKETS[i]`` seconds and more than the bucket before; the last, longer ones.
    durations: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    #: Connections accepted (refused ones included), by :data:`TRANSPORTS`.
    accepted_by_transport: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(TRANSPORTS, 0)
    )


#: What :meth:`Registry.note` counts, by the event a connection reports.
_NOTED = {
    "too slow": "slow_disconnects",
    "idle": "idle_timeouts",
    "line timeout": "line_timeouts",
    "line too long": "line_too_long",
}


class Registry:
    """The open connections of one server, its limits and its counters.

    Limits: ``max_connections`` and ``max_connections_per_ip`` (``None`` disables); IPv6
    clients count per network of ``ipv6_prefix`` bits (see
    :func:`~twoway.net.address.limit_key`). A connection over a limit reads one
    ``error: ...`` line and is closed; the others never notice.

    Access: :attr:`access` (an :class:`AccessPolicy`, swapped whole on reload) is checked
    first, before any limit: a refused client reads ``error: access denied``, is closed, is
    logged at most once per address per :attr:`log_interval` seconds and takes no slot.
    :attr:`pending` counts sockets accepted but not yet connections (a PROXY header or a TLS
    handshake in progress, kept by :mod:`twoway.net.accept`): each holds a slot of
    ``max_connections`` until it becomes a connection, fails or times out.
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        ipv6_prefix: int = 64,
        access: AccessPolicy | None = None,
        log_interval: float = 60.0,
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
        # Open connections by transport; the transport of each open one that is not plain
        # TCP (most are: they cost no entry), to count it down when it goes.
        self._open_by = dict.fromkeys(TRANSPORTS, 0)
        self._kinds: dict[Conn, str] = {}
        self._empty: asyncio.Event | None = None
        self._log_info = access_log.isEnabledFor(logging.INFO)
        #: Who may connect; ``None`` (or a policy with no rule) admits everyone.
        self.access = access
        #: Sockets accepted and not yet connections, each holding a slot (see :meth:`has_room`).
        self.pending = 0
        self.log_interval = log_interval
        # Refusals and failed handshakes log at most once per (address, reason) per interval.
        self._limiter = LogLimiter(log_interval)

    def open(self) -> None:
        """Called when the server starts (inside its event loop)."""
        self._empty = asyncio.Event()
        if not self.conns:
            self._empty.set()
        self._log_info = access_log.isEnabledFor(logging.INFO)

    # ------------------------------------------------------------------ reports

    def admit(self, conn: Conn) -> bool:
        """A new connection: enforce the limits, register it, log it. False if refused
        (the connection is then being closed, and gets neither on_connect nor on_close)."""
        self.stats.accepted += 1
        kind = transport_of(conn)
        self.stats.accepted_by_transport[kind] += 1
        if not self.accepting:
            conn.abort()
            return False
        access = self.access
        if access is not None and access.active:
            addr = conn.remote_address
            why = access.refusal(addr[0] if isinstance(addr, tuple) else None)
            if why is not None:
                self.stats.rejected_access += 1
                self._log_refusal(addr, why)
                conn.write(b"error: access denied\n")
                conn.close(timeout=1.0)
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
        self._open_by[kind] += 1
        if kind != "tcp":
            self._kinds[conn] = kind
        if len(self.conns) > self.stats.peak_connections:
            self.stats.peak_connections = len(self.conns)
        if self._empty is not None:
            self._empty.clear()
        if self._log_info:
            access_log.info(
                "connection from %s", conn.peer, extra={"event": "open", "peer": conn.peer}
            )
        return True

    def has_room(self, addr: Any) -> bool:
        """May a socket just accepted from ``addr`` go on to its PROXY header or TLS
        handshake? False once the server stops accepting, or when ``max_connections`` are
        taken counting the :attr:`pending` ones (counted and logged, rate-limited). On True
        the caller adds one to :attr:`pending` and takes it off when the socket becomes a
        connection or is dropped. The caller closes a refused socket: before a handshake
        there is no session to write a reason through."""
        if not self.accepting:
            return False
        limit = self.max_connections
        if limit is not None and len(self.conns) + self.pending >= limit:
            self.stats.rejected_full += 1
            self._log_limited(
                addr, "full", "rejected: server full (max %d connections, %d being set up)",
                limit, self.pending,
            )  # fmt: skip
            return False
        return True

    def permits(self, addr: Any) -> bool:
        """The access rules for ``addr`` ahead of a TLS handshake (so a refused client costs
        no handshake): False is counted and logged (once per address per interval)."""
        access = self.access
        if access is not None and access.active:
            why = access.refusal(addr[0] if isinstance(addr, tuple) else None)
            if why is not None:
                self.stats.rejected_access += 1
                self._log_refusal(addr, why)
                return False
        return True

    def handshake_failed(self, addr: Any, reason: str) -> None:
        """A TLS handshake from ``addr`` failed for ``reason`` (one phrase, see
        :func:`~twoway.net.tlspeer.describe_handshake_error`): counted, logged rate-limited."""
        self.stats.tls_failures += 1
        self._log_limited(addr, reason, "TLS handshake failed: %s", reason)

    def proxy_failed(self, addr: Any, kind: str, reason: str) -> None:
        """No usable PROXY header from ``addr``: ``kind`` (``"malformed"``, ``"timeout"``,
        ``"untrusted"``...) keys the rate limit, ``reason`` is the one line logged (it starts
        with ``PROXY protocol:``, as :class:`~twoway.errors.ProxyProtocolError` does)."""
        self.stats.proxy_failures += 1
        self._log_limited(addr, "proxy " + kind, "%s", reason)

    def tls_on_plain_port(self, conn: Conn) -> None:
        """A connection's first bytes are a TLS handshake on a plain port: log it
        (rate-limited per address) and close the connection; its service sees no line."""
        self._log_limited(
            conn.remote_address, "tls-on-plain", "a TLS handshake on a plain port "
            "(the server has no --tls-cert; connect without TLS): closed",
        )  # fmt: skip
        conn.close(reason="TLS on a plain port")

    def _log_refusal(self, addr: Any, why: str) -> None:
        self._log_limited(addr, "access", "refused: access denied (%s)", why)

    def _log_limited(self, addr: Any, kind: str, fmt: str, *args: Any) -> None:
        host = normalize_ip(str(addr[0])) if isinstance(addr, tuple) and addr else "?"
        silenced = self._limiter.check((host, kind), time.monotonic())
        if silenced is None:
            return
        more = f" ({silenced} more since the last line)" if silenced else ""
        log.warning("%s: " + fmt + "%s", format_address(addr), *args, more)

    def note(self, event: str) -> None:
        """A protection fired on a connection: ``"too slow"``, ``"idle"``, ``"line
        timeout"``, ``"line too long"``."""
        name = _NOTED[event]
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    def paused(self, queued: int) -> None:
        """A connection's write queue passed its high-water mark, holding ``queued`` bytes."""
        stats = self.stats
        stats.write_paused += 1
        if queued > stats.write_queue_high_water:
            stats.write_queue_high_water = queued

    def open_by_transport(self) -> dict[str, int]:
        """The open connections by transport (see :data:`TRANSPORTS`), every one listed."""
        return dict(self._open_by)

    def admitted(self, conn: Conn) -> bool:
        """Whether ``conn`` was admitted and is not forgotten yet."""
        return conn in self.conns

    def forget(self, conn: Conn, exc: BaseException | None) -> None:
        """A connection is gone: count it, log it, release its per-address slot."""
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        self._open_by[self._kinds.pop(conn, "tcp")] -= 1
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
        duration = conn.duration
        stats.durations[bisect_left(DURATION_BUCKETS, duration)] += 1
        stats.duration_sum += duration
        reasons = stats.closed_by_reason
        reason = conn.close_reason or ""
        if reason not in reasons and len(reasons) >= MAX_CLOSE_REASONS:
            reason = "other"
        reasons[reason] = reasons.get(reason, 0) + 1
        if self._log_info:
            error = describe_oserror(exc) if exc is not None else None
            why = f", {conn.close_reason}" if conn.close_reason else ""
            err = f", error: {error}" if error is not None else ""
            access_log.info(
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

"""What the WebSocket connections of one gateway share: :class:`WsConfig`, the service, its
limits, the registry, the origin policy, the ping period and the page's files, and the one
rate-limited log line of a refused handshake.

The gateway (:class:`~twoway.net.ws.WsGateway`) makes one and hands it to every
:class:`~twoway.net.wsconn.WsConnection` it accepts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twoway.net.address import format_address
from twoway.net.options import ConnectionOptions
from twoway.net.registry import Registry
from twoway.net.service import LineService
from twoway.sansio.access import LogLimiter, normalize_ip
from twoway.sansio.origin import OriginPolicy

__all__ = ["Pages", "WsConfig"]

log = logging.getLogger("twoway.ws")

#: A page the gateway serves over plain HTTP GET: path -> (content type, body).
Pages = Mapping[str, tuple[str, bytes]]


@dataclass(slots=True)
class WsConfig:
    """What every WebSocket connection of one gateway shares (a gateway makes one)."""

    service: LineService
    options: ConnectionOptions
    registry: Registry
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    #: Send a ping this often (seconds); ``None``: never (the idle timeout still applies).
    ping_interval: float | None = 20.0
    #: Close a socket whose HTTP request is unfinished after this many seconds.
    handshake_timeout: float = 10.0
    #: The files served on GET (the web page); other paths are 404.
    pages: Pages = field(default_factory=dict)
    #: Whether the listener is TLS (wss://): the ``Host`` check of same-origin pages.
    secure: bool = False
    #: Refused handshakes log at most once per (address, reason) per minute.
    limiter: LogLimiter = field(default_factory=LogLimiter)

    def log_refusal(self, addr: Any, reason: str) -> None:
        """One line for a refused handshake, rate-limited per address and reason."""
        host = normalize_ip(str(addr[0])) if isinstance(addr, tuple) and addr else "?"
        silenced = self.limiter.check((host, reason), time.monotonic())
        if silenced is None:
            return
        more = f" ({silenced} more since the last line)" if silenced else ""
        log.warning("%s: WebSocket handshake refused: %s%s", format_address(addr), reason, more)

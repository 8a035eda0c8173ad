"""The network layer: the only code that touches transports, sockets and timers."""

from __future__ import annotations

from twoway.net.connection import Connection
from twoway.net.handlers import Framing, LineService, Service
from twoway.net.options import ConnectionOptions, Keepalive
from twoway.net.server import Server, ServerStats, serve

__all__ = [
    "Connection",
    "ConnectionOptions",
    "Framing",
    "Keepalive",
    "LineService",
    "Server",
    "ServerStats",
    "Service",
    "serve",
]

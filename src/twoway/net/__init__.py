"""The network layer: the only code that touches transports, sockets and timers."""

from __future__ import annotations

from twoway.net.connection import Connection
from twoway.net.options import ConnectionOptions, Keepalive
from twoway.net.registry import Registry, ServerStats
from twoway.net.server import Server, serve
from twoway.net.service import Framing, LineService, Service

__all__ = [
    "Connection",
    "ConnectionOptions",
    "Framing",
    "Keepalive",
    "LineService",
    "Registry",
    "Server",
    "ServerStats",
    "Service",
    "serve",
]

"""twoway: persistent, bi-directional TCP services, as a library and a command-line tool.

Write a service as a callback class (the fast path, run inside the protocol callbacks)::

    import twoway

    class Shout(twoway.LineService):
        def on_line(self, conn: twoway.Connection, line: str) -> None:
            conn.send_line(f'You said "{line.upper()}"')

    twoway.run(Shout(), port=4001)

or as an ``async def handler(conn)`` with ``async for line in conn`` (see :func:`serve`);
:func:`run` takes either. Inside an asyncio program of your own, ``await run_server(server)``
serves until SIGINT/SIGTERM and shuts down gracefully.
The client side is :func:`connect`: ``conn = await twoway.connect(host, port)``, or
``async for conn in twoway.connect(host, port, reconnect=True)``.
This module imports no optional dependency.
"""

from __future__ import annotations

from twoway._version import __version__
from twoway.errors import (
    ConfigError,
    ConnectError,
    ConnectionClosed,
    FatalConnectError,
    ListenError,
    RetryableConnectError,
    ServiceError,
    TwowayError,
)
from twoway.net.client import connect
from twoway.net.connection import Connection
from twoway.net.groups import Group
from twoway.net.options import ConnectionOptions, Keepalive
from twoway.net.server import Server, serve
from twoway.net.service import LineService, Service
from twoway.runner import run, run_server

__all__ = [
    "ConfigError",
    "ConnectError",
    "Connection",
    "ConnectionClosed",
    "ConnectionOptions",
    "FatalConnectError",
    "Group",
    "Keepalive",
    "LineService",
    "ListenError",
    "RetryableConnectError",
    "Server",
    "Service",
    "ServiceError",
    "TwowayError",
    "__version__",
    "connect",
    "run",
    "run_server",
    "serve",
]

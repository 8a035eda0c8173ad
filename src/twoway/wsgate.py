"""``--ws HOST:PORT``: the WebSocket gateway of a ``twoway serve`` process, from the settings.

Process layer, like :mod:`twoway.frontdoor`: it reads :class:`~twoway.config.Settings`,
checks them (one :class:`~twoway.errors.ConfigError` line naming the option), loads the web
page and builds a :class:`~twoway.net.ws.WsGateway` that shares the TCP server's service,
registry, connection options and TLS context. ``websockets`` is imported only here and
below, so a server without ``--ws`` never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twoway.errors import ConfigError

if TYPE_CHECKING:
    from twoway.config import Settings
    from twoway.frontdoor import FrontDoor
    from twoway.net.server import Server
    from twoway.net.ws import WsGateway

__all__ = ["build_gateway", "parse_ws_address"]


def parse_ws_address(value: str, default_host: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (the server's ``--host``) as (host,
    port); raises :class:`ConfigError`."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--ws {value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080 or :8080)")
    host = host.strip("[]") or default_host
    return host, int(port_text)


def check_ws(settings: Settings) -> None:
    """Refuse what the gateway cannot do yet; raises :class:`ConfigError`."""
    if settings.ws is None:
        if settings.ws_origin:
            raise ConfigError("--ws-origin needs --ws HOST:PORT")
        return
    _host, port = parse_ws_address(settings.ws, settings.host)
    if settings.workers > 1 and port == 0:
        # Each worker binds the gateway's port with SO_REUSEPORT: port 0 would give each
        # its own port, and a page could reach only one worker's.
        raise ConfigError(
            f"--ws {settings.ws!r} with --workers needs a fixed port (the workers share it)"
        )
    from twoway.sansio.origin import OriginPolicy

    try:
        OriginPolicy(settings.ws_origin)
    except ValueError as exc:
        raise ConfigError(f"--ws-origin {exc}") from None


def build_gateway(
    settings: Settings, server: Server, door: FrontDoor, *, reuse_port: bool = False
) -> WsGateway:
    """The gateway for ``server`` (not started): same service, registry, options, TLS.
    ``reuse_port``: a worker of ``--workers``, which shares the port with the others (the
    kernel spreads the connections, as for the TCP port)."""
    from twoway.net.service import LineService
    from twoway.net.ws import WsGateway
    from twoway.net.wsconfig import WsConfig
    from twoway.sansio.origin import OriginPolicy
    from twoway.web import pages

    assert settings.ws is not None
    service = server.service
    if not isinstance(service, LineService):
        raise ConfigError(f"--ws: service {settings.service!r} is not a line service")
    host, port = parse_ws_address(settings.ws, settings.host)
    config = WsConfig(
        service=service,
        options=server.options,
        registry=server.registry,
        origins=OriginPolicy(settings.ws_origin),
        ping_interval=settings.ws_ping,
        handshake_timeout=settings.tls_handshake_timeout,
        pages=pages(),
    )
    return WsGateway(
        config,
        host,
        port,
        ssl_context=door.tls.context if door.tls is not None else None,
        ssl_handshake_timeout=settings.tls_handshake_timeout,
        reuse_port=reuse_port,
        proxy_from=door.proxy_from,
        proxy_timeout=settings.proxy_timeout,
    )

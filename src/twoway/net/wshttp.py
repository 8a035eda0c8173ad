"""The HTTP side of a WebSocket socket: the answer to the request that opens it.

A request to upgrade gets the ``101`` of the websockets library's
:class:`~websockets.server.ServerProtocol` (after the origin check: ``403`` for a refused
origin), or the library's own refusal of a bad handshake; a plain GET gets one of the
page's files (``pages`` of :class:`~twoway.net.wsconfig.WsConfig`) with the security
headers below, or ``404``. Refusals are logged here, rate-limited; sending the answer and
opening the WebSocket are the connection's (:class:`~twoway.net.wsconn.WsConnection`).
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from twoway.net.address import format_address
from twoway.net.wsconfig import Pages, WsConfig

__all__ = ["PAGE_HEADERS", "answer_request", "page_response"]

log = logging.getLogger("twoway.ws")

#: Security headers of every page response: no inline script (defence in depth behind the
#: page's own escaping), nothing framed, no content sniffing.
PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
     "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)  # fmt: skip


def answer_request(
    cfg: WsConfig, proto: ServerProtocol, request: Request, remote_address: Any
) -> Response:
    """The response to ``request``, the socket's HTTP request: status ``101`` means the
    handshake succeeded and the socket is now a WebSocket; any other status ends the socket
    once sent. A refused handshake logs one line (see :meth:`WsConfig.log_refusal`)."""
    headers = request.headers
    if "websocket" not in headers.get("Upgrade", "").lower():
        return page_response(proto, cfg.pages, request, remote_address)
    why = cfg.origins.refusal(headers.get("Origin"), headers.get("Host"), cfg.secure)
    if why is not None:
        cfg.log_refusal(remote_address, why)
        return proto.reject(403, f"Forbidden: {why}\n")
    response = proto.accept(request)
    if response.status_code != 101:
        exc = proto.handshake_exc
        cfg.log_refusal(remote_address, f"bad handshake: {exc}")
    return response


def page_response(
    proto: ServerProtocol, pages: Pages, request: Request, remote_address: Any
) -> Response:
    """The file of ``pages`` at the request's path (the query ignored) with
    :data:`PAGE_HEADERS`, or ``404``; one debug line."""
    path = request.path.split("?", 1)[0]
    page = pages.get(path)
    if page is None:
        response = proto.reject(404, "Not Found\n")
    else:
        kind, body = page
        response = proto.reject(200, "")
        response.body = body
        headers = response.headers
        del headers["Content-Type"]
        del headers["Content-Length"]
        headers["Content-Type"] = kind
        headers["Content-Length"] = str(len(body))
        for name, value in PAGE_HEADERS:
            headers[name] = value
    log.debug("%s: GET %s %d", format_address(remote_address), path, response.status_code)
    return response

"""Which web pages may open a WebSocket to the gateway: the ``Origin`` check.

A browser sends ``Origin: scheme://host[:port]`` with every WebSocket handshake, and a page
of any site can try to open one, carrying its user's network position (an intranet address,
say) with it. :class:`OriginPolicy` decides:

- no ``Origin`` header: not a browser (a command-line client, a bot): admitted. The header
  only protects browser users; any other client can write whatever it likes in it;
- the page the gateway serves itself (the ``Origin``'s host and port are the ``Host``
  header's): always admitted;
- any other origin: admitted only if ``--ws-origin`` lists it (``https://chat.example.org``,
  compared without case, a default port and a trailing slash ignored), or lists ``*``.

Pure logic: the caller passes the two header values.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["OriginPolicy", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case, the scheme's default port dropped; ``None``
    for a value that is not an origin (``null``, a path, garbage)."""
    try:
        parts = urlsplit(origin.strip().rstrip("/"))
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.path or parts.query:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host_port(value: str, secure: bool) -> tuple[str, int] | None:
    """``host[:port]`` of a ``Host`` header as (lower-case host, port)."""
    scheme = "https" if secure else "http"
    try:
        parts = urlsplit(f"{scheme}://{value.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


class OriginPolicy:
    """The ``Origin`` rule of one gateway (see the module docstring). ``allowed`` are the
    ``--ws-origin`` values; raises ``ValueError`` naming one that is not an origin."""

    __slots__ = ("allowed", "any")

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.any = "*" in allowed
        normal: set[str] = set()
        for value in allowed:
            if value == "*":
                continue
            origin = normalize_origin(value)
            if origin is None:
                raise ValueError(
                    f"{value!r} is not an origin (write scheme://host[:port], e.g. "
                    "https://chat.example.org, or *)"
                )
            normal.add(origin)
        self.allowed = frozenset(normal)

    def refusal(self, origin: str | None, host: str | None, secure: bool) -> str | None:
        """Why a handshake with this ``Origin`` (``None``: absent) and ``Host`` header is
        refused, or ``None`` to admit it."""
        if origin is None or self.any:
            return None
        normal = normalize_origin(origin)
        if normal is None:
            return f"origin {origin[:100]!r} is not a valid origin"
        if normal in self.allowed:
            return None
        if host is not None:
            own = _host_port(host, secure)
            parts = urlsplit(normal)
            theirs = (parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme])
            if own is not None and theirs == own:
                return None
        return f"origin {normal} is not allowed (see --ws-origin)"

"""The web chat page the WebSocket gateway serves, as package data.

Plain HTML, CSS and JavaScript files shipped in the package (no build step, no CDN, no
framework).

:func:`pages` maps each URL path to its content type and bytes, read once at start-up.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["FILES", "pages"]

#: URL path -> (file in this package, content type).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/chat.css": ("chat.css", "text/css; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
}


def pages() -> dict[str, tuple[str, bytes]]:
    """``{path: (content type, body)}`` for every file of the page."""
    root = files(__name__)
    return {path: (kind, root.joinpath(name).read_bytes()) for path, (name, kind) in FILES.items()}

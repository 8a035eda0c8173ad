"""Parsing one raw value (a TOML value or a string from the environment or a flag) for an
:class:`~twoway.config.spec.OptionSpec`: :func:`convert`. A bad value raises ``ValueError``
whose message tells the user what to write instead; the loader adds the source and key."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from twoway.config.spec import OptionSpec

__all__ = [
    "KeepaliveSetting",
    "convert",
    "metrics_address",
    "parse_duration",
    "parse_keepalive",
    "parse_size",
    "split_host_port",
]


@dataclass(frozen=True, slots=True)
class KeepaliveSetting:
    """TCP keep-alive as the user wrote it: ``IDLE[,INTERVAL[,COUNT]]`` whole seconds, or ``true``
    for all the defaults. A part left out is ``None``: the library's default applies (the
    services' factory fills it in), so config does not repeat those numbers."""

    idle: int | None = None
    interval: int | None = None
    count: int | None = None

    def __str__(self) -> str:
        parts = (self.idle, self.interval, self.count)
        given = [str(p) for p in parts if p is not None]
        return ",".join(given) if given else "true"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_HINTS = {
    "int": "not a whole number",
    "float": "not a number",
    "size": "not a size (use bytes, e.g. 65536 or 64KiB)",
    "duration": "not a duration (use seconds, e.g. 30 or 1.5 or 500ms)",
    "bool": "not a boolean (true or false)",
    "keepalive": "not a keep-alive spec (IDLE[,INTERVAL[,COUNT]] in whole seconds, or 0)",
    "str": "not a string",
    "path": "not a path",
    "list": "not a string or a list of strings",
}


def parse_size(raw: Any) -> int:
    """Bytes from ``65536``, ``"64KiB"``, ``"1.5m"``; raises ``ValueError``."""
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, int):
        return raw
    m = _SIZE.match(str(raw))
    if not m:
        raise ValueError
    unit = (m.group(2) or "b").lower()[0]
    scale = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return int(float(m.group(1)) * scale)


def parse_duration(raw: Any) -> float:
    """Seconds from ``30``, ``1.5``, ``"500ms"``, ``"2m"``; raises ``ValueError``."""
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = _DURATION.match(str(raw))
        if not m:
            raise ValueError
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[(m.group(2) or "s").lower()]
        value = float(m.group(1)) * scale
    if not math.isfinite(value):
        raise ValueError
    return value


def split_host_port(text: str) -> tuple[str, int | None]:
    """``("::1", 4002)`` from ``[::1]:4002``; ``("::1", None)`` from ``[::1]`` or ``::1``;
    ``("0.0.0.0", 4002)`` from ``0.0.0.0:4002``; a name the same way. Raises ``ValueError``
    with a hint for anything else (``host:``, ``[::1``, a port that is not a number)."""
    hint = "not HOST, HOST:PORT, [IPV6] or [IPV6]:PORT"
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(hint)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(hint)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # a name, an IPv4 address, or a bare IPv6 address (two colons or more)
        host = text
    if not host and port is not None:
        raise ValueError(hint)
    if port is None:
        return host, None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def metrics_address(text: str) -> tuple[str, int]:
    """``--metrics``: ``PORT``, ``:PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; the host is
    127.0.0.1 unless given (metrics are not for the whole network by default). Raises
    ``ValueError`` with a hint."""
    text = text.strip()
    if text.isdigit():
        text = ":" + text
    if text.startswith(":"):
        text = "127.0.0.1" + text
    host, port = split_host_port(text)
    if port is None:
        raise ValueError("give a port: PORT, HOST:PORT or [IPV6]:PORT")
    return host, port


def parse_keepalive(raw: Any) -> KeepaliveSetting | None:
    """``IDLE[,INTERVAL[,COUNT]]`` whole seconds, ``true`` (the defaults), or ``0``/``off``
    (``None``); raises ``ValueError``."""
    return _parse_keepalive(raw)


def _parse_keepalive(raw: Any) -> KeepaliveSetting | None:
    if isinstance(raw, bool):
        return KeepaliveSetting() if raw else None
    text = str(raw).strip().lower()
    if text in _FALSE:
        return None
    parts = [int(p) for p in text.split(",")]
    if not 1 <= len(parts) <= 3 or any(p < 1 for p in parts):
        raise ValueError
    return KeepaliveSetting(*parts)


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError


def _parse_int(raw: Any) -> int:
    if isinstance(raw, (bool, float)):
        raise ValueError
    return int(raw)


def _parse_float(raw: Any) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError
    return value


def _parse_text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError
    return raw


def _parse_list(raw: Any) -> tuple[str, ...]:
    # A flag given several times arrives as a tuple, TOML may hold an array, the environment
    # one string; each item may itself be comma-separated (the consumer splits it).
    items = (raw,) if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError
    return tuple(items)


_PARSERS = {
    "int": _parse_int,
    "float": _parse_float,
    "size": parse_size,
    "duration": parse_duration,
    "bool": _parse_bool,
    "str": _parse_text,
    "path": _parse_text,
    "list": _parse_list,
}


def convert(spec: OptionSpec, raw: Any) -> Any:
    """Parse ``raw`` for ``spec`` and check its range; ``None`` for a disabled limit.

    Raises ``ValueError`` with a hint for the user (``not a size (use bytes, ...)``,
    ``must be at least 1``).
    """
    kind = spec.kind
    if kind == "choice":
        value = str(raw).strip().lower()
        if value not in spec.choices:
            raise ValueError(f"not one of {', '.join(spec.choices)}")
        return value
    try:
        if kind == "keepalive":
            return _parse_keepalive(raw)
        parsed: Any = _PARSERS[kind](raw)
    except (ValueError, TypeError):  # TypeError: a TOML table or array
        # Python's message ("invalid literal for int()...") is replaced by the hint, which
        # tells the user what to write instead.
        raise ValueError(_HINTS[kind]) from None
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        if spec.minimum is not None and parsed < spec.minimum:
            raise ValueError(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and parsed > spec.maximum:
            raise ValueError(f"must be at most {spec.maximum:g}")
    if spec.zero_disables and parsed == 0:
        return None
    return parsed

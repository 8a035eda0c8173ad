"""The ``--send TEXT`` template of the periodic sender.

``TEXT`` may hold ``{random}`` (a random hex string, as the classic Node client sent),
``{seq}`` (1, 2, 3, ...), ``{time}`` (local ``HH:MM:SS``) and ``{name}`` (the connection's
name or number). Format specs work (``{seq:04d}``); ``{{`` and ``}}`` are literal braces.
Pure: the values are passed in.
"""

from __future__ import annotations

import string
from collections.abc import Callable

__all__ = ["PLACEHOLDERS", "check_template", "random_hex", "render"]

PLACEHOLDERS = ("random", "seq", "time", "name")

_SAMPLE = {"random": "0123456789abcdef", "seq": 1, "time": "00:00:00", "name": "1"}


def check_template(text: str) -> None:
    """Raise ``ValueError`` with a one-line reason if ``text`` is not a valid template."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None
    for field in fields:
        if field not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{field}}} in {text!r} (use {known})")
    try:
        text.format(**_SAMPLE)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None


def render(text: str, *, seq: int, time: str, random: str, name: str) -> str:
    """``text`` with its placeholders filled in (``text`` passed :func:`check_template`)."""
    return text.format(seq=seq, time=time, random=random, name=name)


def random_hex(getrandbits: Callable[[int], int], digits: int = 16) -> str:
    """``digits`` random lower-case hex digits, drawn with ``getrandbits`` (of a ``Random``)."""
    return f"{getrandbits(4 * digits):0{digits}x}"

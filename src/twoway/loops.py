"""Event loop choice: ``auto`` (uvloop when importable), ``asyncio`` or ``uvloop``.

A process decision (like signals and logging), so it lives beside :mod:`twoway.runner`: the
library never picks a loop for its caller.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Literal

from twoway.errors import ConfigError

__all__ = ["LOOPS", "LoopName", "loop_factory", "resolve_loop"]

LoopName = Literal["auto", "asyncio", "uvloop"]
LOOPS: tuple[LoopName, ...] = ("auto", "asyncio", "uvloop")


def resolve_loop(name: str) -> Literal["asyncio", "uvloop"]:
    """The concrete loop ``name`` stands for on this machine. Raises :class:`ConfigError` for
    an unknown name or a uvloop that is not installed (the user chose it)."""
    if name == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    if name == "asyncio":
        return "asyncio"
    if name == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            raise ConfigError(
                "loop 'uvloop' is not installed (pip install uvloop) or use --loop asyncio"
            )
        return "uvloop"
    raise ConfigError(f"unknown loop {name!r} (choose from {', '.join(LOOPS)})")


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A callable making a new event loop of the named kind, for ``asyncio.Runner``."""
    if resolve_loop(name) == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop

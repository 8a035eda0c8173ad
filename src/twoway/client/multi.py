"""Several connections at once: ``--connections N`` (numbered) or ``--names A,B,C``.

Each connection is a :class:`~twoway.client.link.Link` with its own name; everything it
prints (received lines, state changes) starts with ``[name]``, so the outputs of many
connections sharing one terminal or file can be told apart and filtered with ``grep``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twoway.client.link import Link

__all__ = ["all_done", "link_names", "prefix"]


def link_names(connections: int | None, names: str | None) -> tuple[str, ...]:
    """The connection names: ``("Dwarves", "Elves")`` from ``--names``, ``("1", "2", "3")``
    from ``--connections 3``, ``()`` for a single connection. Raises ``ValueError``."""
    if names is not None and connections is not None:
        raise ValueError("use either --connections or --names, not both")
    if names is not None:
        parts = tuple(part.strip() for part in names.split(","))
        if not all(parts):
            raise ValueError(f"--names: empty name in {names!r}")
        return parts
    if connections is None or connections == 1:
        return ()
    if connections < 1:
        raise ValueError("--connections must be at least 1")
    return tuple(str(i) for i in range(1, connections + 1))


def prefix(name: str) -> str:
    """What a connection's output lines start with: ``[Elves] ``, or nothing if unnamed."""
    return f"[{name}] " if name else ""


async def all_done(links: Sequence[Link]) -> None:
    """Wait until every link has stopped for good."""
    await asyncio.gather(*(link.done.wait() for link in links))

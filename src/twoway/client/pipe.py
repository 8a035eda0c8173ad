"""Pipe mode (standard input is not a terminal): what comes in on stdin goes to the server.

With one connection and no reconnection, bytes go through unchanged, like ``nc -N``:
every write awaits the connection's drain, and when stdin ends the connection is half-closed
(FIN) and the client keeps reading until the server closes. A regular file on stdin is sent
with :func:`twoway.net.sendfile.sendfile` (zero-copy) where it can be.

With several connections or ``--reconnect``, stdin is cut into lines (terminators kept): each
line goes to every connection, and lines read while a connection is down wait in its
bounded buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twoway.client.lines import split_keepends
from twoway.client.stdin import CHUNK
from twoway.net.sendfile import sendfile

if TYPE_CHECKING:
    from twoway.client.link import Link
    from twoway.client.stdin import Source

__all__ = ["pump_lines", "pump_raw"]


async def pump_raw(source: Source, link: Link) -> None:
    """Copy ``source`` to the link's connection unchanged, then half-close it."""
    await link.attempted.wait()
    conn = link.conn
    if conn is None or conn.is_closing:
        return
    if source.regular_fd is None or not await sendfile(conn, source.regular_fd):
        while not conn.is_closing:
            data = await source.read()
            if not data:
                break
            await conn.write(data)
    link.finish_input()


async def pump_lines(source: Source, links: Sequence[Link]) -> None:
    """Send every line of ``source`` to every link (awaiting each drain), then finish them."""
    for link in links:
        await link.attempted.wait()
    held = b""
    while True:
        data = await source.read()
        if not data:
            break
        lines, held = split_keepends(data, held)
        if len(held) > CHUNK:  # no newline in sight: send it as a piece to bound memory
            lines.append(held)
            held = b""
        for line in lines:
            for link in links:
                await link.send(line)
    if held:
        for link in links:
            await link.send(held)
    for link in links:
        link.finish_input()

"""Pipe mode (standard input is not a terminal): what comes in on stdin goes to the server.

With one connection and no reconnection, bytes go through unchanged, like ``nc -N``:
every write awaits the connection's drain, and when stdin ends the connection is half-closed
(FIN) and the client keeps reading until the server closes. A regular file on stdin is sent
with ``sendfile`` (zero-copy) when the platform has it.

With several connections or ``--reconnect``, stdin is cut into lines (terminators kept): each
line goes to every connection, and lines read while a connection is down wait in its
bounded buffer.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twoway.client.lines import split_keepends
from twoway.client.stdin import CHUNK

if TYPE_CHECKING:
    from twoway.client.link import Link
    from twoway.client.stdin import Source
    from twoway.net.connection import Connection

__all__ = ["pump_lines", "pump_raw", "sendfile"]

# Bytes per sendfile call; the socket is non-blocking, so each call sends what fits anyway.
SENDFILE_CHUNK = 1 << 20
# sendfile cannot work for this pair of descriptors: read and write instead.
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


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


async def sendfile(conn: Connection, fd: int) -> bool:
    """Send the regular file ``fd`` from its offset to its end with ``os.sendfile``.

    Returns ``False`` (having sent nothing) when that cannot be done here, so the caller
    reads and writes instead; returns ``True`` when done or when the connection was lost
    (the connection's callbacks report that). The file offset ends after what was sent.

    Not ``loop.sendfile``: asyncio pauses reading from the socket for the whole transfer, so
    a server that answers as it reads (an echo) fills our receive buffer, stops reading us,
    and the transfer never finishes. Here the transport keeps reading while a duplicate of
    its descriptor is used for sending, which is safe because nothing else writes meanwhile.
    """
    transport = conn.transport
    if transport is None or not hasattr(os, "sendfile"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_extra_info("sslcontext") is not None:
        return False
    if conn.write_buffer_size:  # queued bytes would be overtaken
        return False
    loop = asyncio.get_running_loop()
    out = os.dup(sock.fileno())
    offset = start = os.lseek(fd, 0, os.SEEK_CUR)
    closed = asyncio.ensure_future(conn.wait_closed())
    try:
        while not conn.is_closing:
            try:
                sent = os.sendfile(out, fd, offset, SENDFILE_CHUNK)
            except BlockingIOError:
                await _writable(loop, out, closed)
                continue
            except OSError as exc:
                if offset == start and exc.errno in _NO_SENDFILE:
                    return False
                break  # reset, broken pipe...: the transport reports it
            if sent == 0:
                break
            offset += sent
            conn.bytes_written += sent
    finally:
        closed.cancel()
        os.close(out)
        os.lseek(fd, offset, os.SEEK_SET)
    return True


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, closed: asyncio.Future[None]) -> None:
    """Wait until ``fd`` can take more bytes, or the connection is gone."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_writer(fd)
        ready.cancel()

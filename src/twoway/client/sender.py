"""The periodic sender: ``--send TEXT --every SECONDS [--count N]``, like the classic Node
client that sent a random string every two seconds.

Sends are scheduled on a fixed grid (start + k x every), so a slow drain or a reconnect does
not make the period drift; a tick that is late is sent at once, not skipped. While a
connection is down its lines wait in the link's buffer. After the last of ``count`` sends the
sender waits for a reply (any data received since) or ``linger`` seconds, whichever comes
first, then half-closes; the server gets ``linger`` more seconds to close before we do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twoway.client.template import random_hex, render

if TYPE_CHECKING:
    from twoway.client.link import Link
    from twoway.client.options import ClientOptions

__all__ = ["run_sender"]


async def run_sender(
    links: Sequence[Link], opts: ClientOptions, rng: random.Random | None = None
) -> None:
    """Send ``opts.send`` to every link every ``opts.every`` seconds, ``opts.count`` times
    (forever if ``None``); return once the links are told there is no more input."""
    assert opts.send is not None
    rng = rng if rng is not None else random.Random()
    for link in links:
        await link.attempted.wait()
    loop = asyncio.get_running_loop()
    start = loop.time()
    seq = 0
    marks = [link.chunks_received for link in links]
    while opts.count is None or seq < opts.count:
        if all(link.done.is_set() for link in links):
            return
        seq += 1
        clock = time.strftime("%H:%M:%S")
        marks = [link.chunks_received for link in links]
        for link in links:
            text = render(
                opts.send,
                seq=seq,
                time=clock,
                random=random_hex(rng.getrandbits),
                name=link.name or "1",
            )
            await link.send(text.encode() + opts.newline)
        if opts.count is not None and seq >= opts.count:
            break
        await asyncio.sleep(max(0.0, start + seq * opts.every - loop.time()))
    try:
        async with asyncio.timeout(opts.linger):
            await asyncio.gather(
                *(link.wait_data(mark) for link, mark in zip(links, marks, strict=True))
            )
    except TimeoutError:
        pass
    for link in links:
        link.finish_input(close_after=opts.linger)

"""Interactive mode (standard input and output are a terminal): a chat client.

prompt_toolkit keeps the input line intact while messages arrive: ``patch_stdout`` makes
every print (received lines, our state lines on stderr) erase the prompt, print above it and
redraw it with what was half typed. Up and down recall earlier lines (in-memory history).

Each line typed is sent to every connection. Ctrl-D on an empty line, or ``/quit``, leaves:
``/quit`` is sent first (the chat server announces the departure), then the connections are
half-closed and the server gets ``linger`` seconds to close. Ctrl-C leaves at once. When the
server closes (and we do not reconnect), the prompt goes away and the client exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twoway.client.link import Link
    from twoway.client.options import ClientOptions

__all__ = ["EXIT_INTERRUPTED", "run_interactive"]

EXIT_INTERRUPTED = 130
PROMPT = "> "


async def run_interactive(links: Sequence[Link], opts: ClientOptions) -> int | None:
    """Read lines from the terminal until Ctrl-D, ``/quit`` or the links are done.

    Returns :data:`EXIT_INTERRUPTED` after Ctrl-C, else ``None`` (the links decide).
    """
    # Imported here: the other modes (and every test of them) never pay for it.
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    session: PromptSession[str] = PromptSession(history=InMemoryHistory())

    async def prompt_loop() -> int | None:
        while True:
            try:
                # handle_sigint=False: a real SIGINT is the main module's; Ctrl-C typed in the
                # prompt arrives as a key and raises KeyboardInterrupt here.
                text = await session.prompt_async(PROMPT, handle_sigint=False)
            except EOFError:
                break
            except KeyboardInterrupt:
                return EXIT_INTERRUPTED
            data = text.encode() + opts.newline
            for link in links:
                await link.send(data)
            if text.strip().lower() == "/quit":
                break
        for link in links:
            link.finish_input(close_after=opts.linger)
        return None

    async def links_done() -> None:
        for link in links:
            await link.done.wait()

    with patch_stdout():
        prompt = asyncio.ensure_future(prompt_loop())
        done = asyncio.ensure_future(links_done())
        try:
            await asyncio.wait({prompt, done}, return_when=asyncio.FIRST_COMPLETED)
            if prompt.done():
                code = prompt.result()
                if code is not None:
                    return code
                await done
                return None
            prompt.cancel()
            try:
                await prompt
            except asyncio.CancelledError:
                pass
            return None
        finally:
            prompt.cancel()
            done.cancel()
            # Let prompt_toolkit restore the terminal before patch_stdout is undone.
            await asyncio.gather(prompt, done, return_exceptions=True)

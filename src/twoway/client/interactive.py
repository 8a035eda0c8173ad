"""Interactive mode (standard input and output are a terminal): a chat client.

prompt_toolkit keeps the input line intact while messages arrive: ``patch_stdout`` makes
every print (received lines, our state lines on stderr) erase the prompt, print above it and
redraw it with what was half typed; narrowing the window leaves no ghost of the input line
(:mod:`twoway.client.resize`). Up and down recall earlier lines, kept in a history file
between runs; Tab completes chat ``/commands`` and the nicks seen so far; Ctrl-Z suspends the
client like any terminal program (``fg`` brings it back).

Each line typed is sent to every connection. Ctrl-D on an empty line, or ``/quit``, leaves:
``/quit`` is sent first (the chat server announces the departure), then the connections are
half-closed and the server gets ``linger`` seconds to close. Ctrl-C leaves at once (closing
with a FIN). When the server closes (and we do not reconnect), the prompt goes away and the
client exits; no prompt is left on the screen.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prompt_toolkit.history import History

    from twoway.client.completion import NickTracker
    from twoway.client.link import Link
    from twoway.client.options import ClientOptions

__all__ = ["EXIT_INTERRUPTED", "default_history_path", "run_interactive"]

EXIT_INTERRUPTED = 130
PROMPT = "> "


def default_history_path() -> Path:
    """``$XDG_STATE_HOME/twoway/connect_history`` (``~/.local/state/...`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "twoway" / "connect_history"


def _history(opts: ClientOptions) -> History:
    """The history file (created private to the user), or memory only if it is ``off`` or
    cannot be used (said in one line)."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    if opts.history_file == "off":
        return InMemoryHistory()
    path = Path(opts.history_file) if opts.history_file else default_history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as exc:
        print(f"twoway: history not kept: cannot write {path} ({exc.strerror})", file=sys.stderr)
        return InMemoryHistory()
    return FileHistory(str(path))


async def run_interactive(
    links: Sequence[Link], opts: ClientOptions, nicks: NickTracker
) -> int | None:
    """Read lines from the terminal until Ctrl-D, ``/quit`` or the links are done.

    Returns :data:`EXIT_INTERRUPTED` after Ctrl-C, else ``None`` (the links decide).
    """
    # Imported here: the other modes (and every test of them) never pay for it.
    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.patch_stdout import patch_stdout

    from twoway.client.completion import make_completer
    from twoway.client.resize import keep_resizes_clean

    # erase_when_done: the prompt never stays on the screen after the client exits; an
    # accepted line is printed back above the prompt instead, as it looked when typed.
    session: PromptSession[str] = PromptSession(
        history=_history(opts),
        completer=make_completer(nicks),
        complete_while_typing=False,
        enable_suspend=True,
        erase_when_done=True,
    )
    keep_resizes_clean(session.app)  # no ghost of the input line when the window narrows

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
            print_formatted_text(FormattedText([("", PROMPT + text)]))
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

"""Interactive mode, driven through a pseudo-terminal the way a person uses it: messages
print above an input line that keeps what was half typed, history, Ctrl-D, /quit, Ctrl-C,
and control characters from the server shown escaped instead of reaching the terminal."""

from __future__ import annotations

import asyncio
import os

import pytest

from .clientkit import UNIT, PtyProc, strip_ansi
from .conftest import Procs

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

ENTER = b"\r"
CTRL_C = b"\x03"
CTRL_D = b"\x04"
UP = b"\x1b[A"


async def prompt(term: PtyProc, after: int = 0) -> int:
    """Wait for an empty input line drawn after character ``after`` of the screen; return
    where it ends. Typing before it is drawn would race prompt_toolkit, which puts the
    terminal back in cooked mode between lines and while it prints."""
    m = await term.screen.wait_for(r"^> $", start=after, clean=True)
    return m.end()


async def read_line_with(reader: asyncio.StreamReader, needle: bytes) -> bytes:
    async with asyncio.timeout(5 * UNIT):
        while line := await reader.readline():
            if needle in line:
                return line
    raise AssertionError(f"EOF before a line with {needle!r}")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_a_half_typed_line_survives_incoming_messages(procs: Procs, loop: str) -> None:
    server = await procs.server("chat")
    term = await procs.pty_client("127.0.0.1", str(server.port), "--loop", loop)
    welcome = await term.screen.wait_for(r"\* type /help for commands", clean=True)
    await prompt(term, welcome.end())
    term.type(b"hel")
    typed = await term.screen.wait_for(r"> hel", clean=True)

    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await read_line_with(reader, b"1 peer here")  # the terminal's user is in the room
        writer.write(b"/nick bob\nfirst message\nsecond message\n")
        await writer.drain()
        # The messages print above the prompt, and the prompt comes back with "hel" on it.
        await term.screen.wait_for(r"bob: first message", start=typed.end(), clean=True)
        second = await term.screen.wait_for(r"bob: second message", clean=True)
        await term.screen.wait_for(r"> hel", start=second.end(), clean=True)
        # Finish the line: the server gets the whole of it.
        term.type(b"lo" + ENTER)
        line = await read_line_with(reader, b"hello")
        assert line.endswith(b": hello\n"), line
        # Ctrl-D: half-close, the chat server closes, the client exits cleanly.
        await prompt(term, second.end())
        term.type(CTRL_D)
        assert await term.wait() == 0
        await read_line_with(reader, b"left #lobby")
    finally:
        writer.close()
        await writer.wait_closed()
    screen = strip_ansi(term.screen.text)
    assert "Traceback" not in screen
    assert "connected to 127.0.0.1" in screen


async def test_history_and_quit(procs: Procs) -> None:
    """Up recalls the previous line; /quit is sent, then the client leaves."""
    server = await procs.server("upper")
    term = await procs.pty_client("127.0.0.1", str(server.port))
    await prompt(term)
    term.type(b"one" + ENTER)
    answer = await term.screen.wait_for(r'You said "ONE"', clean=True)
    await prompt(term, answer.end())
    term.type(UP + ENTER)
    answer = await term.screen.wait_for(r'You said "ONE"', count=2, clean=True)
    await prompt(term, answer.end())
    term.type(b"/quit" + ENTER)
    await term.screen.wait_for(r'You said "/QUIT"', clean=True)
    assert await term.wait() == 0


async def test_the_client_leaves_when_the_server_closes(procs: Procs) -> None:
    server = await procs.server("upper")
    term = await procs.pty_client("127.0.0.1", str(server.port))
    await prompt(term)
    term.type(b"quit" + ENTER)  # upper says goodbye and closes
    assert await term.wait() == 0
    screen = strip_ansi(term.screen.text)
    assert "Bye Bye!" in screen
    assert "disconnected: closed by the server" in screen


async def test_control_characters_from_the_server_are_escaped(procs: Procs) -> None:
    """A server sends a clear-screen and a set-title sequence and a bell: the terminal
    shows them spelled out (^[, ^G) and never receives them. Ctrl-C then leaves (130)."""
    evil = b"evil \x1b[2J \x1b]0;pwned\x07 \x07bell end\r\n"
    sent = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(evil)
        await writer.drain()
        sent.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        term = await procs.pty_client("127.0.0.1", str(port))
        await term.screen.wait_for(r"evil .* end", clean=True)
        raw = term.screen.data
        assert b"\x1b]0;pwned" not in raw
        assert b"\x1b[2J" not in raw
        assert b"\x07" not in raw
        text = strip_ansi(term.screen.text)
        assert "evil ^[[2J ^[]0;pwned^G ^Gbell end" in text
        term.type(CTRL_C)
        assert await term.wait() == 130
        for writer in writers:
            writer.close()
    assert sent.is_set()


async def test_invisible_unicode_from_the_server_is_shown_escaped(procs: Procs) -> None:
    """A right-to-left override, an isolate, a zero-width space, a BOM and a line separator
    sent by a server reach the terminal spelled out (\\u202e...), never as themselves."""
    evil = "rlo \u202e isolate \u2066x\u2069 zw a\u200bb bom \ufeff ls \u2028 end\r\n"
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(evil.encode())
        await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        term = await procs.pty_client("127.0.0.1", str(port))
        await term.screen.wait_for(r"rlo .* end", clean=True)
        raw = term.screen.data
        for char in "\u202e\u2066\u2069\u200b\ufeff\u2028":
            assert char.encode() not in raw
        text = strip_ansi(term.screen.text)
        assert r"rlo \u202e isolate \u2066x\u2069 zw a\u200bb bom \ufeff ls \u2028 end" in text
        term.type(CTRL_C)
        assert await term.wait() == 130
        for writer in writers:
            writer.close()


async def test_stdin_a_terminal_and_stdout_a_pipe_is_pipe_mode(procs: Procs) -> None:
    """Interactive needs both ends on the terminal; with stdout redirected the client is a
    pipe (raw bytes out), reading the terminal's lines."""
    server = await procs.server("upper")
    master, slave = os.openpty()
    try:
        client = await procs.client("127.0.0.1", str(server.port), stdin=slave)
        os.close(slave)
        slave = -1
        os.write(master, b"abc\n")
        await client.stdout.wait_for(r'^You said "ABC"$')
        os.write(master, CTRL_D)  # end of input on a terminal in canonical mode
        assert await client.wait() == 0
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert client.stdout.text == 'You said "ABC"\n'

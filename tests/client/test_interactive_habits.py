"""The interactive client as people use a terminal (issue 13): `connected to` before the
server's banner, Ctrl-Z suspends, Tab completes /commands and nicks, history survives the
exit, and no prompt is left on the screen."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from twoway.client.completion import NickTracker

from .clientkit import TWOWAY, UNIT, PtyProc, child_env, strip_ansi
from .conftest import Procs

ENTER = b"\r"
CTRL_D = b"\x04"
CTRL_Z = b"\x1a"
TAB = b"\t"
UP = b"\x1b[A"


class Recorder:
    """A server that greets with a banner and records what its one client sends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"BANNER line one\n")
        await writer.drain()
        while data := await reader.read(65536):
            self.received += data
            self.changed.set()
        writer.close()

    async def wait_for(self, data: bytes) -> None:
        async with asyncio.timeout(5 * UNIT):
            while data not in self.received:
                self.changed.clear()
                await self.changed.wait()


async def prompt(term: PtyProc, after: int = 0) -> int:
    m = await term.screen.wait_for(r"^> $", start=after, clean=True)
    return m.end()


# --------------------------------------------------------------------------- pure


def test_nicks_are_learnt_from_what_arrives() -> None:
    t = NickTracker()
    t.feed_bytes(b"* you are guest3\nalice: hi there\n* bob joined #lob")
    t.feed_bytes(b"by\n*** carol left #lobby (quit)\n* here: dave, erin\n")
    assert set(t.nicks) >= {"guest3", "alice", "bob", "carol", "dave", "erin"}
    assert t.complete("al") == ["alice"]
    assert t.complete("/msg ca") == ["carol"]
    assert t.complete("/j") == ["/join"]
    assert t.complete("/m") == ["/me", "/msg"]
    assert t.complete("") == []


# --------------------------------------------------------------------------- on a terminal


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_connected_to_comes_before_the_banner(procs: Procs) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        term = await procs.pty_client("127.0.0.1", str(port))
        banner = await term.screen.wait_for("BANNER line one", clean=True)
        await prompt(term, banner.end())
        screen = strip_ansi(term.screen.text)
        assert screen.index(f"connected to 127.0.0.1:{port}") < screen.index("BANNER"), screen
        term.type(CTRL_D)
        assert await term.wait() == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_tab_completes_commands_and_nicks(procs: Procs) -> None:
    server = await procs.server("chat")
    term = await procs.pty_client("127.0.0.1", str(server.port))
    ready = await term.screen.wait_for(r"\* type /help for commands", clean=True)
    await prompt(term, ready.end())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"/nick zorro\nhello from zorro\n")
        await writer.drain()
        said = await term.screen.wait_for(r"zorro: hello from zorro", clean=True)
        await prompt(term, said.end())
        term.type(b"hi zo" + TAB)
        # Completion runs apart from the keys: Enter waits for it, as a person's eyes do.
        await term.screen.wait_for(r"hi zorro", start=said.end(), clean=True)
        term.type(ENTER)
        async with asyncio.timeout(5 * UNIT):
            while b": hi zorro" not in (line := await reader.readline()):
                assert line, "EOF before the completed line"
        shown = await term.screen.wait_for(r"> hi zorro", clean=True)
        await prompt(term, shown.end())
        term.type(b"/wh" + TAB)
        await term.screen.wait_for(r"/who", start=shown.end(), clean=True)
        term.type(ENTER)
        who = await term.screen.wait_for(r"> /who\s+(.*\n)*.*zorro", start=shown.end(), clean=True)
        await prompt(term, who.end())
    finally:
        writer.close()
        await writer.wait_closed()
    term.type(CTRL_D)
    assert await term.wait() == 0


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_history_is_kept_in_a_file_between_runs(procs: Procs, tmp_path: Path) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = child_env(XDG_STATE_HOME=str(tmp_path))
    async with server:
        first = await PtyProc.start(*TWOWAY, "connect", "127.0.0.1", str(port), env=env)
        try:
            await prompt(first, (await first.screen.wait_for("BANNER", clean=True)).end())
            first.type(b"remember me" + ENTER)
            await rec.wait_for(b"remember me\n")
            await prompt(first, (await first.screen.wait_for("> remember me", clean=True)).end())
            first.type(CTRL_D)
            assert await first.wait() == 0
        finally:
            await first.close()
        history = tmp_path / "twoway" / "connect_history"
        assert "remember me" in history.read_text()
        assert history.stat().st_mode & 0o077 == 0  # private: what was typed is nobody's
        second = await PtyProc.start(*TWOWAY, "connect", "127.0.0.1", str(port), env=env)
        try:
            await prompt(second, (await second.screen.wait_for("BANNER", clean=True)).end())
            second.type(UP + ENTER)
            await rec.wait_for(b"remember me\nremember me\n")
            shown = await second.screen.wait_for("> remember me", clean=True)
            await prompt(second, shown.end())
            second.type(CTRL_D)
            assert await second.wait() == 0
        finally:
            await second.close()


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_history_off_writes_nothing(procs: Procs, tmp_path: Path) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = child_env(XDG_STATE_HOME=str(tmp_path))
    async with server:
        args = ("connect", "127.0.0.1", str(port), "--history-file", "off")
        term = await PtyProc.start(*TWOWAY, *args, env=env)
        try:
            await prompt(term, (await term.screen.wait_for("BANNER", clean=True)).end())
            term.type(b"secret" + ENTER)
            await rec.wait_for(b"secret\n")
            await prompt(term, (await term.screen.wait_for("> secret", clean=True)).end())
            term.type(CTRL_D)
            assert await term.wait() == 0
        finally:
            await term.close()
    assert not (tmp_path / "twoway").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for job control")
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_ctrl_z_suspends_and_fg_resumes(procs: Procs) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A shell with job control, as in a terminal: Ctrl-Z stops the client's process group,
    # the shell notices, and `fg` (its next command) brings the client back.
    client = " ".join([*TWOWAY, "connect", "127.0.0.1", str(port)])
    script = f"set -m; {client}; echo client-stopped-or-done; fg; echo exit=$?"
    async with server:
        term = await PtyProc.start("bash", "-c", script)
        try:
            await prompt(term, (await term.screen.wait_for("BANNER", clean=True)).end())
            term.type(b"before" + ENTER)
            await rec.wait_for(b"before\n")
            shown = await term.screen.wait_for("> before", clean=True)
            await prompt(term, shown.end())
            term.type(CTRL_Z)
            stopped = await term.screen.wait_for("client-stopped-or-done", clean=True)
            await prompt(term, stopped.end())  # back in the foreground, prompt redrawn
            term.type(b"after" + ENTER)
            await rec.wait_for(b"after\n")
            assert bytes(rec.received) == b"before\nafter\n"  # no literal ^Z was sent
            await prompt(term, (await term.screen.wait_for("> after", clean=True)).end())
            term.type(CTRL_D)
            await term.screen.wait_for("exit=0", clean=True)
            assert await term.wait() == 0
        finally:
            await term.close()


_CSI = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z@])|\x1b[()][0-9A-B]|\x1b[=>78]")


def screen_lines(data: bytes) -> list[str]:
    """What a terminal shows after ``data``: a small model of the escapes prompt_toolkit
    uses (cursor left/right/up/down, erase to the end of the screen or line)."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(data):
        m = _CSI.match(data, i)
        if m:
            arg, cmd = m.group(1) or b"", m.group(2) or b""
            n = int(arg) if arg.isdigit() else 1
            if cmd == b"C":
                col += n
            elif cmd == b"D":
                col = max(0, col - n)
            elif cmd == b"A":
                row = max(0, row - n)
            elif cmd == b"B":
                row += n
            elif cmd in (b"J", b"K") and not arg.startswith(b"?"):
                while len(rows) <= row:
                    rows.append([])
                del rows[row][col:]
                if cmd == b"J":
                    del rows[row + 1 :]
            i = m.end()
            continue
        ch = data[i : i + 1]
        i += 1
        if ch == b"\r":
            col = 0
        elif ch == b"\n":
            row += 1
        elif ch == b"\x08":
            col = max(0, col - 1)
        elif ch >= b" ":
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch.decode("latin-1")
            else:
                line.append(ch.decode("latin-1"))
            col += 1
    return ["".join(r).rstrip() for r in rows]


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_no_prompt_is_left_on_the_screen_after_exit(procs: Procs) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        term = await procs.pty_client("127.0.0.1", str(port), "--history-file", "off")
        await prompt(term, (await term.screen.wait_for("BANNER", clean=True)).end())
        term.type(b"hi" + ENTER)
        await prompt(term, (await term.screen.wait_for("> hi", clean=True)).end())
        term.type(CTRL_D)
        assert await term.wait() == 0
        await term.screen.wait_for("disconnected: closed", clean=True)
    lines = [line for line in screen_lines(bytes(term.screen.data)) if line]
    assert lines[-2:] == ["> hi", "disconnected: closed"], lines
    assert ">" not in [line.strip() for line in lines]

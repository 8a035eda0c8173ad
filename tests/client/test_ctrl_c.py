"""Ctrl-C in ``twoway connect`` closes like nc does: what was sent arrives, then a FIN; the
server never reads a reset (a chat room would announce ``connection reset by peer``)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from .clientkit import UNIT
from .conftest import Procs

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


class Recorder:
    """A server that records what one client sent and how its connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connected = asyncio.Event()
        self.got_line = asyncio.Event()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        writer.write(b"welcome\n")
        try:
            while data := await reader.read(65536):
                self.received += data
                if b"\n" in data:
                    self.got_line.set()
            self.ended.set_result("fin")
        except ConnectionResetError:
            self.ended.set_result("reset")
        finally:
            writer.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_closes_with_a_fin_after_what_was_sent(
    procs: Procs, loop: str, signum: int
) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = await procs.client(
            "127.0.0.1", str(port), "--loop", loop, stdin=asyncio.subprocess.PIPE
        )
        await client.stdout.wait_for("^welcome$")
        await client.write(b"hello\n")
        await asyncio.wait_for(rec.got_line.wait(), 5 * UNIT)
        assert bytes(rec.received) == b"hello\n"
        client.kill(signum)  # stdin stays open: only the signal ends it
        assert await asyncio.wait_for(rec.ended, 5 * UNIT) == "fin"
        assert await client.wait() == 128 + signum
    assert "Traceback" not in client.stderr.text


async def test_ctrl_c_typed_at_the_prompt_closes_with_a_fin(procs: Procs) -> None:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        term = await procs.pty_client("127.0.0.1", str(port))
        await term.screen.wait_for("welcome", clean=True)
        await term.screen.wait_for(r"^> $", clean=True)
        term.type(b"\x03")
        assert await term.wait() == 130
        assert await asyncio.wait_for(rec.ended, 5 * UNIT) == "fin"


async def test_a_chat_room_reads_a_departure_not_a_reset(procs: Procs) -> None:
    server = await procs.server("chat")
    client = await procs.client("127.0.0.1", str(server.port), stdin=asyncio.subprocess.PIPE)
    await client.stdout.wait_for(r"you are (guest\d+)")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        async with asyncio.timeout(5 * UNIT):
            while b"1 peer here" not in await reader.readline():
                pass
            client.kill(signal.SIGINT)
            while b" left #lobby" not in (line := await reader.readline()):
                assert line, "EOF before the departure"
        assert b"reset" not in line, line
        assert await client.wait() == 130
    finally:
        writer.close()
        await writer.wait_closed()

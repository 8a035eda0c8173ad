"""``twoway connect --reconnect`` against a chat server: after an RST (the fault proxy) it
resumes its session, shows every line exactly once and in order, and says how many it got
back on one stderr line."""

from __future__ import annotations

import asyncio
import re

import pytest

from .clientkit import UNIT
from .conftest import Procs
from .faultproxy import FaultProxy

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])


class Talker:
    """A plain chat client on a socket, straight to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Talker:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        talker = cls(reader, writer)
        await talker.expect("*** type /help for commands")
        return talker

    async def say(self, *lines: str) -> None:
        self.writer.write("".join(line + "\n" for line in lines).encode())
        await self.writer.drain()

    async def expect(self, text: str) -> str:
        async with asyncio.timeout(10 * UNIT):
            while True:
                line = (await self.reader.readline()).decode().rstrip("\r\n")
                if text in line:
                    return line

    async def sync(self) -> None:
        await self.say("/peers")
        await self.expect("You have ")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_reconnect_resumes_and_shows_every_line_once(procs: Procs) -> None:
    server = await procs.server("chat", "--flood-rate", "0", "--ephemeral")
    async with await FaultProxy.start(server.port) as proxy:
        client = await procs.client(
            "127.0.0.1", str(proxy.port), "--reconnect", "--retry-delay", "1", "--retry-max", "1",
            stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await client.stdout.wait_for(r"^\*\*\* resume token: ")
        await client.write(b"/nick alice\n")
        talker = await Talker.connect(server.port)
        try:
            await client.stdout.wait_for(r"^\*\*\* alice is now known|guest\d+ joined")
            await talker.say(*(f"msg {i}" for i in range(10)))
            await client.stdout.wait_for(r"msg 9$")
            proxy.reset_peer()  # RST both ways: alice's connection is lost
            await talker.expect("*** alice left #lobby")
            # While alice is away (it reconnects after 1 s), the room goes on.
            await talker.say(*(f"msg {i}" for i in range(10, 47)))
            await talker.sync()
            await client.stderr.wait_for(
                r"^resumed as alice in #lobby: 37 replayed, 0 missed$", 10 * UNIT
            )
            await talker.say(*(f"msg {i}" for i in range(47, 60)))
            await client.stdout.wait_for(r"msg 59$")
        finally:
            await talker.close()
    out = client.stdout.text
    seen = [int(n) for n in re.findall(r"^(?:\[history\] )?guest\d+: msg (\d+)$", out, re.M)]
    assert seen == list(range(60)), out  # every line, once, in order
    # The second welcome (guest nick, lobby history) is not shown again.
    assert len(re.findall(r"^\*\*\* welcome to ", out, re.M)) == 1, out
    assert "Traceback" not in client.stderr.text

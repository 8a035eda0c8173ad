"""The chat's resume desk reads the nicks held in the shared sessions into the core: at
start-up, again in the background while the sessions cannot be read (for one window at
most), and whenever the bus says items may have been missed. A fake store stands for Redis
(the real one is tested in tests/bus/test_held_nicks.py)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from twoway.sansio.bus import Missed
from twoway.sansio.chat import ChatCore
from twoway.sansio.chat.resume import Ticket
from twoway.services import chatresume
from twoway.services.chatbus import BusIntake
from twoway.services.chatfigures import ChatStats
from twoway.services.chatresume import ResumeDesk


class FakeSessions:
    """``held()`` gives the next of ``answers`` (None: Redis cannot be read), then the
    last one again; ``reads`` counts the calls, ``read`` is set at each."""

    window = 60.0

    def __init__(self, *answers: list[Ticket] | None) -> None:
        self.answers = list(answers)
        self.reads = 0
        self.read = asyncio.Event()

    async def held(self) -> list[Ticket] | None:
        self.reads += 1
        self.read.set()
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def wait_read(self, count: int) -> None:
        while self.reads < count:
            self.read.clear()
            await asyncio.wait_for(self.read.wait(), 5.0)


def _held(nick: str, age: float = 1.0) -> Ticket:
    return Ticket(f"k-{nick}", nick, "#lobby", "e", 0, -age)


def _setup(sessions: FakeSessions) -> tuple[ChatCore, ResumeDesk]:
    count = itertools.count()
    core = ChatCore(cluster=True, resume_window=60.0, new_token=lambda: f"T{next(count)}")
    loop = asyncio.get_running_loop()
    store: Any = sessions
    return core, ResumeDesk(core, {}, lambda effects: None, loop.time, store)


async def test_the_held_nicks_are_read_before_anyone_connects() -> None:
    sessions = FakeSessions([_held("alice"), _held("bob", 61.0)])
    core, desk = _setup(sessions)
    await desk.hold_nicks(lambda: True)
    assert core.held_nicks == 1  # bob's window has passed
    await desk.close()


async def test_while_redis_cannot_be_read_they_are_read_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chatresume, "_RETRY", 0.01)
    sessions = FakeSessions(None, None, [_held("alice")])
    core, desk = _setup(sessions)
    await desk.hold_nicks(lambda: True)  # does not wait for the retries
    assert core.held_nicks == 0
    await sessions.wait_read(3)
    await asyncio.sleep(0)  # (the answer is handed to the core after the read)
    assert core.held_nicks == 1
    await desk.close()


async def test_nothing_is_read_while_the_bus_says_redis_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chatresume, "_RETRY", 0.01)
    sessions = FakeSessions([_held("alice")])
    core, desk = _setup(sessions)
    up = False
    await desk.hold_nicks(lambda: up)
    await asyncio.sleep(0.05)
    assert sessions.reads == 0
    up = True
    await sessions.wait_read(1)
    await asyncio.sleep(0)
    assert core.held_nicks == 1
    await desk.close()


async def test_the_retries_stop_at_close() -> None:
    sessions = FakeSessions(None)
    _, desk = _setup(sessions)
    await desk.hold_nicks(lambda: True)
    await desk.close()
    await asyncio.sleep(0)
    assert sessions.reads == 1
    assert all(t.done() for t in asyncio.all_tasks() if t is not asyncio.current_task())


async def test_missed_items_on_the_bus_read_the_held_nicks_again() -> None:
    sessions = FakeSessions([], [_held("alice")])
    core, desk = _setup(sessions)
    await desk.hold_nicks(lambda: True)
    assert core.held_nicks == 0
    intake = BusIntake(core, {}, ChatStats(), lambda item: None)
    intake.on_missed = desk.reload_holds
    intake.effects([Missed()])
    await sessions.wait_read(2)
    await asyncio.sleep(0)
    assert core.held_nicks == 1
    await desk.close()

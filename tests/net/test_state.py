"""A connection's phases: the moves a real connection makes, and the ones that do not exist."""

from __future__ import annotations

import asyncio

import pytest

from twoway.net import ConnectionOptions, LineService
from twoway.net.framed import connection_class
from twoway.net.state import TRANSITIONS, CloseReason, Phase
from twoway.testing import open_peer


class Upper(LineService):
    def on_line(self, conn, line):  # type: ignore[no-untyped-def]
        conn.send_line(line.upper())


def test_phases_only_move_forward() -> None:
    for start, targets in TRANSITIONS.items():
        assert all(t > start for t in targets), start
    assert TRANSITIONS[Phase.CLOSED] == frozenset()


async def test_a_connection_opens_ends_closes_and_is_closed() -> None:
    peer = open_peer(Upper())
    conn = peer.conn
    assert conn.phase == Phase.OPEN
    peer.send(b"hi\n")
    assert await peer.read_line() == b"HI\n"
    conn.end()
    assert conn.phase == Phase.ENDED and conn.is_ended and not conn.is_closing
    assert conn.write(b"dropped\n") is not None  # dropped silently once ended
    conn.close(reason="done")
    assert conn.phase == Phase.CLOSING and conn.is_closing and conn.close_reason == "done"
    peer.send_eof()
    await conn.wait_closed()
    assert conn.phase == Phase.CLOSED and conn.is_closed


async def test_a_move_that_does_not_exist_is_loud_and_going_back_is_nothing() -> None:
    fresh = connection_class(Upper())(Upper(), ConnectionOptions())
    assert fresh.phase == Phase.NEW
    with pytest.raises(RuntimeError, match="NEW cannot become ENDED"):
        fresh._move(Phase.ENDED)  # a bug in net would do this; it must be loud
    peer = open_peer(Upper())
    peer.reset()
    await peer.conn.wait_closed()
    peer.conn._move(Phase.OPEN)  # moving back is a no-op, never a resurrection
    assert peer.conn.phase == Phase.CLOSED


async def test_an_idle_close_gives_the_idle_reason() -> None:
    peer = open_peer(Upper(), ConnectionOptions(idle_timeout=0.05))
    for _ in range(500):  # the sweeper looks about every idle_timeout
        if peer.conn.is_closing:
            break
        await asyncio.sleep(0.01)
    assert peer.conn.phase == Phase.CLOSING
    assert peer.conn.close_reason == CloseReason.IDLE == "idle"

"""Session resume through a server restart, for plain line clients (a real ``nc``): after a
SIGTERM (every live client's session written) or a ``kill -9`` (the sessions already
written kept), ``/resume TOKEN`` as the first line gives the nick back, the room, exactly
the lines said since, and the summary."""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from services.chat.chatkit import TIMEOUT, ChatServer, Client, NcClient

TOKEN = re.compile(r"^\*\*\* resume token: (\S+)$")
SUMMARY = re.compile(r"^\*\*\* replayed (\d+) lines; (\d+) (missed|no longer kept)$")

pytestmark = pytest.mark.skipif(shutil.which("nc") is None, reason="needs nc")


def start(data: Path) -> ChatServer:
    return ChatServer(
        ("--flood-rate", "0", "--data-dir", str(data), "--grace", "2"), loop="asyncio"
    )


def nc(srv: ChatServer) -> tuple[NcClient, str]:
    """A real nc client, welcomed; and its resume token."""
    c = NcClient(srv.port)
    c.welcome()
    for line in reversed(c.history):
        m = TOKEN.match(line)
        if m:
            return c, m.group(1)
    raise AssertionError(f"no resume token in {c.history}")


def talker(srv: ChatServer, room: str) -> Client:
    c = Client(srv.port, name="talker")
    c.welcome()
    if room != "#lobby":
        c.send(f"/join {room}")
        c.expect(f"*** you are in {room}")
    return c


def resumes(srv: ChatServer, token: str, nick: str, room: str) -> tuple[list[str], str]:
    """``/resume TOKEN`` as nc's first line: the replayed lines and the summary."""
    with NcClient(srv.port, name="back") as back:
        back.send(f"/resume {token}")
        back.expect(f"*** resumed as {nick} in {room}")
        lines = back.lines_until(SUMMARY)
        shown = [x.removeprefix("[history] ") for x in lines if x.startswith("[history] ")]
        new = TOKEN.match(back.read_line() or "")
        assert new is not None and new.group(1) != token
        return shown, back.history[-2]


def test_sigterm_restart_gives_the_nick_room_and_missed_lines_back(tmp_path: Path) -> None:
    srv = start(tmp_path)
    alice, token = nc(srv)
    with alice:
        alice.send("/nick alice")
        alice.send("/join #dev")
        alice.expect("*** you are in #dev")
        with talker(srv, "#dev") as bob:
            bob.send("before the restart")
            alice.expect("before the restart")
            srv.signal(signal.SIGTERM)
            alice.expect("server shutting down")
            assert srv.wait_exit() == 0
    assert token not in srv.stderr  # never logged
    srv = start(tmp_path)
    try:
        srv.wait_log(r"history in .*, 2 resume session\(s\) kept from the last run")
        with talker(srv, "#dev") as carol:
            said = [f"while alice was away {i}" for i in range(5)]
            for text in said:
                carol.send(text)
            carol.sync()
            # The nick is held through the restart.
            carol.send("/nick alice")
            assert carol.expect("error:") == 'error: nick "alice" is already taken'
            shown, summary = resumes(srv, token, "alice", "#dev")
            assert shown == [f"{carol.nick}: {t}" for t in said]
            assert summary == "*** replayed 5 lines; 0 missed"
            carol.expect("*** alice joined #dev")
        # Single use, through restarts too.
        with NcClient(srv.port) as again:
            again.send(f"/resume {token}")
            assert again.expect("error:") == "error: resume refused (already used)"
    finally:
        assert srv.stop() == 0
    assert token not in srv.stderr


def test_kill_9_keeps_the_sessions_already_written(tmp_path: Path) -> None:
    srv = start(tmp_path)
    try:
        alice, token = nc(srv)
        with alice, talker(srv, "#lobby") as bob:
            alice.send("/nick alice")
            alice.expect("is now known as alice")
            bob.send("seen by alice")
            alice.expect("seen by alice")
            alice.close()  # nc ends: its session is written (its nick is not held)
            bob.expect("*** alice left #lobby")
            bob.send("after alice left")
            bob.sync()
            time.sleep(0.3)  # past the group commit (50 ms): the session is on disk
            srv.signal(signal.SIGKILL)
            srv.wait_exit()
    finally:
        srv.stop()
    srv = start(tmp_path)
    try:
        srv.wait_log(r"history in .*, 1 resume session\(s\) kept from the last run")
        shown, summary = resumes(srv, token, "alice", "#lobby")
        assert shown == [f"{bob.nick}: after alice left"]
        assert summary == "*** replayed 1 lines; 0 missed"
    finally:
        assert srv.stop() == 0


def test_a_session_past_the_window_is_refused_after_a_restart(tmp_path: Path) -> None:
    args = ("--flood-rate", "0", "--data-dir", str(tmp_path), "--resume-window", "0.5")
    srv = ChatServer(args, loop="asyncio")
    try:
        alice, token = nc(srv)
        with alice:
            alice.send("/nick alice")
            alice.expect("is now known as alice")
    finally:
        assert srv.stop() == 0
    time.sleep(0.6)  # past the window (counted from the departure, through the restart)
    srv = ChatServer(args, loop="asyncio")
    try:
        with NcClient(srv.port) as back:
            back.send(f"/resume {token}")
            assert back.expect("error:", timeout=TIMEOUT) in (
                "error: resume refused (expired)",
                "error: resume refused (unknown token)",  # forgotten at start-up
            )
    finally:
        assert srv.stop() == 0

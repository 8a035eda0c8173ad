"""The chat protocol as users see it: real ``nc`` processes and sockets against a real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .chatkit import TIMEOUT, Harness

needs_nc = pytest.mark.skipif(shutil.which("nc") is None, reason="nc (netcat-openbsd) missing")


@needs_nc
def test_three_nc_clients_chat(chat: Harness) -> None:
    # Flood control is tested on its own; here one person types ~20 commands in a second.
    srv = chat.start("--flood-rate", "0")
    a = chat.nc(srv, name="a")
    b = chat.nc(srv, name="b")
    a.expect("*** guest2 joined #lobby")
    c = chat.nc(srv, name="c")
    assert (a.nick, b.nick, c.nick) == ("guest1", "guest2", "guest3")
    assert "*** 2 peers here: guest1, guest2" in c.history
    for x in (a, b):
        x.expect("*** guest3 joined #lobby")

    # A plain line reaches the others with the sender's prefix, not the sender itself.
    b.send("hello")
    assert a.expect("guest2:") == "guest2: hello"
    assert c.expect("guest2:") == "guest2: hello"
    assert "guest2: hello" not in b.sync()
    a.send("hi from a")
    for x in (b, c):
        assert x.expect("guest1:") == "guest1: hi from a"

    # Nicks: announced to the whole room, sender included; unique without regard to case.
    c.send("/nick carol")
    for x in (a, b, c):
        x.expect("*** guest3 is now known as carol")
    a.send("/nick alice")
    for x in (a, b, c):
        x.expect("*** guest1 is now known as alice")
    b.send("/nick ALICE")
    assert b.expect("error:") == 'error: nick "ALICE" is already taken'
    c.send("hi alice")
    assert a.expect("carol:") == "carol: hi alice"

    # /who, /peers, /me.
    b.send("/who")
    assert b.expect("* in ") == "*** in #lobby: alice, carol, guest2"
    b.send("/peers")
    assert b.expect("You have") == "You have 2 peers on this server"
    a.send("/me waves")
    for x in (b, c):
        assert x.expect("* alice") == "* alice waves"

    # /msg is private: only the target (and the sender's copy) see it.
    a.send("/msg carol psst")
    assert c.expect("[msg") == "[msg from alice] psst"
    assert a.expect("[msg") == "[msg to carol] psst"
    assert not [line for line in b.sync() if "psst" in line]

    # Rooms: /join creates, the lobby sees the departure, /rooms counts, history on join.
    c.send("/join dev")
    assert c.expect("*** you are in") == "*** you are in #dev"
    assert c.expect("*** you are alone") == "*** you are alone here"
    for x in (a, b):
        assert x.expect("* carol") == "*** carol left #lobby"
    c.send("dev talk")
    c.send("/me codes")
    c.sync()
    a.send("/rooms")
    assert a.expect("*** rooms:") == "*** rooms: #dev (1), #lobby (2)"
    a.send("/join #dev")
    assert a.expect("*** you are in") == "*** you are in #dev"
    assert a.expect("* 1 peer") == "*** 1 peer here: carol"
    assert a.expect("[history]") == "[history] carol: dev talk"
    assert a.expect("[history]") == "[history] * carol codes"
    assert c.expect("* alice") == "*** alice joined #dev"
    b.expect("*** alice left #lobby")
    a.send("only dev")
    assert c.expect("alice:") == "alice: only dev"
    assert not [line for line in b.sync() if "dev talk" in line or "only dev" in line]
    a.send("/part")
    assert c.expect("* alice") == "*** alice left #dev"
    assert b.expect("* alice") == "*** alice joined #lobby"

    # A client that goes away is announced and forgotten: its nick is free again.
    c.finish_input()  # nc -N: FIN
    c.read_to_end()
    srv.wait_log(r"carol left #dev \(closed\)")
    a.send("/who")
    assert a.expect("* in ") == "*** in #lobby: alice, guest2"
    b.send("/nick carol")
    for x in (a, b):
        x.expect("*** guest2 is now known as carol")
    a.send("/peers")
    assert a.expect("You have") == "You have 1 peer on this server"

    # A lobby member closes: the lobby reads "(closed)" and /who forgets it.
    b.finish_input()
    b.read_to_end()
    assert a.expect("*** carol left") == "*** carol left #lobby (closed)"
    a.send("/who")
    assert a.expect("* in ") == "*** in #lobby: alice"


def test_sender_gets_no_echo_and_lines_are_per_line_not_per_chunk(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a, b, c = (chat.client(srv, name=n) for n in "abc")
    a.expect("*** guest3 joined")
    b.expect("*** guest3 joined")
    # Three lines in one segment, and one line cut in three segments: framing is by line.
    a.send(b"one\ntwo\r\nthree", end=b"\n")
    for piece in (b"fo", b"u", b"r\n"):
        a.send(piece, end=b"")
    for x in (b, c):
        got = [x.expect("guest1:") for _ in range(4)]
        assert got == ["guest1: one", "guest1: two", "guest1: three", "guest1: four"]
    assert not [line for line in a.sync() if line.startswith("guest1:")]
    # Replies end the way the client's lines do: b speaks CRLF, so it reads CRLF.
    b.send("/peers", end=b"\r\n")
    assert b.read_raw_line() == b"You have 2 peers on this server\r\n"


def test_nick_rules(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    b = chat.client(srv, name="b")
    a.send("/nick alice")
    assert b.expect("* guest1") == "*** guest1 is now known as alice"
    assert a.expect("* guest1") == "*** guest1 is now known as alice"
    for bad, shown in [
        ("bad!", '"bad!"'),
        ("two words", '"two words"'),
        ("x" * 33, '"' + "x" * 33 + '"'),
        ("caf\u00e9", '"caf\u00e9"'),
    ]:
        b.send(f"/nick {bad}")
        assert b.expect("error:") == f"error: invalid nick {shown} (1-32 letters, digits, - or _)"
    b.send("/nick")
    assert b.expect("error:") == "error: usage: /nick NAME"
    for taken in ("alice", "ALICE", "Alice"):
        b.send(f"/nick {taken}")
        assert b.expect("error:") == f'error: nick "{taken}" is already taken'
    b.send("/nick " + "B_-9" * 8)  # 32 characters, every allowed kind
    assert b.expect("* guest2") == "*** guest2 is now known as " + "B_-9" * 8
    a.send("/nick Alice")  # a new spelling of one's own nick is fine
    assert a.expect("* alice") == "*** alice is now known as Alice"
    a.send("/nick Alice")
    assert a.expect("error:") == "error: you are already known as Alice"
    a.send("/bogus")
    assert a.expect("error:") == 'error: unknown command "/bogus" (type /help)'
    # An error never closes the connection.
    a.send("still here")
    assert b.expect("Alice:") == "Alice: still here"


def test_guest_numbers_not_reused_while_their_owner_is_connected(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    b = chat.client(srv, name="b")
    c = chat.client(srv, name="c")
    assert (a.nick, b.nick, c.nick) == ("guest1", "guest2", "guest3")
    a.send("/nick alice")  # alice still holds number 1
    a.expect("is now known as alice")
    assert chat.client(srv, name="d").nick == "guest4"
    b.send("/nick guest6")  # a guest name chosen by hand is skipped too
    b.expect("is now known as guest6")
    assert chat.client(srv, name="e").nick == "guest5"
    assert chat.client(srv, name="f").nick == "guest7"
    a.close()
    srv.wait_log(r"alice left #lobby \(")
    assert chat.client(srv, name="g").nick == "guest1"  # free once its owner left


def test_rooms_topic_and_history(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    a.send("/topic")
    assert a.expect("* ") == "*** no topic set for #lobby"
    a.send("/topic all about \x1b[1mtests")
    assert a.expect("* guest1 set") == "*** guest1 set the topic: all about ^[[1mtests"
    for i in range(25):
        a.send(f"message {i}")
    a.send("/me is done")
    a.sync()
    b = chat.client(srv, name="b", welcome=False)
    lines = b.lines_until("*** type /help for commands")
    assert lines[:5] == [
        "*** welcome to twoway chat",
        "*** you are guest2",
        "*** you are in #lobby",
        "*** topic: all about ^[[1mtests",
        "*** 1 peer here: guest1",
    ]
    # The last 20 messages (the default --history), marked as history, oldest first.
    history = [line for line in lines if line.startswith("[history] ")]
    assert history == [f"[history] guest1: message {i}" for i in range(6, 25)] + [
        "[history] * guest1 is done"
    ]
    b.send("/topic")
    assert b.expect("*** topic") == "*** topic for #lobby: all about ^[[1mtests"
    # Rooms are created on demand, listed with counts, and vanish when empty.
    b.send("/join Dev")
    assert b.expect("*** you are in") == "*** you are in #dev"
    assert a.expect("*** guest2 left") == "*** guest2 left #lobby"
    a.send("/rooms")
    assert a.expect("* rooms") == "*** rooms: #dev (1), #lobby (1)"
    b.send("/join bad room!")
    assert b.expect("error:") == 'error: invalid room name "bad room!"'
    b.send("/join #dev")
    assert b.expect("error:") == "error: you are already in #dev"
    b.send("/part")
    assert a.expect("* guest2") == "*** guest2 joined #lobby"
    a.send("/rooms")
    assert a.expect("* rooms") == "*** rooms: #lobby (2)"
    b.send("/help")
    assert b.expect("*** /msg") == "*** /msg NICK text    send a private message"


def test_msg_errors_and_privacy(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a, b, c = (chat.client(srv, name=n) for n in "abc")
    a.send("/msg guest9 hello")
    assert a.expect("error:") == 'error: no such nick "guest9"'
    a.send("/msg guest2")
    assert a.expect("error:") == "error: usage: /msg NICK text"
    b.send("/join side")
    b.expect("*** you are in #side")
    a.send("/msg GUEST2 across rooms")  # nicks are case-insensitive, rooms do not matter
    assert b.expect("[msg") == "[msg from guest1] across rooms"
    assert a.expect("[msg") == "[msg to guest2] across rooms"
    assert not [line for line in c.sync() if "across" in line]


def test_quit_says_bye_and_is_announced(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a, b, c = (chat.client(srv, name=n) for n in "abc")
    b.sync()
    b.send("QuIt")
    assert b.read_to_end() == ["Bye Bye!"]
    assert b.end == "eof"
    assert a.expect("*** guest2 left") == "*** guest2 left #lobby (quit)"
    c.send("/nick carol")
    c.expect("is now known as carol")
    c.sync()
    c.send("/quit gone fishing")
    assert c.read_to_end() == ["Bye Bye!"]
    assert a.expect("*** carol left") == "*** carol left #lobby (quit: gone fishing)"
    a.send("/who")
    assert a.expect("* in") == "*** in #lobby: guest1"


def test_closed_client_is_announced_and_forgotten(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a, b = chat.client(srv, name="a"), chat.client(srv, name="b")
    b.send("/nick bob")
    a.expect("is now known as bob")
    b.expect("is now known as bob")  # nothing left unread: close() sends a FIN
    b.close()
    assert a.expect("*** bob left") == "*** bob left #lobby (closed)"
    a.send("/who")
    assert a.expect("* in") == "*** in #lobby: guest1"
    a.send("/peers")
    assert a.expect("You have") == "You have 0 peers on this server"
    c = chat.client(srv, name="c")
    c.send("/nick BOB")
    assert a.expect("known as") == "*** guest2 is now known as BOB"
    # Closing with unread input makes the kernel send an RST: the room is told so.
    a.send("unread by BOB")
    a.sync()
    c.close()  # "unread by BOB" is still in c's receive buffer
    assert a.expect("*** BOB left") == "*** BOB left #lobby (connection reset by peer)"


def test_motd_is_shown_on_connect(chat: Harness, tmp_path: Path) -> None:
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome to the test chat.\nBe nice \x1b[5m!\n")
    srv = chat.start("--motd", str(motd))
    a = chat.client(srv, welcome=False)
    assert a.lines_until("*** type /help")[:4] == [
        "*** welcome to twoway chat",
        "*** Welcome to the test chat.",
        "*** Be nice ^[[5m!",
        "*** you are guest1",
    ]


def test_missing_motd_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    cmd = [sys.executable, "-m", "twoway", "serve", "chat", "--port", "0", "--motd", str(missing)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert proc.returncode == 2
    assert proc.stderr == f"twoway: motd: {missing}: no such file or directory\n"
    assert proc.stdout == ""


def test_quit_and_close_at_once_is_not_an_error(
    chat: Harness, request: pytest.FixtureRequest
) -> None:
    """A scripted client sends ``quit`` and closes without waiting for ``Bye Bye!``.

    The server's ``Bye Bye!`` then reaches a socket that is gone, the client's kernel answers
    with an RST, and the half-close that follows fails with ENOTCONN: that is the peer's
    doing and must end the connection quietly, not as an error with a traceback.
    """
    srv = chat.start()
    srv.check_log = False  # asserted below
    watcher = chat.client(srv, name="watcher")
    quitter = chat.client(srv, name="quitter")  # welcome read: closing sends a FIN, no RST
    watcher.expect("*** guest2 joined")
    quitter.send("quit")
    quitter.close()
    assert watcher.expect("*** guest2 left") == "*** guest2 left #lobby (quit)"
    srv.wait_log(r"closed 127\.0\.0\.1:\d+ \(.*quit")
    watcher.send("/peers")
    assert watcher.expect("You have") == "You have 0 peers on this server"
    errors = [line for line in srv.log_lines if " ERROR " in line or "Traceback" in line]
    assert errors == []

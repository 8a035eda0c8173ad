"""Governance end to end: look-alike nicks, accounts, the server password, operators, bans,
mutes, the lockable topic and the audit log, with socket clients of a real server."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from twoway.sansio.moderation import hash_password

from .chatkit import UNIT, ChatServer, Harness

OPER_PASSWORD = "0per-secret"


def _config(tmp_path: Path) -> str:
    """A config file with one operator, ``admin`` (a cheap hash: tests need no strength)."""
    phc = hash_password(OPER_PASSWORD, os.urandom(16), ln=4)
    path = tmp_path / "chat.toml"
    path.write_text(f'[operators]\nadmin = "{phc}"\n')
    return str(path)


def _start(chat: Harness, tmp_path: Path, *args: str) -> ChatServer:
    return chat.start("--flood-rate", "0", "--config", _config(tmp_path), *args)


def test_lookalike_nicks_are_refused(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    b = chat.client(srv, name="b")
    for nick in ("alice", "mary", "b0b"):
        a.send(f"/nick {nick}")
        a.expect(f"is now known as {nick}")
        for twin in {"alice": ("aIice", "AIice"), "mary": ("rnary",), "b0b": ("bOb", "bob")}[nick]:
            b.send(f"/nick {twin}")
            assert b.expect("error:") == (f'error: nick "{twin}" is too like "{nick}", who is here')
    # Nicks are ASCII: a Cyrillic а is refused before any comparison.
    b.send("/nick \u0430lice")
    assert b.expect("error:").startswith('error: invalid nick "\u0430lice"')
    b.send("/nick carol")  # an honest nick still works
    b.expect("is now known as carol")


def test_register_identify_and_the_grace_period(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0", "--identify-grace", "1")
    a = chat.client(srv, name="a")
    a.send("/nick alice")
    a.expect("is now known as alice")
    a.send("/register s3cret-pw")
    assert a.expect("registered") == "*** alice is registered to you"
    a.close()
    # Nobody may take a look-alike of a registered nick, even while its owner is away.
    b = chat.client(srv, name="b")
    b.send("/nick aIice")
    assert b.expect("error:") == 'error: nick "aIice" is too like the registered nick "alice"'
    # The nick itself may be taken, but not kept without identifying.
    b.send("/nick alice")
    assert b.expect("is registered") == (
        "*** alice is registered: /identify PASSWORD within 1 s or you will be renamed"
    )
    renamed = b.expect("you are now guest", timeout=3 * UNIT)
    assert renamed.startswith("*** registered nick not identified: you are now guest")
    # With the password it sticks.
    b.send("/nick alice s3cret-pw")
    assert b.expect("identified") == "*** you are identified as alice (password)"
    time.sleep(1.3)
    b.send("/who")
    assert "alice" in b.expect("*** in #lobby")
    # The password never reaches the log.
    srv.stop()
    assert not [line for line in srv.log_lines if "s3cret" in line]


def test_password_guessing_is_throttled(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    a = chat.client(srv, name="a")
    a.send("/nick alice")
    a.send("/register right-pw")
    a.expect("registered to you")
    a.close()
    g = chat.client(srv, name="guesser")
    g.send("/nick alice")
    g.expect("is registered")
    answers = []
    for i in range(6):
        g.send(f"/identify guess{i}")
        answers.append(g.expect("error:"))
    assert answers[:3] == ["error: wrong password"] * 3
    assert any(a.startswith("error: too many attempts, try again in") for a in answers[3:])
    # Even the right password waits its turn once throttled.
    g.send("/identify right-pw")
    assert g.expect("error:").startswith("error: too many attempts")


def test_non_operators_are_not_permitted(chat: Harness, tmp_path: Path) -> None:
    srv = _start(chat, tmp_path)
    a = chat.client(srv, name="a")
    chat.client(srv, name="b")
    for command in (
        "/ban guest2",
        "/unban guest2",
        "/banned",
        "/mute guest2",
        "/kick guest2",
        "/stats",
    ):
        a.send(command)
        assert a.expect("error:") == "error: not permitted", command
    a.send(f"/oper admin wrong{OPER_PASSWORD}")
    assert a.expect("error:") == "error: wrong password"


def test_operator_kicks_bans_with_expiry_and_mutes(chat: Harness, tmp_path: Path) -> None:
    srv = _start(chat, tmp_path)
    op = chat.client(srv, name="op")
    op.send(f"/oper admin {OPER_PASSWORD}")
    assert op.expect("operator") == "*** you are an operator (admin)"
    op.send("/stats")  # the operators' view of the figures
    assert op.expect("*** stats:").startswith("*** stats: up ")
    bob = chat.client(srv, name="bob", source="127.0.0.2")
    carol = chat.client(srv, name="carol")
    bob.send("/nick bob")
    op.expect("is now known as bob")
    # Mute: bob's lines go nowhere, carol's still arrive.
    op.send("/mute bob 1h spamming")
    assert op.expect("muted") == "*** muted bob for 1h (1 here)"
    assert bob.expect("muted") == "*** you were muted by guest1 (operator admin) for 1h: spamming"
    bob.send("hello?")
    assert bob.expect("error:") == "error: you are muted"
    carol.send("hi all")
    assert op.expect("guest3:") == "guest3: hi all"
    assert not [line for line in op.sync() if line.startswith("bob:")]
    op.send("/unmute bob")
    bob.expect("you may speak again")
    bob.send("back")
    assert op.expect("bob:") == "bob: back"
    # A timed ban of an address: bob goes, reads the reason and the expiry; the room reads one line.
    op.send("/ban 127.0.0.2/32 1s cool off")
    assert bob.read_to_end()[-1] == (
        "error: you are banned by guest1 (operator admin) (for 1s more): cool off"
    )
    assert carol.expect("left") == (
        "*** bob left #lobby (banned by guest1 (operator admin): cool off)"
    )
    again = chat.client(srv, name="again", source="127.0.0.2", welcome=False)
    assert again.read_to_end()[-1].startswith("error: you are banned by guest1")
    time.sleep(1.2)
    chat.client(srv, name="later", source="127.0.0.2")  # the ban expired: welcome
    # Kick.
    op.send("/kick guest3 enough")
    assert carol.read_to_end()[-1] == "error: you were kicked by guest1 (operator admin): enough"
    # The audit log: one line per action.
    srv.wait_log(r"guest1 \(operator admin\) kicked guest3 \(enough\)")
    for pattern in (r"muted for 1h bob \(spamming\)", r"banned for 1s 127\.0\.0\.2 \(cool off\)"):
        srv.wait_log(pattern)
    assert not [line for line in srv.log_lines if OPER_PASSWORD in line]


def test_server_password(chat: Harness) -> None:
    srv = chat.start("--password", "letmein")
    wrong = chat.client(srv, name="wrong", welcome=False)
    assert wrong.expect("password") == "*** this server needs a password: /pass PASSWORD"
    wrong.send("hello")
    assert wrong.expect("error:") == "error: this server needs a password first: /pass PASSWORD"
    wrong.send("/pass nope")
    assert wrong.read_to_end()[-1] == "error: wrong password, disconnecting"
    right = chat.client(srv, name="right", welcome=False)
    right.expect("needs a password")
    right.send("/pass letmein")
    right.welcome()


def test_room_owner_locks_the_topic(chat: Harness) -> None:
    srv = chat.start("--flood-rate", "0")
    owner = chat.client(srv, name="owner")
    owner.send("/nick dana")
    owner.send("/register dana-pw-1")
    owner.expect("registered to you")
    owner.send("/join dev")
    assert owner.expect("own") == "*** you own #dev"
    other = chat.client(srv, name="other")
    other.send("/join dev")
    other.expect("you are in #dev")
    owner.send("/topic lock")
    owner.expect("is locked")
    other.send("/topic mine now")
    assert other.expect("error:") == "error: the topic of #dev is locked"
    owner.send("/topic release notes")
    assert other.expect("set the topic") == "*** dana set the topic: release notes"
    other.send("/topic unlock")
    assert other.expect("error:") == "error: not permitted"


@pytest.mark.parametrize("piped", [True])
def test_hash_password_command(piped: bool) -> None:
    import subprocess
    import sys

    from twoway.sansio.moderation import verify_password

    out = subprocess.run(
        [sys.executable, "-m", "twoway", "hash-password"],
        input="pw-from-stdin\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    phc = out.stdout.strip()
    assert phc.startswith("$scrypt$ln=14,r=8,p=1$")
    assert "pw-from-stdin" not in out.stdout + out.stderr
    assert verify_password("pw-from-stdin", phc)
    assert not verify_password("pw-from-stdin!", phc)

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoway.sansio.chat import NOTICE, ChatCore, Close, Effect, Log, Send, ToRoom


def sent(effects: Sequence[Effect], cid: int) -> list[str]:
    return [e.text for e in effects if isinstance(e, Send) and e.cid == cid]


def to_room(effects: Sequence[Effect]) -> list[tuple[str, str, int | None]]:
    return [(e.room, e.text, e.exclude) for e in effects if isinstance(e, ToRoom)]


def logs(effects: Sequence[Effect]) -> list[str]:
    return [e.message for e in effects if isinstance(e, Log)]


def connected(core: ChatCore, *cids: int) -> ChatCore:
    for cid in cids:
        core.connect(cid, 0.0, f"10.0.0.{cid}:5000")
    return core


# -- connecting ----------------------------------------------------------------------------


def test_welcome_sequence_alone() -> None:
    core = ChatCore()
    out = core.connect(1, 0.0, "127.0.0.1:40000")
    assert out == [
        Send(1, "*** welcome to twoway chat"),
        Send(1, "*** you are guest1"),
        ToRoom("#lobby", "*** guest1 joined #lobby", 1),
        Send(1, "*** you are in #lobby"),
        Send(1, "*** you are alone here"),
        Send(1, "*** type /help for commands"),
        Log("guest1 joined #lobby from 127.0.0.1:40000"),
    ]


def test_welcome_with_motd_peers_and_history() -> None:
    core = ChatCore(motd="first line\nsecond \x1b line", server_name="demo")
    connected(core, 1, 2)
    core.line(1, "hi there", 1.0)
    core.line(2, "/me waves", 2.0)
    out = core.connect(3, 3.0)
    assert sent(out, 3) == [
        "*** welcome to demo chat",
        "*** first line",
        "*** second ^[ line",
        "*** you are guest3",
        "*** you are in #lobby",
        "*** 2 peers here: guest1, guest2",
        "[history] guest1: hi there",
        "[history] * guest2 waves",
        "*** type /help for commands",
    ]
    assert to_room(out) == [("#lobby", "*** guest3 joined #lobby", 3)]
    assert logs(out) == ["guest3 joined #lobby"]  # no address given


def test_one_peer_is_singular() -> None:
    core = connected(ChatCore(), 1)
    assert "*** 1 peer here: guest1" in sent(core.connect(2, 0.0), 2)


def test_guest_numbers_smallest_free_and_not_reused_while_connected() -> None:
    core = connected(ChatCore(), 1, 2, 3)
    core.disconnect(2, "closed")
    assert core.connect(4, 0.0)[1] == Send(4, "*** you are guest2")
    # guest1 renames; its number stays held while it is connected.
    core.line(1, "/nick alice", 0.0)
    assert core.connect(5, 0.0)[1] == Send(5, "*** you are guest4")
    core.disconnect(1, "closed")
    assert core.connect(6, 0.0)[1] == Send(6, "*** you are guest1")


def test_guest_number_blocked_by_someone_who_chose_it() -> None:
    core = connected(ChatCore(), 1)
    core.line(1, "/nick Guest2", 0.0)
    assert core.nick(1) == "Guest2"
    # guest1's number is still held by client 1 and "guest2" is a nick: next is guest3.
    assert core.connect(2, 0.0)[1] == Send(2, "*** you are guest3")
    # Once the chosen nick is released, the number is free again (and the smallest).
    core.line(1, "/nick bob", 0.0)
    assert core.connect(3, 0.0)[1] == Send(3, "*** you are guest2")
    core.disconnect(1, "closed")
    assert core.connect(4, 0.0)[1] == Send(4, "*** you are guest1")
    assert core.connect(5, 0.0)[1] == Send(5, "*** you are guest4")


def test_guest_number_blocked_then_owner_leaves() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(2, "/nick carol", 0.0)  # number 2 stays with client 2
    core.line(1, "/nick guest2", 0.0)  # client 1 takes the nick guest2
    core.disconnect(2, "closed")  # number 2 is free, but the nick guest2 is taken
    assert core.connect(3, 0.0)[1] == Send(3, "*** you are guest3")
    core.disconnect(1, "closed")  # frees number 1 and the nick guest2
    assert core.connect(4, 0.0)[1] == Send(4, "*** you are guest1")
    assert core.connect(5, 0.0)[1] == Send(5, "*** you are guest2")


def test_duplicate_connect_is_a_programming_error() -> None:
    core = connected(ChatCore(), 1)
    with pytest.raises(ValueError, match="already connected"):
        core.connect(1, 0.0)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="history"):
        ChatCore(history=-1)
    with pytest.raises(ValueError, match="lobby"):
        ChatCore(lobby="#bad name")
    with pytest.raises(ValueError, match="max_names"):
        ChatCore(max_names=0)
    core = ChatCore(lobby="Hall")
    assert core.lobby == "#hall"
    assert sent(core.connect(1, 0.0), 1)[2] == "*** you are in #hall"


# -- messages ------------------------------------------------------------------------------


def test_plain_message_goes_to_the_others_escaped() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "hello \x1b[2J world", 1.0) == [
        ToRoom("#lobby", "guest1: hello ^[[2J world", 1)
    ]
    assert core.counters.messages == 1


def test_empty_line_is_ignored_but_whitespace_is_a_message() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "", 1.0) == []
    assert core.line(1, " ", 1.0) == [ToRoom("#lobby", "guest1:  ", 1)]


def test_double_slash_escapes_a_leading_slash() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "//nick is a command", 1.0) == [
        ToRoom("#lobby", "guest1: /nick is a command", 1)
    ]


def test_quit_lookalikes_are_messages() -> None:
    core = connected(ChatCore(), 1, 2)
    for text in ["quit now", " quit", "quitt", "qu1t"]:
        assert core.line(1, text, 1.0) == [ToRoom("#lobby", f"guest1: {text}", 1)]


def test_unknown_cid_gives_nothing() -> None:
    core = ChatCore()
    assert core.line(99, "hello", 0.0) == []
    assert core.line(99, "/who", 0.0) == []
    assert core.disconnect(99, "closed") == []
    assert core.nick(99) is None and core.room_of(99) is None
    assert core.counters.lines_in == 0


def test_history_is_bounded_and_replayed_on_join() -> None:
    core = connected(ChatCore(history=3), 1)
    core.line(1, "/join dev", 0.0)
    for i in range(5):
        core.line(1, f"m{i}", 0.0)
    out = core.connect(2, 0.0)
    assert not [t for t in sent(out, 2) if t.startswith("[history]")]  # lobby is empty
    out = core.line(2, "/join #dev", 0.0)
    assert [t for t in sent(out, 2) if t.startswith("[history]")] == [
        "[history] guest1: m2",
        "[history] guest1: m3",
        "[history] guest1: m4",
    ]


def test_history_zero_disables_it() -> None:
    core = connected(ChatCore(history=0), 1)
    core.line(1, "hello", 0.0)
    assert not [t for t in sent(core.connect(2, 0.0), 2) if "history" in t]


def test_private_messages_and_system_lines_are_not_in_history() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/msg guest2 secret", 0.0)
    core.line(1, "/nick alice", 0.0)
    core.line(1, "/topic t", 0.0)
    assert not [t for t in sent(core.connect(3, 0.0), 3) if "history" in t]


# -- quitting and disconnecting ------------------------------------------------------------


@pytest.mark.parametrize("word", ["quit", "QUIT", "Quit", "/quit", "/QUIT"])
def test_quit(word: str) -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, word, 0.0) == [
        Send(1, "Bye Bye!"),
        ToRoom("#lobby", "*** guest1 left #lobby (quit)", 1),
        Log("guest1 left #lobby (quit)"),
        Close(1, "quit"),
    ]
    assert core.nick(1) is None
    assert core.connection_count == 1
    assert 1 not in core.members("#lobby")
    assert core.disconnect(1, "closed") == []  # already gone: a no-op


def test_quit_with_reason_is_escaped() -> None:
    core = connected(ChatCore(), 1, 2)
    out = core.line(1, "/quit  gone \x07fishing ", 0.0)
    assert to_room(out) == [("#lobby", "*** guest1 left #lobby (quit: gone ^Gfishing)", 1)]
    assert out[-1] == Close(1, "quit")


def test_disconnect() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/join dev", 0.0)
    core.line(2, "/join dev", 0.0)
    assert core.disconnect(1, "too slow") == [
        ToRoom("#dev", "*** guest1 left #dev (too slow)", 1),
        Log("guest1 left #dev (too slow)"),
    ]
    assert list(core.members("#dev")) == [2]
    assert core.disconnect(1, "closed") == []


def test_last_member_leaving_deletes_room_topic_and_history() -> None:
    core = connected(ChatCore(), 1)
    core.line(1, "/join dev", 0.0)
    core.line(1, "/topic old topic", 0.0)
    core.line(1, "old message", 0.0)
    core.disconnect(1, "closed")
    assert core.rooms() == ["#lobby"]
    assert list(core.members("#dev")) == []
    connected(core, 2)
    out = core.line(2, "/join dev", 0.0)
    assert sent(out, 2) == ["*** you are in #dev", "*** you are alone here"]


def test_lobby_survives_being_empty() -> None:
    core = connected(ChatCore(), 1)
    core.line(1, "/topic welcome all", 0.0)
    core.line(1, "hello", 0.0)
    core.disconnect(1, "closed")
    assert core.rooms() == ["#lobby"]
    out = core.connect(2, 0.0)
    assert "*** topic: welcome all" in sent(out, 2)
    assert "[history] guest1: hello" in sent(out, 2)


# -- commands ------------------------------------------------------------------------------


def test_nick_change() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "/nick Alice_1-x", 0.0) == [
        ToRoom("#lobby", "*** guest1 is now known as Alice_1-x", None),
        Log("guest1 is now known as Alice_1-x"),
    ]
    assert core.nick(1) == "Alice_1-x"
    assert core.line(1, "hi", 0.0) == [ToRoom("#lobby", "Alice_1-x: hi", 1)]
    # Another case of one's own nick is allowed.
    assert to_room(core.line(1, "/NICK alice_1-X", 0.0)) == [
        ("#lobby", "*** Alice_1-x is now known as alice_1-X", None)
    ]
    assert core.counters.nick_changes == 2


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("bad name", '"bad name"'),
        ("x" * 33, '"' + "x" * 33 + '"'),
        ("é", '"é"'),
        ("a.b", '"a.b"'),
        ("a\x1bb", '"a^[b"'),
        ("y" * 100, '"' + "y" * 40 + '..."'),
    ],
)
def test_invalid_nick(arg: str, quoted: str) -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, f"/nick {arg}", 0.0) == [
        Send(1, f"error: invalid nick {quoted} (1-32 letters, digits, - or _)")
    ]
    assert core.nick(1) == "guest1"


def test_nick_taken_case_insensitively() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/nick alice", 0.0)
    assert core.line(2, "/nick ALICE", 0.0) == [Send(2, 'error: nick "ALICE" is already taken')]
    assert core.line(2, "/nick guest1", 0.0) == [
        ToRoom("#lobby", "*** guest2 is now known as guest1", None),
        Log("guest2 is now known as guest1"),
    ]


def test_nick_usage_and_same_nick() -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, "/nick", 0.0) == [Send(1, "error: usage: /nick NAME")]
    assert core.line(1, "/nick guest1", 0.0) == [Send(1, "error: you are already known as guest1")]
    assert core.counters.errors == 2


def test_nick_max_length() -> None:
    core = connected(ChatCore(), 1)
    core.line(1, "/nick " + "n" * 32, 0.0)
    assert core.nick(1) == "n" * 32


def test_join_and_part() -> None:
    core = connected(ChatCore(), 1, 2, 3)
    core.line(2, "/join DEV", 0.0)
    out = core.line(1, "/join dev", 0.0)
    assert out == [
        ToRoom("#lobby", "*** guest1 left #lobby", 1),
        ToRoom("#dev", "*** guest1 joined #dev", 1),
        Send(1, "*** you are in #dev"),
        Send(1, "*** 1 peer here: guest2"),
        Log("guest1 left #lobby for #dev"),
    ]
    assert core.room_of(1) == "#dev"
    assert set(core.members("#dev")) == {1, 2}
    assert set(core.members("#lobby")) == {3}
    # A message reaches only the room.
    assert core.line(1, "in dev", 0.0) == [ToRoom("#dev", "guest1: in dev", 1)]
    assert core.line(1, "/join #Dev", 0.0) == [Send(1, "error: you are already in #dev")]
    out = core.line(1, "/part", 0.0)
    assert to_room(out) == [
        ("#dev", "*** guest1 left #dev", 1),
        ("#lobby", "*** guest1 joined #lobby", 1),
    ]
    assert sent(out, 1) == ["*** you are in #lobby", "*** 1 peer here: guest3"]
    assert core.line(1, "/part", 0.0) == [Send(1, "error: you are already in #lobby")]


def test_join_shows_topic() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/join dev", 0.0)
    core.line(1, "/topic release \x1b on friday", 0.0)
    out = core.line(2, "/join dev", 0.0)
    assert sent(out, 2)[:3] == [
        "*** you are in #dev",
        "*** topic: release ^[ on friday",
        "*** 1 peer here: guest1",
    ]


@pytest.mark.parametrize("arg", ["#", "##dev", "a b", "x" * 33, "dév", "#a.b"])
def test_invalid_room(arg: str) -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, f"/join {arg}", 0.0) == [Send(1, f'error: invalid room name "{arg}"')]
    assert core.room_of(1) == "#lobby"


def test_join_usage() -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, "/join", 0.0) == [Send(1, "error: usage: /join ROOM")]


def test_rooms_and_who() -> None:
    core = connected(ChatCore(), 1, 2, 3, 4)
    core.line(1, "/nick Zed", 0.0)
    core.line(2, "/nick alice", 0.0)
    core.line(3, "/join dev", 0.0)
    assert core.line(1, "/rooms", 0.0) == [Send(1, "*** rooms: #dev (1), #lobby (3)")]
    # Sorted case-insensitively; the list includes the requester.
    assert core.line(1, "/WHO", 0.0) == [Send(1, "*** in #lobby: alice, guest4, Zed")]
    assert core.line(3, "/who", 0.0) == [Send(3, "*** in #dev: guest3")]


def test_long_name_lists_are_capped() -> None:
    core = connected(ChatCore(max_names=3), *range(1, 8))
    assert core.line(1, "/who", 0.0) == [
        Send(1, "*** in #lobby: guest1, guest2, guest3, and 4 more")
    ]
    out = core.connect(8, 0.0)
    assert "*** 7 peers here: guest1, guest2, guest3, and 4 more" in sent(out, 8)
    for cid, room in [(1, "a"), (2, "b"), (3, "c"), (4, "d")]:
        core.line(cid, f"/join {room}", 0.0)
    assert core.line(5, "/rooms", 0.0) == [Send(5, "*** rooms: #a (1), #b (1), #c (1), and 2 more")]


def test_msg() -> None:
    core = connected(ChatCore(), 1, 2, 3)
    core.line(2, "/nick Bob", 0.0)
    core.line(2, "/join elsewhere", 0.0)  # private messages cross rooms
    assert core.line(1, "/msg bob  hello \x1b there", 0.0) == [
        Send(2, "[msg from guest1] hello ^[ there"),
        Send(1, "[msg to Bob] hello ^[ there"),
    ]
    assert core.counters.private_messages == 1
    assert core.line(1, "/msg nobody hi", 0.0) == [Send(1, 'error: no such nick "nobody"')]
    assert core.line(1, "/msg bob", 0.0) == [Send(1, "error: usage: /msg NICK text")]
    assert core.line(1, "/msg", 0.0) == [Send(1, "error: usage: /msg NICK text")]
    assert core.line(1, "/msg bob\thi", 0.0) == [
        Send(2, "[msg from guest1] hi"),
        Send(1, "[msg to Bob] hi"),
    ]
    # Non-ASCII that lower-cases to ASCII (KELVIN SIGN -> k) does not match a nick.
    core.line(3, "/nick kate", 0.0)
    assert core.line(1, "/msg \u212aate hi", 0.0) == [Send(1, 'error: no such nick "\u212aate"')]


def test_me() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "/me waves \x07", 0.0) == [ToRoom("#lobby", "* guest1 waves ^G", 1)]
    assert core.line(1, "/me", 0.0) == [Send(1, "error: usage: /me action")]
    assert core.line(1, "/me   ", 0.0) == [Send(1, "error: usage: /me action")]


def test_topic() -> None:
    core = connected(ChatCore(), 1, 2)
    assert core.line(1, "/topic", 0.0) == [Send(1, "*** no topic set for #lobby")]
    assert core.line(1, "/topic  chat \x1b here ", 0.0) == [
        ToRoom("#lobby", "*** guest1 set the topic: chat ^[ here", None),
        Log("guest1 set the topic of #lobby"),
    ]
    assert core.line(2, "/TOPIC", 0.0) == [Send(2, "*** topic for #lobby: chat ^[ here")]


def test_peers() -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, "/peers", 0.0) == [Send(1, "You have 0 peers on this server")]
    connected(core, 2)
    core.line(2, "/join dev", 0.0)  # counts the whole server, not the room
    assert core.line(1, "/peers", 0.0) == [Send(1, "You have 1 peer on this server")]
    connected(core, 3)
    assert core.line(1, "/peers", 0.0) == [Send(1, "You have 2 peers on this server")]


def test_help_lists_every_command() -> None:
    core = connected(ChatCore(), 1)
    out = core.line(1, "/help", 0.0)
    assert all(isinstance(e, Send) and e.cid == 1 and e.text.startswith("*** ") for e in out)
    text = "\n".join(sent(out, 1))
    for cmd in [
        "/nick",
        "/join",
        "/part",
        "/rooms",
        "/who",
        "/msg",
        "/me",
        "/topic",
        "/peers",
        "/quit",
        "/help",
        "//",
    ]:
        assert cmd in text


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("/foo", 'error: unknown command "/foo" (type /help)'),
        ("/FOO bar", 'error: unknown command "/FOO" (type /help)'),
        ("/", 'error: unknown command "/" (type /help)'),
        ("/ who", 'error: unknown command "/" (type /help)'),
        ("/nick\x1b", 'error: unknown command "/nick^[" (type /help)'),
        ("/" + "z" * 60, 'error: unknown command "/' + "z" * 39 + '..." (type /help)'),
    ],
)
def test_unknown_command(line: str, reply: str) -> None:
    core = connected(ChatCore(), 1)
    assert core.line(1, line, 0.0) == [Send(1, reply)]
    assert core.counters.errors == 1
    assert core.connection_count == 1


def test_counters() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "hello", 0.0)
    core.line(1, "", 0.0)
    core.line(1, "/who", 0.0)
    core.line(1, "/bogus", 0.0)
    core.line(1, "/join dev", 0.0)
    core.disconnect(2, "closed")
    c = core.counters
    assert (c.lines_in, c.messages, c.commands, c.errors) == (5, 1, 3, 1)
    assert (c.joins, c.parts) == (3, 2)


def test_members_is_live_and_unknown_room_is_empty() -> None:
    core = connected(ChatCore(), 1)
    lobby = core.members("#lobby")
    connected(core, 2)
    assert set(lobby) == {1, 2}
    assert len(core.members("#nowhere")) == 0


# -- fuzzing -------------------------------------------------------------------------------

NICK = re.compile(r"[A-Za-z0-9_-]{1,32}")
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")

names = st.one_of(
    st.sampled_from(
        [
            "alice",
            "Alice",
            "ALICE",
            "bob",
            "guest1",
            "Guest2",
            "guest3",
            "guest02",
            "dev",
            "#dev",
            "DEV",
            "#lobby",
            "lobby",
            "x" * 32,
            "x" * 33,
            "a b",
            "",
            "#",
            "é",
            "\x1b",
        ]
    ),
    st.text(max_size=6),
)
free_text = st.text(max_size=20)
commands = st.one_of(
    free_text,
    st.sampled_from(
        [
            "",
            "quit",
            "QUIT",
            "/quit",
            "/part",
            "/rooms",
            "/who",
            "/topic",
            "/peers",
            "/help",
            "/",
            "//",
            "/me",
            "/msg",
            "/nick",
            "/join",
        ]
    ),
    st.builds("/nick {}".format, names),
    st.builds("/join {}".format, names),
    st.builds("/msg {} {}".format, names, free_text),
    st.builds("/me {}".format, free_text),
    st.builds("/topic {}".format, free_text),
    st.builds("/quit {}".format, free_text),
    st.builds("/{}".format, free_text),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 7), st.just("")),
        st.tuples(st.just("line"), st.integers(0, 7), commands),
        st.tuples(st.just("disconnect"), st.integers(0, 7), free_text),
    ),
    max_size=60,
)


def effect_text(e: Effect) -> str:
    if isinstance(e, Log):
        return e.message
    if isinstance(e, Close):
        return e.reason
    return e.text


def check_invariants(core: ChatCore, live: set[int]) -> None:
    assert core.connection_count == len(live)
    rooms = core.rooms()
    assert core.lobby in rooms
    for room in rooms:
        assert room == room.lower() and NICK.fullmatch(room[1:])
        members = set(core.members(room))
        assert members <= live
        if room != core.lobby:
            assert members, f"empty room {room} kept"
    for cid in live:
        where = core.room_of(cid)
        assert where in rooms
        assert [r for r in rooms if cid in core.members(r)] == [where]
    assert sum(len(core.members(r)) for r in rooms) == len(live)
    nicks = [core.nick(cid) for cid in live]
    assert all(n is not None and NICK.fullmatch(n) for n in nicks)
    assert len({n.lower() for n in nicks if n}) == len(nicks)
    assert core.counters.joins - core.counters.parts == len(live)


def smallest_free_guest(core: ChatCore, owned: dict[int, int], live: set[int]) -> int:
    taken = {n for cid, n in owned.items() if cid in live}
    nicks = {(core.nick(cid) or "").lower() for cid in live}
    n = 1
    while n in taken or f"guest{n}" in nicks:
        n += 1
    return n


@settings(max_examples=400, deadline=None)
@given(ops=ops, history=st.integers(0, 3), max_names=st.sampled_from([None, 1, 3]))
def test_fuzz_chat_core(
    ops: list[tuple[str, int, str]], history: int, max_names: int | None
) -> None:
    core = ChatCore(history=history, max_names=max_names, motd="hello\nworld")
    live: set[int] = set()
    owned: dict[int, int] = {}  # cid -> guest number given at connection
    now = 0.0
    for kind, cid, text in ops:
        now += 1.0
        before = set(live)
        if kind == "connect":
            if cid in live:
                with pytest.raises(ValueError):
                    core.connect(cid, now)
                continue
            expected = smallest_free_guest(core, owned, live)
            out = core.connect(cid, now, "addr")
            live.add(cid)
            owned[cid] = expected
            assert core.nick(cid) == f"guest{expected}"
            assert sent(out, cid)[-1] == "*** type /help for commands"
        elif kind == "line":
            out = core.line(cid, text, now)
            if cid not in live:
                assert out == []
        else:
            out = core.disconnect(cid, text)
            assert [e for e in out if isinstance(e, (Send, Close))] == []
            live.discard(cid)
            if cid not in before:
                assert out == []
        closes = [e for e in out if isinstance(e, Close)]
        if closes:
            assert kind == "line" and closes == [Close(cid, "quit")] and out[-1] == closes[0]
            assert out[0] == Send(cid, "Bye Bye!")
            live.discard(cid)
            assert core.nick(cid) is None
        for e in out:
            if isinstance(e, Send):
                assert e.cid in before | live
                if e.text.startswith("error: "):
                    assert out == [e]
            elif isinstance(e, ToRoom):
                assert e.exclude is None or e.exclude == cid
            assert not CONTROL.search(effect_text(e)), e
        check_invariants(core, live)


# -- server notices cannot be forged -------------------------------------------------------


def test_me_cannot_forge_a_departure_a_nick_change_or_a_topic() -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/nick alice", 0.0)
    forged = [
        to_room(core.line(1, "/me left #lobby (quit)", 0.0)),
        to_room(core.line(1, "/me is now known as bob", 0.0)),
        to_room(core.line(1, "/me set the topic: free beer", 0.0)),
    ]
    real_topic = to_room(core.line(1, "/topic free beer", 0.0))
    real_nick = to_room(core.line(1, "/nick bob", 0.0))
    real_quit = to_room(core.line(1, "/quit", 0.0))
    assert [f[0][1] for f in forged] == [
        "* alice left #lobby (quit)",
        "* alice is now known as bob",
        "* alice set the topic: free beer",
    ]
    assert real_topic[0][1] == "*** alice set the topic: free beer"
    assert real_nick[0][1] == "*** alice is now known as bob"
    assert real_quit[0][1] == "*** bob left #lobby (quit)"
    assert {f[0][1] for f in forged}.isdisjoint({real_topic[0][1], real_nick[0][1]})


def test_every_line_from_the_server_starts_with_the_notice_prefix() -> None:
    core = ChatCore(motd="hello")
    out = core.connect(1, 0.0) + core.connect(2, 0.0)
    for line in ("/help", "/who", "/rooms", "/topic", "/topic t", "/join dev", "/nick al"):
        out += core.line(1, line, 0.0)
    out += core.disconnect(2, "closed")
    texts = [e.text for e in out if isinstance(e, Send | ToRoom)]
    assert texts and all(t.startswith(NOTICE) for t in texts), texts


@given(nick=st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True), text=st.text(min_size=1))
@settings(max_examples=300)
def test_no_message_or_action_starts_like_a_notice(nick: str, text: str) -> None:
    core = connected(ChatCore(), 1, 2)
    core.line(1, "/nick " + nick, 0.0)
    # "x" first: a message, never a command; the text may be anything after it.
    lines = to_room(core.line(1, "x" + text, 0.0)) + to_room(core.line(1, "/me x" + text, 0.0))
    assert len(lines) == 2
    for _, line, _ in lines:
        assert not line.startswith(NOTICE), line


def test_the_nick_error_is_reserved() -> None:
    core = connected(ChatCore(), 1)
    assert sent(core.line(1, "/nick Error", 0.0), 1) == ['error: nick "Error" is reserved']
    assert core.nick(1) == "guest1"


def test_bidi_controls_and_invisible_characters_reach_nobody() -> None:
    core = connected(ChatCore(), 1, 2)
    evil = "\u202eevil\u2066 \u200bzw\ufeff \u2028 end"
    shown = "\\u202eevil\\u2066 \\u200bzw\\ufeff \\u2028 end"
    assert to_room(core.line(1, evil, 0.0)) == [("#lobby", f"guest1: {shown}", 1)]
    assert to_room(core.line(1, "/me " + evil, 0.0)) == [("#lobby", f"* guest1 {shown}", 1)]
    assert to_room(core.line(1, "/topic " + evil, 0.0)) == [
        ("#lobby", f"*** guest1 set the topic: {shown}", None)
    ]
    assert sent(core.line(2, "/topic", 0.0), 2) == [f"*** topic for #lobby: {shown}"]
    assert sent(core.line(1, "/msg guest2 " + evil, 0.0), 2) == [f"[msg from guest1] {shown}"]

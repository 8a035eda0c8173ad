"""What a connected client can do: its messages and its ``/`` commands.

:func:`handle_line` takes one line from a member and returns the effects. It checks
everything the client typed (a bad argument is one ``error: ...`` line to that client, and
counted) and leaves every change of state to :class:`~twoway.sansio.chat.state.ChatState`.
Commands are found through :data:`COMMANDS`, one function each.
"""

from __future__ import annotations

from collections.abc import Callable

from twoway.sansio.chat.effects import Close, Effect, Log, Presence, Said, Send, TopicSet, ToRoom
from twoway.sansio.chat.recall import RECALL_COMMANDS
from twoway.sansio.chat.rooms import Member, Remote
from twoway.sansio.chat.rules import (
    COMMAND,
    HELP,
    MAX_TOPIC,
    NAME,
    NOTICE,
    RESERVED_NICKS,
    is_command,
    quote,
    room_key,
)
from twoway.sansio.chat.state import ChatState
from twoway.sansio.text import escape_controls

__all__ = ["COMMANDS", "error", "handle_line", "quit_chat"]

Command = Callable[[ChatState, Member, str], list[Effect]]


def handle_line(state: ChatState, member: Member, text: str) -> list[Effect]:
    """One line from ``member`` (decoded, without its terminator): a message to its room,
    a command (``/word``; ``//`` escapes a leading slash), or a bare ``quit``."""
    counters = state.counters
    counters.lines_in += 1
    if not text:
        return []
    if is_command(text):
        counters.commands += 1
        if text[0] == "/":
            return _command(state, member, text)
        return quit_chat(state, member, "")
    # The hot path: a plain message. Keep it to one escape, one format, one append.
    if text[0] == "/":
        text = text[1:]  # "//text" says "/text"
    room = member.room
    msg = f"{member.nick}: {escape_controls(text)}"
    state.say(room, msg)
    counters.messages += 1
    if state.cluster:
        return [ToRoom(room.name, msg, member.cid), Said(room.name, msg)]
    return [ToRoom(room.name, msg, member.cid)]


def error(state: ChatState, member: Member, message: str) -> list[Effect]:
    """One ``error: message`` line to ``member``."""
    state.counters.errors += 1
    return [Send(member.cid, "error: " + message)]


def quit_chat(state: ChatState, member: Member, reason: str) -> list[Effect]:
    """``member`` leaves (``/quit reason`` or ``quit``): ``Bye Bye!``, the room is told, the
    connection ends."""
    out: list[Effect] = [Send(member.cid, "Bye Bye!")]
    if state.tokens is not None:
        state.tokens.forget(member.cid, state.now)  # left on purpose: nothing to resume
    state.depart(member, f"quit: {escape_controls(reason)}" if reason else "quit", out)
    out.append(Close(member.cid, "quit"))
    return out


def _command(state: ChatState, member: Member, text: str) -> list[Effect]:
    m = COMMAND.fullmatch(text)
    assert m is not None  # the pattern matches every string that starts with "/"
    word, arg = m.group(1), m.group(2).strip()
    handler = COMMANDS.get(word.lower())
    if handler is None:
        return error(state, member, f"unknown command {quote('/' + word)} (type /help)")
    return handler(state, member, arg)


def _help(state: ChatState, member: Member, arg: str) -> list[Effect]:
    return [Send(member.cid, line) for line in HELP]


def _quit(state: ChatState, member: Member, arg: str) -> list[Effect]:
    return quit_chat(state, member, arg)


def _nick(state: ChatState, member: Member, arg: str) -> list[Effect]:
    if not arg:
        return error(state, member, "usage: /nick NAME")
    if not NAME.fullmatch(arg):
        return error(state, member, f"invalid nick {quote(arg)} (1-32 letters, digits, - or _)")
    if arg == member.nick:
        return error(state, member, f"you are already known as {arg}")
    key = arg.lower()
    if key in RESERVED_NICKS:
        return error(state, member, f"nick {quote(arg)} is reserved")
    holder = state.nicks.get(key)
    if (
        (holder is not None and holder is not member)
        or key in state.remote.nicks
        or (
            key in state.held  # kept for a departed client that may resume
        )
    ):
        return error(state, member, f"nick {quote(arg)} is already taken")
    old = member.nick
    state.rename(member, arg)
    out: list[Effect] = [ToRoom(member.room.name, f"{NOTICE}{old} is now known as {arg}", None)]
    out.append(Log(f"{old} is now known as {arg}"))
    if state.cluster:
        out.append(Presence(member.cid, arg, member.room.name))
    return out


def _join(state: ChatState, member: Member, arg: str) -> list[Effect]:
    if not arg:
        return error(state, member, "usage: /join ROOM")
    name = room_key(arg)
    if name is None:
        return error(state, member, f"invalid room name {quote(arg)}")
    limit = state.max_rooms
    if limit is not None and name not in state.rooms and len(state.rooms) >= limit:
        return error(state, member, f"too many rooms (max {limit}): join one of /rooms")
    return _move(state, member, name)


def _part(state: ChatState, member: Member, arg: str) -> list[Effect]:
    return _move(state, member, state.lobby.name)


def _move(state: ChatState, member: Member, name: str) -> list[Effect]:
    if name == member.room.name:
        return error(state, member, f"you are already in {name}")
    return state.move(member, name)


def _rooms(state: ChatState, member: Member, arg: str) -> list[Effect]:
    rooms = state.rooms
    limit = state.max_names
    names = sorted(rooms)
    listed = ", ".join(f"{n} ({rooms[n].size})" for n in names[:limit])
    if limit is not None and len(names) > limit:
        listed += f", and {len(names) - limit} more"
    return [Send(member.cid, f"{NOTICE}rooms: {listed}")]


def _who(state: ChatState, member: Member, arg: str) -> list[Effect]:
    room = member.room
    return [Send(member.cid, f"{NOTICE}in {room.name}: {room.name_list(state.max_names)}")]


def _msg(state: ChatState, member: Member, arg: str) -> list[Effect]:
    parts = arg.split(None, 1)
    if len(parts) < 2:
        return error(state, member, "usage: /msg NICK text")
    target_nick, message = parts
    key = target_nick.lower() if target_nick.isascii() else ""
    target: Member | Remote | None = state.nicks.get(key)
    if target is None:
        holders = state.remote.nicks.get(key)
        if holders is None:
            return error(state, member, f"no such nick {quote(target_nick)}")
        target = holders[0]  # a Send the bus carries to the server of that client
    message = escape_controls(message)
    state.counters.private_messages += 1
    return [
        Send(target.cid, f"[msg from {member.nick}] {message}"),
        Send(member.cid, f"[msg to {target.nick}] {message}"),
    ]


def _me(state: ChatState, member: Member, arg: str) -> list[Effect]:
    if not arg:
        return error(state, member, "usage: /me action")
    room = member.room
    # "* nick": a nick never contains "*", so an action never starts like a notice.
    msg = f"* {member.nick} {escape_controls(arg)}"
    state.say(room, msg)
    state.counters.messages += 1
    if state.cluster:
        return [ToRoom(room.name, msg, member.cid), Said(room.name, msg)]
    return [ToRoom(room.name, msg, member.cid)]


def _topic(state: ChatState, member: Member, arg: str) -> list[Effect]:
    room = member.room
    if not arg:
        if room.topic is None:
            return [Send(member.cid, f"{NOTICE}no topic set for {room.name}")]
        return [Send(member.cid, f"{NOTICE}topic for {room.name}: {room.topic}")]
    if len(arg) > MAX_TOPIC:
        return error(state, member, f"topic too long (max {MAX_TOPIC} characters)")
    room.topic = escape_controls(arg)
    text = f"{NOTICE}{member.nick} set the topic: {room.topic}"
    out: list[Effect] = [ToRoom(room.name, text, None)]
    out.append(Log(f"{member.nick} set the topic of {room.name}"))
    if state.topic_sink is not None:
        state.topic_sink(room.name, room.topic, member.nick)
    if state.cluster:
        out.append(TopicSet(room.name, room.topic, member.nick))
    return out


def _peers(state: ChatState, member: Member, arg: str) -> list[Effect]:
    local = len(state.clients) - 1
    n = local + len(state.remote.cids)
    text = f"You have {n} peer{'' if n == 1 else 's'}"
    servers = len(state.remote.nodes)  # nodes with at least one member, besides this one
    if not servers:
        return [Send(member.cid, text + " on this server")]
    return [Send(member.cid, f"{text} on {servers + 1} servers ({local} on this one)")]


#: The commands, by lower-case name (``/NICK`` is ``/nick``).
COMMANDS: dict[str, Command] = {
    "help": _help,
    "quit": _quit,
    "nick": _nick,
    "join": _join,
    "part": _part,
    "rooms": _rooms,
    "who": _who,
    "msg": _msg,
    "me": _me,
    "topic": _topic,
    "peers": _peers,
    **RECALL_COMMANDS,
}

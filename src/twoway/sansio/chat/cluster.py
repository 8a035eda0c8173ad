"""The cluster merge: what other servers published, into this server's state.

Each server is authoritative for its own clients; the others learn about them from the bus
and keep them in the directory. Remote members are counted and named like local ones but
never delivered to (their own server does that). Room lines, joins and departures of remote
members are announced to the local members only, with ``exclude=None``. Remote input is
trusted to be well-formed but still checked: a malformed value (an invalid nick or room
name, a remote id that is local, a room line that starts like a server notice) is ignored.

Each function takes the :class:`~twoway.sansio.chat.state.ChatState` and returns (or
appends to ``out``) the effects; :class:`~twoway.sansio.chat.ChatCore` documents them.
"""

from __future__ import annotations

from collections.abc import Iterable

from twoway.sansio.chat.effects import Effect, Log, ToRoom
from twoway.sansio.chat.rules import MAX_TOPIC, NAME, NOTICE, room_key
from twoway.sansio.chat.state import ChatState
from twoway.sansio.text import escape_controls

__all__ = [
    "MAX_BACKFILL_ROOMS",
    "merge_backfill",
    "merge_gone",
    "merge_message",
    "merge_node_lost",
    "merge_presence",
    "merge_snapshot",
    "merge_topic",
]

#: Rooms whose backfilled history is kept before they exist here (see :func:`merge_backfill`).
MAX_BACKFILL_ROOMS = 1000


def merge_presence(
    state: ChatState, cid: int, nick: str, room: str, node: int, out: list[Effect]
) -> None:
    """Client ``cid`` of server ``node`` is now ``nick`` in ``room``."""
    name = room_key(room)
    if name is None or cid in state.clients or not NAME.fullmatch(nick):
        return
    r = state.remote.cids.get(cid)
    if r is None:
        r = state.add_remote(cid, nick, node, name)
        out.append(ToRoom(name, f"{NOTICE}{nick} joined {name}", None))
    else:
        if r.node != node:  # not expected: ids embed their server; follow the latest word
            state.remote.move_node(r, node)
        if nick != r.nick:
            old = r.nick
            state.rename_remote(r, nick)
            out.append(ToRoom(r.room.name, f"{NOTICE}{old} is now known as {nick}", None))
        if name != r.room.name:
            left = state.move_remote(r, name)
            out.append(ToRoom(left.name, f"{NOTICE}{nick} left {left.name}", None))
            out.append(ToRoom(name, f"{NOTICE}{nick} joined {name}", None))
    # The lower id keeps a nick both servers granted: every server applies the same rule.
    local = state.nicks.get(r.key)
    if local is not None and cid < local.cid:
        state.lose_nick(local, out)


def merge_gone(state: ChatState, cid: int, reason: str) -> list[Effect]:
    """Client ``cid`` of another server left (unknown ids give ``[]``)."""
    r = state.remote.cids.get(cid)
    if r is None:
        return []
    out: list[Effect] = []
    state.forget_remote(r, escape_controls(reason), out)
    return out


def merge_message(state: ChatState, room: str, text: str) -> list[Effect]:
    """A line said in ``room`` on another server."""
    r = state.rooms.get(room)
    if r is None or text.startswith(NOTICE):  # a room line is never a server notice
        return []
    text = escape_controls(text)
    state.say(r, text)
    state.counters.remote_messages += 1
    return [ToRoom(room, text, None)]


def merge_topic(state: ChatState, room: str, topic: str, nick: str) -> list[Effect]:
    """``nick`` on another server set the topic of ``room``."""
    r = state.rooms.get(room)
    if r is None:
        if state.topic_sink is not None and room[:1] == "#" and NAME.fullmatch(room[1:]):
            # Kept where every server sees it (its server wrote it): this server shows it
            # when the room is created here, as it would after a restart.
            state.keep_topic(room, escape_controls(topic[:MAX_TOPIC]))
        return []
    r.topic = escape_controls(topic[:MAX_TOPIC])
    return [ToRoom(room, f"{NOTICE}{escape_controls(nick)} set the topic: {r.topic}", None)]


def merge_backfill(state: ChatState, lines: Iterable[tuple[str, str]]) -> None:
    """Lines said before this server joined, oldest first, as ``(room, text)``."""
    store = state.histories
    if not store.per_room:
        return
    per_room: dict[str, list[str]] = {}
    for room, text in lines:
        per_room.setdefault(room, []).append(escape_controls(text))
    for name, texts in per_room.items():
        r = state.rooms.get(name)
        if r is not None:
            assert r.history is not None  # history is on
            store.prepend(r.history, texts)
        elif name in state.backfill or len(state.backfill) < MAX_BACKFILL_ROOMS:
            kept = state.backfill.get(name)
            if kept is None:
                kept = store.new()
                assert kept is not None  # history is on
                state.backfill[name] = kept
            for text in texts:
                store.append(kept, text)


def merge_snapshot(
    state: ChatState,
    node: int,
    members: Iterable[tuple[int, str, str]],
    topics: Iterable[tuple[str, str]],
) -> list[Effect]:
    """The complete state of server ``node``: repairs the directory."""
    out: list[Effect] = []
    seen: set[int] = set()
    for cid, nick, room in members:
        seen.add(cid)
        merge_presence(state, cid, nick, room, node, out)
    known = state.remote.nodes.get(node)
    if known is not None:
        for r in [r for cid, r in known.items() if cid not in seen]:
            state.forget_remote(r, "left", out)
    for name, topic in topics:
        where = state.rooms.get(name)
        if where is not None and where.topic is None:
            where.topic = escape_controls(topic[:MAX_TOPIC])
    return out


def merge_node_lost(state: ChatState, node: int, reason: str) -> list[Effect]:
    """Every client of server ``node`` is gone."""
    known = state.remote.nodes.get(node)
    if not known:
        return []
    why = escape_controls(reason)
    out: list[Effect] = []
    count = len(known)
    for r in list(known.values()):
        state.forget_remote(r, why, out)
    out.append(Log(f"{count} client(s) of server {node} gone ({why})"))
    return out

"""The chat service as a pure state machine: calls in, effects out.

:class:`ChatCore` knows the clients (by an integer id the I/O layer chooses), their nicks,
the rooms and each room's topic and recent history. Every method takes plain values and
returns a list of *effects* for the I/O layer to carry out, in order:

* :class:`Send` — one line to one client;
* :class:`ToRoom` — one line to every member of a room except one;
* :class:`Close` — end a client's connection once the lines already queued are written;
* :class:`Log` — a lifecycle line for the server log.

A core created with ``cluster=True`` (a chat spread over several servers through a bus) also
returns what the other servers must learn, for the I/O layer to publish: :class:`Presence`
(a local client connected, renamed or changed room), :class:`Gone` (it left), :class:`Said`
(a room line) and :class:`TopicSet`. What the other servers publish comes back in through the
``remote_*`` methods, which keep a *directory* of the clients of other servers (the
:class:`~twoway.sansio.directory.Directory`, in its own module): they count in
``/who``, ``/rooms`` and ``/peers``, hold their nicks, receive ``/msg`` (a :class:`Send` whose
``cid`` :meth:`ChatCore.is_remote` is for the bus to carry) and keep rooms, with their history,
alive. With no remote client the behaviour is exactly that of a single server.

The core does no I/O, keeps no clock (time is passed in) and never raises because of what
a client sent: bad input becomes an ``error: ...`` line to that client. Effects hold only
ints, strings and ``None``, so they can be serialised onto a bus between processes.

The state is updated *before* the effects are returned: when the I/O layer delivers a
``ToRoom`` it sees the room's membership after the call (a client that just left is no
longer in it, one that just joined is, hence ``exclude``). Effect text never contains a line
terminator (the I/O layer appends the client's own) nor any control character except TAB:
all text that came from a client went through :func:`~twoway.sansio.text.escape_controls`.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from twoway.sansio.chat.history import HistoryStore, RoomHistory
from twoway.sansio.directory import Directory, Remote
from twoway.sansio.text import escape_controls

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_MAX_NAMES",
    "DEFAULT_MAX_ROOMS",
    "MAX_TOPIC",
    "NOTICE",
    "ChatCore",
    "ChatCounters",
    "Close",
    "Effect",
    "Gone",
    "Log",
    "Presence",
    "Said",
    "Send",
    "ToRoom",
    "TopicSet",
]

# 20 lines: enough to see what a conversation is about when you join, short enough to read
# on one screen. Memory is bounded by rooms * history * line length, and by:
#: The memory all rooms' history may hold (see history.HistoryStore): 4 MiB is 20 lines of
#: 200 bytes in a thousand rooms, and a few dozen rooms flooded with 64 KiB lines.
DEFAULT_HISTORY_BYTES = 4 * 1024 * 1024
#: Rooms that may exist at once (the lobby included): a room is cheap, a million are not.
#: Rooms of other servers' clients are not refused (each server caps its own clients').
DEFAULT_MAX_ROOMS = 1000
#: The longest topic, in characters (IRC servers allow 300-400).
MAX_TOPIC = 400
DEFAULT_HISTORY = 20
#: Rooms whose backfilled history is kept before they exist here (see ChatCore.backfill).
MAX_BACKFILL_ROOMS = 1000
# Names listed in one "peers here" or /who line: 100 short nicks make a line of about a
# kilobyte; the full list of a 10 000-person lobby would be a 100 KB line per join.
DEFAULT_MAX_NAMES = 100
#: What every line from the server itself starts with (joins, departures, nick and topic
#: changes, answers to commands): ircII's "***". No client can produce it: a message reads
#: ``nick: text`` and a /me action ``* nick text``, and a nick never contains ``*``.
NOTICE = "*** "
# Nicks a client may not take: a message from "error" would read like a server error line.
_RESERVED_NICKS = frozenset({"error"})
# Bad input quoted back in an error message is cut to this many characters.
_QUOTE_MAX = 40


@dataclass(frozen=True, slots=True)
class Send:
    """Send one line, ``text``, to the client ``cid``."""

    cid: int
    text: str


@dataclass(frozen=True, slots=True)
class ToRoom:
    """Send one line, ``text``, to every member of ``room`` except ``exclude`` (if not None)."""

    room: str
    text: str
    exclude: int | None


@dataclass(frozen=True, slots=True)
class Close:
    """End ``cid``'s connection after the lines already queued for it; ``reason`` is for logs.

    The core has already forgotten ``cid``: do not call :meth:`ChatCore.disconnect` for it
    (doing so is harmless, it returns no effects).
    """

    cid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """A lifecycle line for the server log: joins, departures, nick changes."""

    message: str


@dataclass(frozen=True, slots=True)
class Presence:
    """For the bus: the local client ``cid`` is now ``nick`` in ``room``.

    Returned (by a ``cluster=True`` core only) after the client connected, changed its nick,
    changed room or lost a nick collision: other servers pass it to
    :meth:`ChatCore.remote_presence`.
    """

    cid: int
    nick: str
    room: str


@dataclass(frozen=True, slots=True)
class Gone:
    """For the bus: the local client ``cid`` left; ``reason`` is what its room was told
    (``quit``, ``closed``, ``idle``...). Other servers pass it to :meth:`ChatCore.remote_gone`."""

    cid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Said:
    """For the bus: the line ``text`` was said in ``room`` (a message or a ``/me``, exactly
    as the room reads it). Other servers pass it to :meth:`ChatCore.remote_message`."""

    room: str
    text: str


@dataclass(frozen=True, slots=True)
class TopicSet:
    """For the bus: ``nick`` set the topic of ``room`` to ``topic``. Other servers pass it to
    :meth:`ChatCore.remote_topic`."""

    room: str
    topic: str
    nick: str


Effect = Send | ToRoom | Close | Log | Presence | Gone | Said | TopicSet


@dataclass(slots=True)
class ChatCounters:
    """Running totals, for metrics. ``joins - parts`` is always the number of clients."""

    lines_in: int = 0  # lines received from connected clients
    messages: int = 0  # room messages and /me actions broadcast
    private_messages: int = 0  # /msg delivered
    commands: int = 0  # command lines, bare "quit" included (valid or not)
    errors: int = 0  # "error: ..." lines sent
    joins: int = 0  # a client entered a room (connecting included)
    parts: int = 0  # a client left a room (disconnecting included)
    nick_changes: int = 0
    remote_messages: int = 0  # room lines from other servers (through the bus)


_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_COMMAND = re.compile(r"/(\S*)\s*(.*)", re.DOTALL)
_EMPTY: frozenset[int] = frozenset()

_HELP = (
    "*** commands:",
    "*** /nick NAME        change your nick (1-32 letters, digits, - or _)",
    "*** /join ROOM        go to a room, creating it if needed (the # is optional)",
    "*** /part             go back to the lobby",
    "*** /rooms            list the rooms and how many people are in each",
    "*** /who              list the people in this room",
    "*** /msg NICK text    send a private message",
    "*** /me action        describe what you are doing",
    "*** /topic [text]     show, or set, the topic of this room",
    "*** /peers            count the other people (on every server of the chat)",
    "*** /quit [reason]    leave (typing quit does the same)",
    "*** //text            send a message that starts with /",
    "*** /help             this list",
)


class _Room:
    __slots__ = ("history", "members", "name", "names", "remote", "topic")

    def __init__(self, name: str, history: RoomHistory | None) -> None:
        self.name = name
        # cid -> client, in join order. The keys are what members() exposes.
        self.members: dict[int, _Client] = {}
        # cid -> member on another server (the directory): counted, never delivered to.
        self.remote: dict[int, Remote] = {}
        # (lower-case nick, nick, cid) of everybody in the room, local and remote, sorted:
        # the "peers here" line of each join lists the first names without sorting the
        # room (a burst of joins would cost the square of the room's size).
        self.names: list[tuple[str, str, int]] = []
        self.history = history
        self.topic: str | None = None

    def add_name(self, who: _Client | Remote) -> None:
        """``who`` (just put in ``members`` or ``remote``) is listed by its nick."""
        bisect.insort(self.names, (who.key, who.nick, who.cid))

    def remove_name(self, who: _Client | Remote) -> None:
        """``who`` (leaving, or about to be renamed) is no longer listed."""
        names = self.names
        del names[bisect.bisect_left(names, (who.key, who.nick, who.cid))]

    def name_list(self, limit: int | None) -> str:
        """``a, b, c`` sorted case-insensitively, at most ``limit`` names then ``and N
        more``."""
        names = self.names
        if limit is None or len(names) <= limit:
            return ", ".join([n for _, n, _ in names])
        shown = ", ".join([n for _, n, _ in names[:limit]])
        return f"{shown}, and {len(names) - limit} more"


class _Client:
    __slots__ = ("address", "cid", "connected_at", "guest", "key", "nick", "room")

    def __init__(self, cid: int, nick: str, guest: int, room: _Room, now: float) -> None:
        self.cid = cid
        self.nick = nick
        self.key = nick.lower()  # nicks are ASCII, so lower() is the case-insensitive key
        self.guest = guest  # the guest number this connection holds until it leaves
        self.room = room
        self.address = ""
        self.connected_at = now


def _quote(s: str) -> str:
    """Client input quoted in an error: cut to a sensible length, then made safe."""
    if len(s) > _QUOTE_MAX:
        s = s[:_QUOTE_MAX] + "..."
    return '"' + escape_controls(s) + '"'


def _guest_number(key: str) -> int | None:
    """The N of a nick key spelled exactly ``guestN`` (no leading zero), else None."""
    digits = key[5:]
    if key.startswith("guest") and digits.isdigit() and digits.isascii() and digits[0] != "0":
        return int(digits)
    return None


def _room_key(name: str) -> str | None:
    """The room name a remote server sent, as this core spells it (``#lower``); None if
    it is not a valid name."""
    bare = name[1:] if name[:1] == "#" else name
    return "#" + bare.lower() if _NAME.fullmatch(bare) else None


class ChatCore:
    """The state of one chat server: clients, nicks, rooms, topics and history.

    Keyword arguments: ``history`` is how many messages each room keeps and replays to
    people who join it (0 disables); ``motd`` is shown at connection, one ``* `` line per
    line; ``server_name`` appears in the welcome line; ``lobby`` is the room everybody
    starts in, which always exists (``#`` optional, case-insensitive); ``max_names`` caps
    the names listed in one line (the peers line, ``/who``, ``/rooms``; None lists all);
    ``cluster`` adds the effects other servers must learn (:class:`Presence`, :class:`Gone`,
    :class:`Said`, :class:`TopicSet`) to what the methods return.

    Client ids are chosen by the caller and must be unique among connected clients.
    Methods given an id that is not connected return ``[]``. Methods never raise because
    of client input; invalid arguments to the constructor raise :class:`ValueError`.
    The core is not thread-safe: call it from one thread (the event loop).
    """

    __slots__ = (
        "_backfill",
        "_clients",
        "_cluster",
        "_free_guests",
        "_histories",
        "_history",
        "_lobby",
        "_max_names",
        "_max_rooms",
        "_motd",
        "_next_guest",
        "_nicks",
        "_parked_guests",
        "_remote",
        "_rooms",
        "_welcome",
        "counters",
    )

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        motd: str | None = None,
        server_name: str = "twoway",
        lobby: str = "#lobby",
        max_names: int | None = DEFAULT_MAX_NAMES,
        cluster: bool = False,
        history_bytes: int | None = DEFAULT_HISTORY_BYTES,
        max_rooms: int | None = DEFAULT_MAX_ROOMS,
    ) -> None:
        self._histories = HistoryStore(history, history_bytes)  # checks both values
        if max_rooms is not None and max_rooms < 1:
            raise ValueError(f"max_rooms must be >= 1 or None (got {max_rooms})")
        if max_names is not None and max_names < 1:
            raise ValueError(f"max_names must be >= 1 or None (got {max_names})")
        lobby_name = lobby.removeprefix("#")
        if not _NAME.fullmatch(lobby_name):
            raise ValueError(f"invalid lobby room name {lobby!r}")
        self._history = history
        self._max_rooms = max_rooms
        self._max_names = max_names
        self._welcome = f"*** welcome to {escape_controls(server_name)} chat"
        self._motd = tuple(f"*** {escape_controls(line)}" for line in (motd or "").splitlines())
        self._lobby = _Room("#" + lobby_name.lower(), self._histories.new())
        self._rooms: dict[str, _Room] = {self._lobby.name: self._lobby}
        # History from before this server joined, for rooms that do not exist here yet.
        self._backfill: dict[str, RoomHistory] = {}
        self._clients: dict[int, _Client] = {}
        self._nicks: dict[str, _Client] = {}  # lower-case nick -> client
        # Guest numbers: every number below _next_guest is held by a connected client, or
        # in the _free_guests heap, or parked because someone chose that guestN as a nick
        # (it goes back to the heap when that nick is released). Connecting is O(log n).
        self._next_guest = 1
        self._free_guests: list[int] = []
        self._parked_guests: set[int] = set()
        self._cluster = cluster
        self._remote = Directory()
        self.counters = ChatCounters()

    # -- queries ---------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """How many clients are connected."""
        return len(self._clients)

    @property
    def cluster(self) -> bool:
        """Whether the methods return the effects other servers must learn (``cluster=True``)."""
        return self._cluster

    @property
    def lobby(self) -> str:
        """The lobby's room name, e.g. ``#lobby``."""
        return self._lobby.name

    def members(self, room: str) -> Collection[int]:
        """The ids of the clients in ``room`` (an exact room name as found in effects).

        This is the live collection, not a copy: do not mutate it, and copy it first if
        you call into the core while iterating (a delivery failure that disconnects a
        client, for instance). An unknown room gives an empty collection.
        """
        r = self._rooms.get(room)
        return _EMPTY if r is None else r.members.keys()

    def rooms(self) -> list[str]:
        """The names of the existing rooms, sorted."""
        return sorted(self._rooms)

    def history(self, room: str) -> list[str]:
        """The lines ``room`` replays to people who join it, oldest first (``[]`` if none)."""
        r = self._rooms.get(room)
        return [] if r is None or r.history is None else list(r.history)

    @property
    def history_bytes(self) -> int:
        """What all the history kept costs against ``history_bytes`` (see
        :func:`~twoway.sansio.chat.history.line_cost`), backfill waiting for its room
        included."""
        return self._histories.used

    def nick(self, cid: int) -> str | None:
        """``cid``'s nick, or None if it is not connected."""
        c = self._clients.get(cid)
        return None if c is None else c.nick

    def room_of(self, cid: int) -> str | None:
        """The name of the room ``cid`` is in, or None if it is not connected."""
        c = self._clients.get(cid)
        return None if c is None else c.room.name

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self, cid: int, now: float, address: str = "") -> list[Effect]:
        """A client connected: give it a guest nick, put it in the lobby, welcome it.

        ``address`` is only used in the log line. Raises :class:`ValueError` if ``cid`` is
        already connected (a bug in the caller, not the client's doing).
        """
        if cid in self._clients:
            raise ValueError(f"client id {cid} is already connected")
        guest = self._take_guest_number()
        client = _Client(cid, f"guest{guest}", guest, self._lobby, now)
        client.address = address
        self._clients[cid] = client
        self._nicks[client.key] = client
        out: list[Effect] = [Send(cid, self._welcome)]
        out.extend(Send(cid, line) for line in self._motd)
        out.append(Send(cid, f"*** you are {client.nick}"))
        self._enter(client, self._lobby, out)
        out.append(Send(cid, "*** type /help for commands"))
        source = f" from {escape_controls(address)}" if address else ""
        out.append(Log(f"{client.nick} joined {self._lobby.name}{source}"))
        if self._cluster:
            out.append(Presence(cid, client.nick, self._lobby.name))
        return out

    def disconnect(self, cid: int, reason: str) -> list[Effect]:
        """The client is gone (``reason``: "closed", "idle", "too slow", "flooding"...).

        Tells the room and forgets the client. Idempotent: an id that is not connected
        (never was, already disconnected, or closed by the core itself) gives ``[]``.
        """
        client = self._clients.get(cid)
        if client is None:
            return []
        out: list[Effect] = []
        self._depart(client, escape_controls(reason), out)
        return out

    def line(self, cid: int, text: str, now: float) -> list[Effect]:
        """Handle one line from ``cid``: ``text`` is decoded, without its terminator, raw.

        A plain line is broadcast to the others in the room as ``nick: text``; a line
        starting with ``/`` is a command (``//`` escapes a leading slash); ``quit`` alone,
        in any case, leaves. An empty line is ignored. ``now`` is not used yet: it is part of
        the signature so that time-based rules can move into the core without changing
        callers.
        """
        client = self._clients.get(cid)
        if client is None:
            return []
        counters = self.counters
        counters.lines_in += 1
        if not text:
            return []
        # The hot path: a plain message. Keep it to one escape, one format, one append.
        if text[0] == "/":
            if text[1:2] != "/":
                counters.commands += 1
                return self._command(client, text)
            text = text[1:]
        elif len(text) == 4 and text.lower() == "quit":
            counters.commands += 1
            return self._quit(client, "")
        room = client.room
        msg = f"{client.nick}: {escape_controls(text)}"
        if room.history is not None:
            self._histories.append(room.history, msg)
        counters.messages += 1
        if self._cluster:
            return [ToRoom(room.name, msg, cid), Said(room.name, msg)]
        return [ToRoom(room.name, msg, cid)]

    # -- the directory of remote members ---------------------------------------------------
    #
    # Each server is authoritative for its own clients; the others learn about them from the
    # bus and keep them here. Remote members are counted and named like local ones but never
    # delivered to (members() stays local): their own server does that. Room lines, joins
    # and departures of remote members are announced to the local members only, with
    # ``exclude=None``. Remote input is trusted to be well-formed but still checked: a
    # malformed value (an invalid nick or room name, a remote id that is local) is ignored.

    def is_remote(self, cid: int) -> bool:
        """Whether ``cid`` is a client of another server (a :class:`Send` to it goes to the
        bus)."""
        return cid in self._remote.cids

    @property
    def remote_count(self) -> int:
        """How many clients of other servers the directory holds."""
        return len(self._remote.cids)

    def local_presence(self) -> list[tuple[int, str, str]]:
        """``(cid, nick, room)`` of every local client: the snapshot other servers need (see
        :meth:`remote_snapshot`)."""
        return [(c.cid, c.nick, c.room.name) for c in self._clients.values()]

    def local_topics(self) -> list[tuple[str, str]]:
        """``(room, topic)`` of the rooms with local members and a topic."""
        return [
            (r.name, r.topic) for r in self._rooms.values() if r.members and r.topic is not None
        ]

    def local_rooms(self) -> list[str]:
        """The names of the rooms that have local members, sorted."""
        return sorted(r.name for r in self._rooms.values() if r.members)

    def notice(self, text: str, room: str | None = None) -> list[Effect]:
        """A ``text`` line to the local members of ``room``, or of every room if None (a
        server notice: missed messages, an unreachable bus...)."""
        rooms = self.local_rooms() if room is None else [room]
        return [ToRoom(name, text, None) for name in rooms if self.members(name)]

    def remote_presence(self, cid: int, nick: str, room: str, node: int) -> list[Effect]:
        """Client ``cid`` of server ``node`` is now ``nick`` in ``room`` (a :class:`Presence`
        that server published).

        A new client is announced ``* nick joined #room``; a known one that changed nick or
        room as a local client would be (``is now known as``, ``left``, ``joined``); a repeat
        of what is known returns ``[]``. Idempotent for the same values.

        If the nick is held by a local client, the lower id keeps it (every server applies the
        same rule, so they agree without talking): when the remote id is lower, the local
        client is renamed to a guest nick, told ``* nick collision: you are now guestN``, and
        a :class:`Presence` is returned for the bus (``cluster=True``).
        """
        out: list[Effect] = []
        self._remote_presence(cid, nick, room, node, out)
        return out

    def remote_gone(self, cid: int, reason: str) -> list[Effect]:
        """Client ``cid`` of another server left: ``* nick left #room (reason)`` to the local
        members of its room. Unknown ids give ``[]`` (idempotent)."""
        r = self._remote.cids.get(cid)
        if r is None:
            return []
        out: list[Effect] = []
        self._forget_remote(r, escape_controls(reason), out)
        return out

    def remote_message(self, room: str, text: str) -> list[Effect]:
        """A line said in ``room`` on another server (a :class:`Said`): kept in the room's
        history, delivered to the local members. Ignored if the room does not exist here
        (nobody in it that this server knows of)."""
        r = self._rooms.get(room)
        if r is None or text.startswith(NOTICE):  # a room line is never a server notice
            return []
        text = escape_controls(text)
        if r.history is not None:
            self._histories.append(r.history, text)
        self.counters.remote_messages += 1
        return [ToRoom(room, text, None)]

    def backfill(self, lines: Iterable[tuple[str, str]]) -> None:
        """Lines said on other servers before this one joined the chat, oldest first, as
        ``(room, text)``: they go into the rooms' history, before what is there already, and
        are delivered to nobody. Lines for rooms that do not exist here yet are kept (at most
        ``history`` per room, for at most :data:`MAX_BACKFILL_ROOMS` rooms) until the room
        is created."""
        if not self._history:
            return
        per_room: dict[str, list[str]] = {}
        for room, text in lines:
            per_room.setdefault(room, []).append(escape_controls(text))
        store = self._histories
        for name, texts in per_room.items():
            r = self._rooms.get(name)
            if r is not None:
                assert r.history is not None
                store.prepend(r.history, texts)
            elif name in self._backfill or len(self._backfill) < MAX_BACKFILL_ROOMS:
                kept = self._backfill.get(name)
                if kept is None:
                    kept = store.new()
                    assert kept is not None  # history is on (checked above)
                    self._backfill[name] = kept
                for text in texts:
                    store.append(kept, text)

    def remote_topic(self, room: str, topic: str, nick: str) -> list[Effect]:
        """``nick`` on another server set the topic of ``room`` (a :class:`TopicSet`)."""
        r = self._rooms.get(room)
        if r is None:
            return []
        r.topic = escape_controls(topic[:MAX_TOPIC])
        return [ToRoom(room, f"*** {escape_controls(nick)} set the topic: {r.topic}", None)]

    def remote_snapshot(
        self,
        node: int,
        members: Iterable[tuple[int, str, str]],
        topics: Iterable[tuple[str, str]] = (),
    ) -> list[Effect]:
        """The complete state of server ``node`` (what its :meth:`local_presence` and
        :meth:`local_topics` returned): its clients not in ``members`` are gone
        (``* nick left #room (left)``), the others are applied as by :meth:`remote_presence`;
        a topic is taken for a room that has none here. Repairs the directory after anything
        was missed."""
        out: list[Effect] = []
        seen: set[int] = set()
        for cid, nick, room in members:
            seen.add(cid)
            self._remote_presence(cid, nick, room, node, out)
        known = self._remote.nodes.get(node)
        if known is not None:
            for r in [r for cid, r in known.items() if cid not in seen]:
                self._forget_remote(r, "left", out)
        for name, topic in topics:
            where = self._rooms.get(name)
            if where is not None and where.topic is None:
                where.topic = escape_controls(topic[:MAX_TOPIC])
        return out

    def drop_node(self, node: int, reason: str) -> list[Effect]:
        """Every client of server ``node`` is gone (``reason``: ``server lost``...): each
        room is told, as by :meth:`remote_gone`, and one :class:`Log` line sums it up."""
        known = self._remote.nodes.get(node)
        if not known:
            return []
        why = escape_controls(reason)
        out: list[Effect] = []
        count = len(known)
        for r in list(known.values()):
            self._forget_remote(r, why, out)
        out.append(Log(f"{count} client(s) of server {node} gone ({why})"))
        return out

    def _remote_presence(
        self, cid: int, nick: str, room: str, node: int, out: list[Effect]
    ) -> None:
        name = _room_key(room)
        if name is None or cid in self._clients or not _NAME.fullmatch(nick):
            return
        directory = self._remote
        r = directory.cids.get(cid)
        if r is None:
            r = directory.add(cid, nick, node, self._room(name))
            r.room.remote[cid] = r
            r.room.add_name(r)
            out.append(ToRoom(name, f"*** {nick} joined {name}", None))
        else:
            if r.node != node:  # not expected: ids embed their server; follow the latest word
                directory.move_node(r, node)
            if nick != r.nick:
                old, old_key = r.nick, r.key
                r.room.remove_name(r)
                if directory.rename(r, nick):
                    self._remote_nick_freed(old_key)
                r.room.add_name(r)
                out.append(ToRoom(r.room.name, f"*** {old} is now known as {nick}", None))
            if name != r.room.name:
                old_room = r.room
                del old_room.remote[cid]
                old_room.remove_name(r)
                self._drop_if_empty(old_room)
                out.append(ToRoom(old_room.name, f"*** {nick} left {old_room.name}", None))
                r.room = self._room(name)
                r.room.remote[cid] = r
                r.room.add_name(r)
                out.append(ToRoom(name, f"*** {nick} joined {name}", None))
        local = self._nicks.get(r.key)
        if local is not None and cid < local.cid:
            self._lose_nick(local, out)

    def _lose_nick(self, client: _Client, out: list[Effect]) -> None:
        """``client``'s nick went to a client of another server with a lower id."""
        old = client.nick
        nick = f"guest{client.guest}"
        if nick in self._nicks or nick in self._remote.nicks:
            n = self._take_guest_number()
            self._release_guest_number(client.guest)
            client.guest = n
            nick = f"guest{n}"
        del self._nicks[client.key]
        self._release_guest_nick(client.key)
        client.room.remove_name(client)
        client.nick, client.key = nick, nick
        client.room.add_name(client)
        self._nicks[nick] = client
        self.counters.nick_changes += 1
        room = client.room.name
        out.append(Send(client.cid, f"*** nick collision: you are now {nick}"))
        out.append(ToRoom(room, f"*** {old} is now known as {nick}", client.cid))
        out.append(Log(f"nick collision: {old} is now known as {nick}"))
        if self._cluster:
            out.append(Presence(client.cid, nick, room))

    def _forget_remote(self, r: Remote, why: str, out: list[Effect]) -> None:
        if self._remote.remove(r):
            self._remote_nick_freed(r.key)
        room = r.room
        del room.remote[r.cid]
        room.remove_name(r)
        self._drop_if_empty(room)
        out.append(ToRoom(room.name, f"*** {r.nick} left {room.name} ({why})", None))

    def _remote_nick_freed(self, key: str) -> None:
        """No client of another server holds the nick ``key`` any more: unless a local client
        does, a guest number that nick parked can be handed out again."""
        if key not in self._nicks:
            self._release_guest_nick(key)

    def _room(self, name: str) -> _Room:
        """The room called ``name`` (already valid and lower-case), created if needed (with
        the history backfilled for it, if any)."""
        room = self._rooms.get(name)
        if room is None:
            early = self._backfill.pop(name, None)  # already counted in the budget
            if early is None:
                early = self._histories.new()
            room = self._rooms[name] = _Room(name, early)
        return room

    # -- commands --------------------------------------------------------------------------

    def _command(self, client: _Client, text: str) -> list[Effect]:
        m = _COMMAND.fullmatch(text)
        assert m is not None  # the pattern matches every string that starts with "/"
        word, arg = m.group(1), m.group(2).strip()
        handler = _HANDLERS.get(word.lower())
        if handler is None:
            return self._error(client, f"unknown command {_quote('/' + word)} (type /help)")
        return handler(self, client, arg)

    def _cmd_help(self, client: _Client, arg: str) -> list[Effect]:
        return [Send(client.cid, line) for line in _HELP]

    def _cmd_quit(self, client: _Client, arg: str) -> list[Effect]:
        return self._quit(client, arg)

    def _cmd_nick(self, client: _Client, arg: str) -> list[Effect]:
        if not arg:
            return self._error(client, "usage: /nick NAME")
        if not _NAME.fullmatch(arg):
            return self._error(client, f"invalid nick {_quote(arg)} (1-32 letters, digits, - or _)")
        if arg == client.nick:
            return self._error(client, f"you are already known as {arg}")
        key = arg.lower()
        if key in _RESERVED_NICKS:
            return self._error(client, f"nick {_quote(arg)} is reserved")
        holder = self._nicks.get(key)
        if (holder is not None and holder is not client) or key in self._remote.nicks:
            return self._error(client, f"nick {_quote(arg)} is already taken")
        old = client.nick
        del self._nicks[client.key]
        self._release_guest_nick(client.key)
        client.room.remove_name(client)
        client.nick, client.key = arg, key
        client.room.add_name(client)
        self._nicks[key] = client
        self.counters.nick_changes += 1
        text = f"*** {old} is now known as {arg}"
        out: list[Effect] = [ToRoom(client.room.name, text, None)]
        out.append(Log(f"{old} is now known as {arg}"))
        if self._cluster:
            out.append(Presence(client.cid, arg, client.room.name))
        return out

    def _cmd_join(self, client: _Client, arg: str) -> list[Effect]:
        if not arg:
            return self._error(client, "usage: /join ROOM")
        name = arg[1:] if arg[0] == "#" else arg
        if not _NAME.fullmatch(name):
            return self._error(client, f"invalid room name {_quote(arg)}")
        key = "#" + name.lower()
        limit = self._max_rooms
        if limit is not None and key not in self._rooms and len(self._rooms) >= limit:
            return self._error(client, f"too many rooms (max {limit}): join one of /rooms")
        return self._move(client, key)

    def _cmd_part(self, client: _Client, arg: str) -> list[Effect]:
        return self._move(client, self._lobby.name)

    def _cmd_rooms(self, client: _Client, arg: str) -> list[Effect]:
        rooms = self._rooms
        limit = self._max_names
        names = sorted(rooms)
        listed = ", ".join(
            f"{n} ({len(rooms[n].members) + len(rooms[n].remote)})" for n in names[:limit]
        )
        if limit is not None and len(names) > limit:
            listed += f", and {len(names) - limit} more"
        return [Send(client.cid, f"*** rooms: {listed}")]

    def _cmd_who(self, client: _Client, arg: str) -> list[Effect]:
        room = client.room
        names = room.name_list(self._max_names)
        return [Send(client.cid, f"*** in {room.name}: {names}")]

    def _cmd_msg(self, client: _Client, arg: str) -> list[Effect]:
        parts = arg.split(None, 1)
        if len(parts) < 2:
            return self._error(client, "usage: /msg NICK text")
        target_nick, message = parts
        key = target_nick.lower() if target_nick.isascii() else ""
        target: _Client | Remote | None = self._nicks.get(key)
        if target is None:
            holders = self._remote.nicks.get(key)
            if holders is None:
                return self._error(client, f"no such nick {_quote(target_nick)}")
            target = holders[0]  # a Send the bus carries to the server of that client
        message = escape_controls(message)
        self.counters.private_messages += 1
        return [
            Send(target.cid, f"[msg from {client.nick}] {message}"),
            Send(client.cid, f"[msg to {target.nick}] {message}"),
        ]

    def _cmd_me(self, client: _Client, arg: str) -> list[Effect]:
        if not arg:
            return self._error(client, "usage: /me action")
        room = client.room
        msg = f"* {client.nick} {escape_controls(arg)}"
        if room.history is not None:
            self._histories.append(room.history, msg)
        self.counters.messages += 1
        if self._cluster:
            return [ToRoom(room.name, msg, client.cid), Said(room.name, msg)]
        return [ToRoom(room.name, msg, client.cid)]

    def _cmd_topic(self, client: _Client, arg: str) -> list[Effect]:
        room = client.room
        if not arg:
            if room.topic is None:
                return [Send(client.cid, f"*** no topic set for {room.name}")]
            return [Send(client.cid, f"*** topic for {room.name}: {room.topic}")]
        if len(arg) > MAX_TOPIC:
            return self._error(client, f"topic too long (max {MAX_TOPIC} characters)")
        room.topic = escape_controls(arg)
        text = f"*** {client.nick} set the topic: {room.topic}"
        out: list[Effect] = [ToRoom(room.name, text, None)]
        out.append(Log(f"{client.nick} set the topic of {room.name}"))
        if self._cluster:
            out.append(TopicSet(room.name, room.topic, client.nick))
        return out

    def _cmd_peers(self, client: _Client, arg: str) -> list[Effect]:
        local = len(self._clients) - 1
        n = local + len(self._remote.cids)
        text = f"You have {n} peer{'' if n == 1 else 's'}"
        servers = len(self._remote.nodes)  # nodes with at least one member, besides this one
        if not servers:
            return [Send(client.cid, text + " on this server")]
        return [Send(client.cid, f"{text} on {servers + 1} servers ({local} on this one)")]

    # -- helpers ---------------------------------------------------------------------------

    def _error(self, client: _Client, message: str) -> list[Effect]:
        self.counters.errors += 1
        return [Send(client.cid, "error: " + message)]

    def _quit(self, client: _Client, reason: str) -> list[Effect]:
        out: list[Effect] = [Send(client.cid, "Bye Bye!")]
        self._depart(client, f"quit: {escape_controls(reason)}" if reason else "quit", out)
        out.append(Close(client.cid, "quit"))
        return out

    def _depart(self, client: _Client, why: str, out: list[Effect]) -> None:
        """Forget ``client``: tell its room ``* nick left #room (why)`` and log it."""
        room = client.room
        self._leave_room(client)
        del self._clients[client.cid]
        del self._nicks[client.key]
        self._release_guest_nick(client.key)
        self._release_guest_number(client.guest)
        text = f"{client.nick} left {room.name} ({why})"
        # Sent even when nobody is left locally: with a bus, the room may have members in
        # other processes.
        out.append(ToRoom(room.name, "*** " + text, client.cid))
        out.append(Log(text))
        if self._cluster:
            out.append(Gone(client.cid, why))

    def _move(self, client: _Client, name: str) -> list[Effect]:
        old = client.room
        if name == old.name:
            return self._error(client, f"you are already in {name}")
        self._leave_room(client)
        new = self._room(name)
        out: list[Effect] = [ToRoom(old.name, f"*** {client.nick} left {old.name}", client.cid)]
        self._enter(client, new, out)
        out.append(Log(f"{client.nick} left {old.name} for {new.name}"))
        if self._cluster:
            out.append(Presence(client.cid, client.nick, new.name))
        return out

    def _leave_room(self, client: _Client) -> None:
        room = client.room
        del room.members[client.cid]
        room.remove_name(client)
        self.counters.parts += 1
        self._drop_if_empty(room)

    def _drop_if_empty(self, room: _Room) -> None:
        if not room.members and not room.remote and room is not self._lobby:
            # Nobody to keep it for, here or on another server: the room goes, with its
            # history and topic.
            del self._rooms[room.name]
            self._histories.drop(room.history)

    def _enter(self, client: _Client, room: _Room, out: list[Effect]) -> None:
        """Put ``client`` in ``room``: tell the room, then show the client where it is."""
        cid = client.cid
        others = room.members
        count = len(others) + len(room.remote)
        if count == 0:
            peers = "*** you are alone here"
        else:
            names = room.name_list(self._max_names)
            peers = f"*** {count} peer{'' if count == 1 else 's'} here: {names}"
        others[cid] = client
        room.add_name(client)
        client.room = room
        self.counters.joins += 1
        out.append(ToRoom(room.name, f"*** {client.nick} joined {room.name}", cid))
        out.append(Send(cid, f"*** you are in {room.name}"))
        if room.topic is not None:
            out.append(Send(cid, f"*** topic: {room.topic}"))
        out.append(Send(cid, peers))
        if room.history:
            out.extend(Send(cid, "[history] " + text) for text in room.history)

    def _take_guest_number(self) -> int:
        nicks = self._nicks
        while True:
            if self._free_guests:
                n = heapq.heappop(self._free_guests)
            else:
                n = self._next_guest
                self._next_guest += 1
            nick = f"guest{n}"
            if nick not in nicks and nick not in self._remote.nicks:
                return n
            # Someone (here or on another server) is called guestN: skip N until that nick
            # is released.
            self._parked_guests.add(n)

    def _release_guest_number(self, n: int) -> None:
        heapq.heappush(self._free_guests, n)

    def _release_guest_nick(self, key: str) -> None:
        n = _guest_number(key)
        if n is not None and n in self._parked_guests:
            self._parked_guests.discard(n)
            heapq.heappush(self._free_guests, n)


_HANDLERS = {
    "help": ChatCore._cmd_help,
    "quit": ChatCore._cmd_quit,
    "nick": ChatCore._cmd_nick,
    "join": ChatCore._cmd_join,
    "part": ChatCore._cmd_part,
    "rooms": ChatCore._cmd_rooms,
    "who": ChatCore._cmd_who,
    "msg": ChatCore._cmd_msg,
    "me": ChatCore._cmd_me,
    "topic": ChatCore._cmd_topic,
    "peers": ChatCore._cmd_peers,
}

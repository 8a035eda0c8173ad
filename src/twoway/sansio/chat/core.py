"""The chat service as a pure state machine: calls in, effects out.

:class:`ChatCore` is the facade the I/O layer uses. It knows the clients (by an integer id
the I/O layer chooses), their nicks, the rooms and each room's topic and recent history.
Every method takes plain values and returns a list of effects
(:mod:`~twoway.sansio.chat.effects`) for the I/O layer to carry out, in order.

A core created with ``cluster=True`` (a chat spread over several servers through a bus) also
returns what the other servers must learn: :class:`Presence` (a local client connected,
renamed or changed room), :class:`Gone` (it left), :class:`Said` (a room line) and
:class:`TopicSet`. What the other servers publish comes back in through the ``remote_*``
methods, which keep a *directory* of the clients of other servers: they count in ``/who``,
``/rooms`` and ``/peers``, hold their nicks, receive ``/msg`` (a :class:`Send` whose ``cid``
:meth:`ChatCore.is_remote` is for the bus to carry) and keep rooms, with their history,
alive. With no remote client the behaviour is exactly that of a single server.

The core does no I/O, keeps no clock (time is passed in) and never raises because of what
a client sent: bad input becomes an ``error: ...`` line to that client. The state is updated
*before* the effects are returned: when the I/O layer delivers a ``ToRoom`` it sees the
room's membership after the call (a client that just left is no longer in it, one that just
joined is, hence ``exclude``). All text that came from a client went through
:func:`~twoway.sansio.text.escape_controls`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from twoway.sansio.chat.cluster import (
    merge_backfill,
    merge_gone,
    merge_message,
    merge_node_lost,
    merge_presence,
    merge_snapshot,
    merge_topic,
)
from twoway.sansio.chat.commands import handle_line
from twoway.sansio.chat.effects import ChatCounters, Effect, Log, Presence, Send, ToRoom
from twoway.sansio.chat.history import HistoryStore
from twoway.sansio.chat.memory import Memory
from twoway.sansio.chat.recall import depart_resumable, resume, token_line
from twoway.sansio.chat.resume import TokenTable
from twoway.sansio.chat.rules import NAME, NOTICE
from twoway.sansio.chat.state import ChatState
from twoway.sansio.text import escape_controls

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_MAX_NAMES",
    "DEFAULT_MAX_ROOMS",
    "ChatCore",
]

# 20 lines: enough to see what a conversation is about when you join, short enough to read
# on one screen.
DEFAULT_HISTORY = 20
#: The memory all rooms' history may hold (see history.HistoryStore): 4 MiB is 20 lines of
#: 200 bytes in a thousand rooms, and a few dozen rooms flooded with 64 KiB lines.
DEFAULT_HISTORY_BYTES = 4 * 1024 * 1024
#: Rooms that may exist at once (the lobby included): a room is cheap, a million are not.
#: Rooms of other servers' clients are not refused (each server caps its own clients').
DEFAULT_MAX_ROOMS = 1000
# Names listed in one "peers here" or /who line: 100 short nicks make a line of about a
# kilobyte; the full list of a 10 000-person lobby would be a 100 KB line per join.
DEFAULT_MAX_NAMES = 100
_EMPTY: frozenset[int] = frozenset()


class ChatCore(Memory):
    """The state of one chat server: clients, nicks, rooms, topics and history.

    Keyword arguments: ``history`` is how many messages each room keeps and replays to
    people who join it (0 disables); ``history_bytes`` is the memory all of it may hold
    (None: no limit; past it the oldest lines of the largest rooms go first);
    ``max_rooms`` caps the rooms that may exist (None: no cap; a ``/join`` past it gets one
    error line); ``motd`` is shown at connection, one ``*** `` line per line;
    ``server_name`` appears in the welcome line; ``lobby`` is the room everybody starts in,
    which always exists (``#`` optional, case-insensitive); ``max_names`` caps the names
    listed in one line (the peers line, ``/who``, ``/rooms``; None lists all); ``cluster``
    adds the effects other servers must learn (:class:`Presence`, :class:`Gone`,
    :class:`Said`, :class:`TopicSet`) to what the methods return.

    Memory (see :mod:`~twoway.sansio.chat.recall`): ``tail`` is how many lines each room
    keeps in memory for ``/since``, ``/history`` and resumes (at least ``history``; default
    ``history``), within ``history_bytes``; ``new_epoch`` names a new numbering of a room's
    lines (the I/O layer passes something random, so a restart without a store is told
    apart; default: a counter). ``resume_window`` (seconds; None: resume off) turns on
    session resume, with tokens from ``new_token`` (the I/O layer passes
    ``secrets.token_urlsafe``).

    Client ids are chosen by the caller and must be unique among connected clients.
    Methods given an id that is not connected return ``[]``. Methods never raise because
    of client input; invalid arguments to the constructor raise :class:`ValueError`.
    The core is not thread-safe: call it from one thread (the event loop).
    """

    __slots__ = ("_motd", "_state", "_welcome", "counters")

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
        tail: int = 0,
        new_epoch: Callable[[], str] | None = None,
        resume_window: float | None = None,
        new_token: Callable[[], str] | None = None,
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0 (got {history})")
        if tail < 0:
            raise ValueError(f"tail must be >= 0 (got {tail})")
        histories = HistoryStore(max(history, tail), history_bytes)  # checks both values
        if max_rooms is not None and max_rooms < 1:
            raise ValueError(f"max_rooms must be >= 1 or None (got {max_rooms})")
        if max_names is not None and max_names < 1:
            raise ValueError(f"max_names must be >= 1 or None (got {max_names})")
        lobby_name = lobby.removeprefix("#")
        if not NAME.fullmatch(lobby_name):
            raise ValueError(f"invalid lobby room name {lobby!r}")
        self._welcome = f"{NOTICE}welcome to {escape_controls(server_name)} chat"
        self._motd = tuple(NOTICE + escape_controls(line) for line in (motd or "").splitlines())
        self._state = ChatState(
            "#" + lobby_name.lower(),
            histories,
            max_names=max_names,
            max_rooms=max_rooms,
            cluster=cluster,
            replay=history,
            new_epoch=new_epoch,
        )
        if resume_window is not None:
            if new_token is None:
                raise ValueError("resume needs new_token (a source of random tokens)")
            self._state.tokens = TokenTable(resume_window)
            self._state.new_token = new_token
        #: Running totals, for metrics.
        self.counters: ChatCounters = self._state.counters

    # -- queries ---------------------------------------------------------------------------

    def set_motd(self, motd: str | None) -> None:
        """Greet the clients that connect from now on with ``motd`` (a SIGHUP reload)."""
        self._motd = tuple(NOTICE + escape_controls(line) for line in (motd or "").splitlines())

    @property
    def connection_count(self) -> int:
        """How many clients are connected."""
        return len(self._state.clients)

    @property
    def cluster(self) -> bool:
        """Whether the methods return the effects other servers must learn (``cluster=True``)."""
        return self._state.cluster

    @property
    def lobby(self) -> str:
        """The lobby's room name, e.g. ``#lobby``."""
        return self._state.lobby.name

    def watch_rooms(
        self, on_enter: Callable[[int, str], None], on_leave: Callable[[int, str], None]
    ) -> None:
        """Call ``on_enter(cid, room)`` when a client of this server enters a room and
        ``on_leave(cid, room)`` when it leaves one (a move is both), at the moment it
        happens: before the call that moved it returns its effects. The I/O layer keeps its
        write groups in step this way, so a client gets exactly the room lines sent while it
        was in the room, in order."""
        self._state.on_enter = on_enter
        self._state.on_leave = on_leave

    def members(self, room: str) -> Collection[int]:
        """The ids of the clients in ``room`` (an exact room name as found in effects).

        This is the live collection, not a copy: do not mutate it, and copy it first if
        you call into the core while iterating (a delivery failure that disconnects a
        client, for instance). An unknown room gives an empty collection.
        """
        r = self._state.rooms.get(room)
        return _EMPTY if r is None else r.members.keys()

    def rooms(self) -> list[str]:
        """The names of the existing rooms, sorted."""
        return sorted(self._state.rooms)

    def nick(self, cid: int) -> str | None:
        """``cid``'s nick, or None if it is not connected."""
        c = self._state.clients.get(cid)
        return None if c is None else c.nick

    def room_of(self, cid: int) -> str | None:
        """The name of the room ``cid`` is in, or None if it is not connected."""
        c = self._state.clients.get(cid)
        return None if c is None else c.room.name

    def history(self, room: str) -> list[str]:
        """The lines ``room`` replays to people who join it, oldest first (``[]`` if none)."""
        r = self._state.rooms.get(room)
        return [] if r is None or r.history is None else list(r.history)

    @property
    def history_bytes(self) -> int:
        """What all the history kept costs against ``history_bytes`` (see
        :func:`~twoway.sansio.chat.history.line_cost`), backfill waiting for its room
        included."""
        return self._state.histories.used

    # -- for moderation (twoway.services.chatmod) -------------------------------------------

    def known_nicks(self) -> list[tuple[int, str]]:
        """``(cid, nick)`` of every client known, here and on other servers (one holder per
        remote nick): what a new nick must not look like."""
        out = [(c.cid, c.nick) for c in self._state.clients.values()]
        out += [(h[0].cid, h[0].nick) for h in self._state.remote.nicks.values()]
        return out

    def cid_of(self, nick: str) -> int | None:
        """The id of the client called ``nick`` (any case), here or on another server."""
        key = nick.lower() if nick.isascii() else ""
        member = self._state.nicks.get(key)
        if member is not None:
            return member.cid
        holders = self._state.remote.nicks.get(key)
        return None if holders is None else holders[0].cid

    def has_room(self, name: str) -> bool:
        """Whether the room ``name`` (exact, as in effects) exists."""
        return name in self._state.rooms

    def address_of(self, cid: int) -> str | None:
        """The address ``cid`` connected from (as given to :meth:`connect`), or None."""
        c = self._state.clients.get(cid)
        return None if c is None else c.address

    def force_guest(self, cid: int, why: str) -> list[Effect]:
        """Rename ``cid`` to its guest nick, telling it ``*** why: you are now guestN`` (a
        registered nick taken without identifying, a nick whose owner claimed it)."""
        member = self._state.clients.get(cid)
        if member is None:
            return []
        out: list[Effect] = []
        self._state.lose_nick(member, out, why)
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def connect(self, cid: int, now: float, address: str = "") -> list[Effect]:
        """A client connected: give it a guest nick, put it in the lobby, welcome it.

        ``address`` is only used in the log line. Raises :class:`ValueError` if ``cid`` is
        already connected (a bug in the caller, not the client's doing).
        """
        state = self._state
        if cid in state.clients:
            raise ValueError(f"client id {cid} is already connected")
        state.now = now
        member = state.add_member(cid, now, address)
        out: list[Effect] = [Send(cid, self._welcome)]
        out.extend(Send(cid, line) for line in self._motd)
        out.append(Send(cid, f"{NOTICE}you are {member.nick}"))
        state.enter(member, state.lobby, out)
        # Just before the end of the welcome: a resuming client skips the welcome up to it.
        out += token_line(state, member)
        out.append(Send(cid, NOTICE + "type /help for commands"))
        source = f" from {escape_controls(address)}" if address else ""
        out.append(Log(f"{member.nick} joined {state.lobby.name}{source}"))
        if state.cluster:
            out.append(Presence(cid, member.nick, state.lobby.name))
        return out

    def lease_guests(self, first: int, count: int) -> None:
        """Guest numbers ``first`` to ``first + count - 1`` are this server's to hand out: a
        block reserved across servers (in one shared counter), so that two servers never
        welcome two clients as the same ``guestN``. Without a block at hand, a cluster core
        counts numbers itself (as a single server does); the nick-collision rule of
        :meth:`remote_presence` then settles a clash."""
        self._state.lease_guests(first, count)

    @property
    def guests_at_hand(self) -> int:
        """How many more clients can be welcomed with a guest number of this server's own:
        freed numbers and what is left of its blocks (see :meth:`lease_guests`)."""
        return self._state.guests_at_hand

    def disconnect(self, cid: int, reason: str, now: float | None = None) -> list[Effect]:
        """The client is gone (``reason``: "closed", "idle", "too slow", "flooding"...).

        Tells the room and forgets the client; with resume on, its session waits
        ``resume_window`` seconds from ``now`` (default: the time of the last call) for a
        ``/resume``. Idempotent: an id that is not connected (never was, already
        disconnected, or closed by the core itself) gives ``[]``.
        """
        state = self._state
        member = state.clients.get(cid)
        if member is None:
            return []
        if now is not None:
            state.now = now
        out: list[Effect] = []
        depart_resumable(state, member, escape_controls(reason), out)
        return out

    def line(self, cid: int, text: str, now: float) -> list[Effect]:
        """Handle one line from ``cid``: ``text`` is decoded, without its terminator, raw.

        A plain line is broadcast to the others in the room as ``nick: text``; a line
        starting with ``/`` is a command (``//`` escapes a leading slash); ``quit`` alone,
        in any case, leaves (see :func:`~twoway.sansio.chat.rules.is_command`). An empty
        line is ignored. ``now`` is not used yet: it is part of the signature so that
        time-based rules can move into the core without changing callers.
        """
        state = self._state
        member = state.clients.get(cid)
        if member is None:
            return []
        state.now = now
        if member.fresh:
            member.fresh = False
            if text[:8].lower() == "/resume " and state.tokens is not None:
                state.counters.lines_in += 1
                state.counters.commands += 1
                return resume(state, member, text[8:].strip())
        return handle_line(state, member, text)

    # -- the other servers (see twoway.sansio.chat.cluster) --------------------------------

    def is_remote(self, cid: int) -> bool:
        """Whether ``cid`` is a client of another server (a :class:`Send` to it goes to the
        bus)."""
        return cid in self._state.remote.cids

    @property
    def remote_count(self) -> int:
        """How many clients of other servers the directory holds."""
        return len(self._state.remote.cids)

    def local_presence(self) -> list[tuple[int, str, str]]:
        """``(cid, nick, room)`` of every local client: the snapshot other servers need (see
        :meth:`remote_snapshot`)."""
        return [(c.cid, c.nick, c.room.name) for c in self._state.clients.values()]

    def local_topics(self) -> list[tuple[str, str]]:
        """``(room, topic)`` of the rooms with local members and a topic."""
        rooms = self._state.rooms.values()
        return [(r.name, r.topic) for r in rooms if r.members and r.topic is not None]

    def local_rooms(self) -> list[str]:
        """The names of the rooms that have local members, sorted."""
        return sorted(r.name for r in self._state.rooms.values() if r.members)

    def notice(self, text: str, room: str | None = None) -> list[Effect]:
        """A ``text`` line to the local members of ``room``, or of every room if None (a
        server notice: missed messages, an unreachable bus...)."""
        rooms = self.local_rooms() if room is None else [room]
        return [ToRoom(name, text, None) for name in rooms if self.members(name)]

    def remote_presence(self, cid: int, nick: str, room: str, node: int) -> list[Effect]:
        """Client ``cid`` of server ``node`` is now ``nick`` in ``room`` (a :class:`Presence`
        that server published).

        A new client is announced ``*** nick joined #room``; a known one that changed nick
        or room as a local client would be (``is now known as``, ``left``, ``joined``); a
        repeat of what is known returns ``[]``. Idempotent for the same values.

        If the nick is held by a local client, the lower id keeps it (every server applies
        the same rule, so they agree without talking): when the remote id is lower, the local
        client is renamed to a guest nick, told ``*** nick collision: you are now guestN``,
        and a :class:`Presence` is returned for the bus (``cluster=True``).
        """
        out: list[Effect] = []
        merge_presence(self._state, cid, nick, room, node, out)
        return out

    def remote_gone(self, cid: int, reason: str) -> list[Effect]:
        """Client ``cid`` of another server left: ``*** nick left #room (reason)`` to the
        local members of its room. Unknown ids give ``[]`` (idempotent)."""
        return merge_gone(self._state, cid, reason)

    def remote_message(self, room: str, text: str) -> list[Effect]:
        """A line said in ``room`` on another server (a :class:`Said`): kept in the room's
        history, delivered to the local members. Ignored if the room does not exist here
        (nobody in it that this server knows of), or if it starts like a server notice."""
        return merge_message(self._state, room, text)

    def backfill(self, lines: Iterable[tuple[str, str]]) -> None:
        """Lines said on other servers before this one joined the chat, oldest first, as
        ``(room, text)``: they go into the rooms' history, before what is there already, and
        are delivered to nobody. Lines for rooms that do not exist here yet are kept (at most
        ``history`` per room, for at most
        :data:`~twoway.sansio.chat.cluster.MAX_BACKFILL_ROOMS` rooms, within the history
        budget) until the room is created."""
        merge_backfill(self._state, lines)

    def remote_topic(self, room: str, topic: str, nick: str) -> list[Effect]:
        """``nick`` on another server set the topic of ``room`` (a :class:`TopicSet`)."""
        return merge_topic(self._state, room, topic, nick)

    def remote_snapshot(
        self,
        node: int,
        members: Iterable[tuple[int, str, str]],
        topics: Iterable[tuple[str, str]] = (),
    ) -> list[Effect]:
        """The complete state of server ``node`` (what its :meth:`local_presence` and
        :meth:`local_topics` returned): its clients not in ``members`` are gone
        (``*** nick left #room (left)``), the others are applied as by
        :meth:`remote_presence`; a topic is taken for a room that has none here. Repairs the
        directory after anything was missed."""
        return merge_snapshot(self._state, node, members, topics)

    def drop_node(self, node: int, reason: str) -> list[Effect]:
        """Every client of server ``node`` is gone (``reason``: ``server lost``...): each
        room is told, as by :meth:`remote_gone`, and one :class:`Log` line sums it up."""
        return merge_node_lost(self._state, node, reason)

"""The state of one chat server, and every transition of it.

:class:`ChatState` holds the rooms, the clients connected here (:class:`Member`) and their
nicks, the guest numbers, the directory of the clients of other servers, the history and
the counters. Its methods are the only code that changes them, each keeping the indexes
consistent (a room's members and sorted names, the nick maps, the directory) and appending
what it must announce to an ``out`` list of effects. The commands
(:mod:`~twoway.sansio.chat.commands`) and the cluster merge
(:mod:`~twoway.sansio.chat.cluster`) validate input and call these; nothing here checks
what a client typed.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

from twoway.sansio.chat.directory import Directory
from twoway.sansio.chat.effects import ChatCounters, Effect, Gone, Log, Presence, Send, ToRoom
from twoway.sansio.chat.history import HistoryStore, RoomHistory
from twoway.sansio.chat.resume import TokenTable
from twoway.sansio.chat.rooms import Member, Remote, Room
from twoway.sansio.chat.rules import NOTICE, guest_number

__all__ = ["MAX_KEPT_TOPICS", "MAX_PARKED", "ChatState", "Journal", "TopicSink"]

#: Called with ``(room, epoch, seq, text)`` for every line kept in a room's history: how a
#: durable store learns of them (it must not block: it queues).
Journal = Callable[[str, str, int, str], None]
#: Histories of emptied rooms kept in memory when ``keep_rooms`` is on (beyond it, the
#: oldest goes; its numbering is remembered, its lines are on disk).
MAX_PARKED = 1000
#: Called with ``(room, topic, nick)`` when a client here sets a room's topic, and with
#: ``(room, None, "")`` when a kept topic is forgotten: how a durable store learns of them
#: (it must not block: it queues).
TopicSink = Callable[[str, "str | None", str], None]
#: Topics of rooms nobody is in, kept in memory while a store keeps topics (beyond it, the
#: oldest is forgotten, in the store too).
MAX_KEPT_TOPICS = 10000


class ChatState:
    """Rooms, members, nicks, guest numbers, the remote directory, history and counters.

    The attributes are for reading by the chat package; the methods change them. ``lobby``
    always exists; any other room exists while somebody (here or on another server) is in
    it. ``cluster`` adds the effects other servers must learn to what is announced.
    """

    __slots__ = (
        "_free_guests",
        "_leases",
        "_next_guest",
        "_parked_guests",
        "_unowned",
        "backfill",
        "clients",
        "cluster",
        "counters",
        "dormant",
        "held",
        "histories",
        "journal",
        "keep_rooms",
        "kept_topics",
        "lobby",
        "max_names",
        "max_rooms",
        "new_epoch",
        "new_token",
        "nicks",
        "now",
        "on_enter",
        "on_leave",
        "released",
        "remote",
        "remote_holds",
        "replay",
        "rooms",
        "shared_sessions",
        "tokens",
        "topic_sink",
    )

    def __init__(
        self,
        lobby: str,
        histories: HistoryStore,
        *,
        max_names: int | None,
        max_rooms: int | None,
        cluster: bool,
        replay: int | None = None,
        new_epoch: Callable[[], str] | None = None,
    ) -> None:
        self.histories = histories
        #: Lines of history shown to a client entering a room (the rest are for /since).
        self.replay = histories.per_room if replay is None else replay
        if new_epoch is None:
            counter = itertools.count(1)

            def new_epoch() -> str:  # deterministic, for tests
                return str(next(counter))

        #: Names a new numbering of a room's lines (see sequence.py): random in a server.
        self.new_epoch: Callable[[], str] = new_epoch
        #: Told of every line kept (a durable store), or None.
        self.journal: Journal | None = None
        #: Keep the history of emptied rooms (in ``backfill``, at most MAX_PARKED) and the
        #: numbering of every room seen: on with a durable store.
        self.keep_rooms = False
        #: Told of every topic set here (a durable store), or None: then topics of rooms
        #: that empty are kept in ``kept_topics`` (room -> topic) for when they come back.
        self.topic_sink: TopicSink | None = None
        self.kept_topics: dict[str, str] = {}
        #: ``(epoch, last)`` of rooms whose history is not in memory (keep_rooms).
        self.dormant: dict[str, tuple[str, int]] = {}
        #: Nicks held for departed clients that may resume (lower-case nick -> token).
        self.held: dict[str, str] = {}
        #: Nicks held on another server's word (a Held item): ticket key -> (nick, since).
        self.remote_holds: dict[str, tuple[str, float]] = {}
        #: Ticket keys whose hold ended on another server's word (resumed) -> when, oldest
        #: first, kept a window: a key is single-use, so a late word that it is held (a
        #: store read just before the resume) is ignored.
        self.released: dict[str, float] = {}
        #: Tickets live in a store every server shares (a cluster): a ``/resume`` this
        #: server cannot answer from its own table becomes a Lookup.
        self.shared_sessions = False
        #: Resume tokens (None: resume is off) and where new ones come from.
        self.tokens: TokenTable | None = None
        self.new_token: Callable[[], str] = lambda: ""
        #: Told ``(cid, room)`` when a client here enters a room and when it leaves one, as
        #: it happens (before the effects are carried out): the I/O layer keeps its write
        #: groups in step (see ChatCore.watch_rooms).
        self.on_enter: Callable[[int, str], None] | None = None
        self.on_leave: Callable[[int, str], None] | None = None
        #: The time of the call being handled (passed in by the core's callers).
        self.now = 0.0
        self.lobby = Room(lobby, histories.new(new_epoch()))
        self.rooms: dict[str, Room] = {lobby: self.lobby}
        #: History from before this server joined, for rooms that do not exist here yet.
        self.backfill: dict[str, RoomHistory] = {}
        self.clients: dict[int, Member] = {}
        self.nicks: dict[str, Member] = {}  # lower-case nick -> member
        self.remote = Directory()
        self.counters = ChatCounters()
        self.cluster = cluster
        self.max_names = max_names
        self.max_rooms = max_rooms
        # Guest numbers: every number below _next_guest is held by a connected client, or
        # in the _free_guests heap, or parked because someone chose that guestN as a nick
        # (it goes back to the heap when that nick is released). Connecting is O(log n).
        self._next_guest = 1
        self._free_guests: list[int] = []
        self._parked_guests: set[int] = set()
        # In a cluster, fresh numbers come from blocks reserved across servers (lease_guests):
        # no two servers hand out the same guestN. A number counted here while no block is at
        # hand (the bus down) may be another server's: it is never parked nor reused.
        self._leases: deque[range] = deque()
        self._unowned: set[int] = set()

    # -- rooms -----------------------------------------------------------------------------

    def room(self, name: str) -> Room:
        """The room called ``name`` (already valid and lower-case), created if needed (with
        the history backfilled for it, if any)."""
        room = self.rooms.get(name)
        if room is None:
            history = self.backfill.pop(name, None)  # already counted in the budget
            if history is None:
                dormant = self.dormant.pop(name, None)
                epoch, last = dormant if dormant is not None else (self.new_epoch(), 0)
                history = self.histories.new(epoch, last)
            elif not history.epoch:  # backfilled from other servers: numbered from here
                history.epoch, history.last = self.new_epoch(), len(history)
            room = self.rooms[name] = Room(name, history)
            room.topic = self.kept_topics.pop(name, None)
        return room

    def drop_if_empty(self, room: Room) -> None:
        """Remove ``room`` if nobody is in it, here or elsewhere (never the lobby)."""
        if not room.members and not room.remote and room is not self.lobby:
            # Nobody to keep it for: the room goes; its topic and history too unless a
            # durable store keeps them (then they are parked, numbering and all).
            del self.rooms[room.name]
            if self.topic_sink is not None and room.topic is not None:
                self.keep_topic(room.name, room.topic)
            if self.keep_rooms and room.history is not None:
                self.park(room.name, room.history)
            else:
                self.histories.drop(room.history)

    def keep_topic(self, name: str, topic: str) -> None:
        """Keep ``topic`` of the room ``name`` (which does not exist now) for when it is
        created again; past MAX_KEPT_TOPICS the oldest kept topic is forgotten, and the
        store told."""
        kept = self.kept_topics
        kept.pop(name, None)
        if len(kept) >= MAX_KEPT_TOPICS:
            oldest = next(iter(kept))
            del kept[oldest]
            if self.topic_sink is not None:
                self.topic_sink(oldest, None, "")
        kept[name] = topic

    def park(self, name: str, history: RoomHistory) -> None:
        """Keep ``history`` of the room ``name`` (which does not exist now) for when it is
        created again; past MAX_PARKED, the oldest parked history leaves memory (its
        numbering is kept in ``dormant``)."""
        parked = self.backfill
        parked.pop(name, None)
        if len(parked) >= MAX_PARKED:
            oldest = next(iter(parked))
            h = parked.pop(oldest)
            self.dormant[oldest] = (h.epoch, h.last)
            self.histories.drop(h)
        parked[name] = history

    def say(self, room: Room, text: str) -> None:
        """``text`` was said in ``room``: keep it in the history (numbered, journaled)."""
        h = room.history
        if h is not None:
            self.histories.append(h, text)
            journal = self.journal
            if journal is not None:
                journal(room.name, h.epoch, h.last, text)

    # -- members ---------------------------------------------------------------------------

    def add_member(self, cid: int, now: float, address: str) -> Member:
        """A new client with a guest nick, not in any room's members yet (see :meth:`enter`).
        ``cid`` must not be connected."""
        guest = self.take_guest_number()
        member = Member(cid, f"guest{guest}", guest, self.lobby, now)
        member.address = address
        self.clients[cid] = member
        self.nicks[member.key] = member
        return member

    def enter(self, member: Member, room: Room, out: list[Effect], *, replay: bool = True) -> None:
        """Put ``member`` in ``room``: tell the room, then show the member where it is (and
        the last ``replay`` lines of its history, unless ``replay`` is False)."""
        cid = member.cid
        count = room.size
        if count == 0:
            peers = NOTICE + "you are alone here"
        else:
            names = room.name_list(self.max_names)
            peers = f"{NOTICE}{count} peer{'' if count == 1 else 's'} here: {names}"
        room.members[cid] = member
        room.add_name(member)
        member.room = room
        if self.on_enter is not None:
            self.on_enter(cid, room.name)
        self.counters.joins += 1
        out.append(ToRoom(room.name, f"{NOTICE}{member.nick} joined {room.name}", cid))
        out.append(Send(cid, f"{NOTICE}you are in {room.name}"))
        if room.topic is not None:
            out.append(Send(cid, f"{NOTICE}topic: {room.topic}"))
        out.append(Send(cid, peers))
        history = room.history
        if history and replay and self.replay:
            recent = list(itertools.islice(reversed(history.lines), self.replay))
            out.extend(Send(cid, "[history] " + text) for text in reversed(recent))

    def leave_room(self, member: Member) -> None:
        """Take ``member`` out of its room (which goes if it is now empty)."""
        room = member.room
        del room.members[member.cid]
        room.remove_name(member)
        if self.on_leave is not None:
            self.on_leave(member.cid, room.name)
        self.counters.parts += 1
        self.drop_if_empty(room)

    def move(self, member: Member, name: str, *, replay: bool = True) -> list[Effect]:
        """``member`` goes from its room to ``name`` (valid, lower-case, not its room)."""
        old = member.room
        self.leave_room(member)
        new = self.room(name)
        out: list[Effect] = [ToRoom(old.name, f"{NOTICE}{member.nick} left {old.name}", member.cid)]
        self.enter(member, new, out, replay=replay)
        out.append(Log(f"{member.nick} left {old.name} for {new.name}"))
        if self.cluster:
            out.append(Presence(member.cid, member.nick, new.name))
        return out

    def depart(self, member: Member, why: str, out: list[Effect]) -> None:
        """Forget ``member``: tell its room ``*** nick left #room (why)`` and log it."""
        room = member.room
        self.leave_room(member)
        del self.clients[member.cid]
        del self.nicks[member.key]
        self.release_guest_nick(member.key)
        self.release_guest_number(member.guest)
        text = f"{member.nick} left {room.name} ({why})"
        # Sent even when nobody is left locally: with a bus, the room may have members in
        # other processes.
        out.append(ToRoom(room.name, NOTICE + text, member.cid))
        out.append(Log(text))
        if self.cluster:
            out.append(Gone(member.cid, why))

    def rename(self, member: Member, nick: str) -> None:
        """``member`` is now ``nick`` (free, valid): the indexes follow, the old nick's
        guest number (if it parked one) is free again."""
        del self.nicks[member.key]
        self.release_guest_nick(member.key)
        member.room.remove_name(member)
        member.nick, member.key = nick, nick.lower()
        member.room.add_name(member)
        self.nicks[member.key] = member
        self.counters.nick_changes += 1

    def lose_nick(self, member: Member, out: list[Effect], why: str = "nick collision") -> None:
        """``member``'s nick went to a client of another server with a lower id (or ``why``
        else): it takes its guest nick back (or a new guest number if that one is taken
        meanwhile)."""
        old = member.nick
        nick = f"guest{member.guest}"
        if nick in self.nicks or nick in self.remote.nicks:
            n = self.take_guest_number()
            self.release_guest_number(member.guest)
            member.guest = n
            nick = f"guest{n}"
        self.rename(member, nick)
        room = member.room.name
        out.append(Send(member.cid, f"{NOTICE}{why}: you are now {nick}"))
        out.append(ToRoom(room, f"{NOTICE}{old} is now known as {nick}", member.cid))
        out.append(Log(f"{why}: {old} is now known as {nick}"))
        if self.cluster:
            out.append(Presence(member.cid, nick, room))

    # -- members of other servers ----------------------------------------------------------

    def add_remote(self, cid: int, nick: str, node: int, name: str) -> Remote:
        """Client ``cid`` of server ``node`` is ``nick`` in room ``name`` (all checked)."""
        r = self.remote.add(cid, nick, node, self.room(name))
        r.room.remote[cid] = r
        r.room.add_name(r)
        return r

    def rename_remote(self, r: Remote, nick: str) -> None:
        """``r`` is now ``nick``."""
        old_key = r.key
        r.room.remove_name(r)
        if self.remote.rename(r, nick):
            self.remote_nick_freed(old_key)
        r.room.add_name(r)

    def move_remote(self, r: Remote, name: str) -> Room:
        """``r`` left its room for ``name``; return the room it left (maybe gone now)."""
        old = r.room
        del old.remote[r.cid]
        old.remove_name(r)
        self.drop_if_empty(old)
        r.room = self.room(name)
        r.room.remote[r.cid] = r
        r.room.add_name(r)
        return old

    def forget_remote(self, r: Remote, why: str, out: list[Effect]) -> None:
        """``r`` is gone: its room is told ``*** nick left #room (why)``."""
        if self.remote.remove(r):
            self.remote_nick_freed(r.key)
        room = r.room
        del room.remote[r.cid]
        room.remove_name(r)
        self.drop_if_empty(room)
        out.append(ToRoom(room.name, f"{NOTICE}{r.nick} left {room.name} ({why})", None))

    def remote_nick_freed(self, key: str) -> None:
        """No client of another server holds the nick ``key`` any more: unless a local client
        does, a guest number that nick parked can be handed out again."""
        if key not in self.nicks:
            self.release_guest_nick(key)

    # -- guest numbers ---------------------------------------------------------------------

    def take_guest_number(self) -> int:
        """The smallest guest number whose ``guestN`` nick nobody holds (in a cluster: of
        those reserved for this server, see :meth:`lease_guests`)."""
        nicks = self.nicks
        while True:
            n = heapq.heappop(self._free_guests) if self._free_guests else self._fresh_guest()
            nick = f"guest{n}"
            if nick not in nicks and nick not in self.remote.nicks and nick not in self.held:
                return n
            if n in self._unowned:
                self._unowned.discard(n)
                continue
            # Someone (here or on another server) is called guestN: skip N until that nick
            # is released.
            self._parked_guests.add(n)

    def _fresh_guest(self) -> int:
        leases = self._leases
        if leases:
            block = leases[0]
            if len(block) > 1:
                leases[0] = block[1:]
            else:
                leases.popleft()
            return block[0]
        n = self._next_guest
        self._next_guest += 1
        if self.cluster:
            self._unowned.add(n)
        return n

    def lease_guests(self, first: int, count: int) -> None:
        """Guest numbers ``first`` to ``first + count - 1`` are this server's to hand out
        (a block reserved across servers)."""
        self._leases.append(range(first, first + count))

    @property
    def guests_at_hand(self) -> int:
        """Guest numbers this server may hand out without another block: freed ones and
        what is left of its blocks."""
        return len(self._free_guests) + sum(len(block) for block in self._leases)

    def release_guest_number(self, n: int) -> None:
        """The client holding guest number ``n`` left."""
        if n in self._unowned:
            self._unowned.discard(n)  # perhaps another server's: never handed out again
            return
        heapq.heappush(self._free_guests, n)

    def hold(self, key: str, token: str) -> None:
        """Keep the nick ``key`` for the departed client whose ticket is ``token``."""
        self.held[key] = token

    def release_hold(self, key: str, token: str) -> None:
        """The hold of ``token`` on ``key`` ends (resumed, expired): unless someone else
        holds that nick now, a guest number it parked is free again."""
        if self.held.get(key) == token:
            del self.held[key]
            if key not in self.nicks and key not in self.remote.nicks:
                self.release_guest_nick(key)

    def release_guest_nick(self, key: str) -> None:
        """Nobody here is called ``key`` any more: if that is a ``guestN`` whose number was
        parked, the number can be handed out again."""
        n = guest_number(key)
        if n is not None and n in self._parked_guests:
            self._parked_guests.discard(n)
            heapq.heappush(self._free_guests, n)

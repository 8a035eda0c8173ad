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
from collections import deque

from twoway.sansio.chat.directory import Directory
from twoway.sansio.chat.effects import ChatCounters, Effect, Gone, Log, Presence, Send, ToRoom
from twoway.sansio.chat.history import HistoryStore, RoomHistory
from twoway.sansio.chat.rooms import Member, Remote, Room
from twoway.sansio.chat.rules import NOTICE, guest_number

__all__ = ["ChatState"]


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
        "histories",
        "lobby",
        "max_names",
        "max_rooms",
        "nicks",
        "remote",
        "rooms",
    )

    def __init__(
        self,
        lobby: str,
        histories: HistoryStore,
        *,
        max_names: int | None,
        max_rooms: int | None,
        cluster: bool,
    ) -> None:
        self.histories = histories
        self.lobby = Room(lobby, histories.new())
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
                history = self.histories.new()
            room = self.rooms[name] = Room(name, history)
        return room

    def drop_if_empty(self, room: Room) -> None:
        """Remove ``room`` if nobody is in it, here or elsewhere (never the lobby)."""
        if not room.members and not room.remote and room is not self.lobby:
            # Nobody to keep it for: the room goes, with its history and topic.
            del self.rooms[room.name]
            self.histories.drop(room.history)

    def say(self, room: Room, text: str) -> None:
        """``text`` was said in ``room``: keep it in the history."""
        if room.history is not None:
            self.histories.append(room.history, text)

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

    def enter(self, member: Member, room: Room, out: list[Effect]) -> None:
        """Put ``member`` in ``room``: tell the room, then show the member where it is."""
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
        self.counters.joins += 1
        out.append(ToRoom(room.name, f"{NOTICE}{member.nick} joined {room.name}", cid))
        out.append(Send(cid, f"{NOTICE}you are in {room.name}"))
        if room.topic is not None:
            out.append(Send(cid, f"{NOTICE}topic: {room.topic}"))
        out.append(Send(cid, peers))
        if room.history:
            out.extend(Send(cid, "[history] " + text) for text in room.history)

    def leave_room(self, member: Member) -> None:
        """Take ``member`` out of its room (which goes if it is now empty)."""
        room = member.room
        del room.members[member.cid]
        room.remove_name(member)
        self.counters.parts += 1
        self.drop_if_empty(room)

    def move(self, member: Member, name: str) -> list[Effect]:
        """``member`` goes from its room to ``name`` (valid, lower-case, not its room)."""
        old = member.room
        self.leave_room(member)
        new = self.room(name)
        out: list[Effect] = [ToRoom(old.name, f"{NOTICE}{member.nick} left {old.name}", member.cid)]
        self.enter(member, new, out)
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
            if nick not in nicks and nick not in self.remote.nicks:
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

    def release_guest_nick(self, key: str) -> None:
        """Nobody here is called ``key`` any more: if that is a ``guestN`` whose number was
        parked, the number can be handed out again."""
        n = guest_number(key)
        if n is not None and n in self._parked_guests:
            self._parked_guests.discard(n)
            heapq.heappush(self._free_guests, n)

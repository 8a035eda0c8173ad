"""The records of the chat state: a room, a member connected here, a member of another
server. Data and their small invariants only; the transitions are in
:mod:`twoway.sansio.chat.state`."""

from __future__ import annotations

import bisect

from twoway.sansio.chat.history import RoomHistory

__all__ = ["Member", "Remote", "Room"]


class Member:
    """A client connected to this server."""

    __slots__ = ("address", "cid", "connected_at", "fresh", "guest", "key", "nick", "room")

    def __init__(self, cid: int, nick: str, guest: int, room: Room, now: float) -> None:
        self.cid = cid
        self.nick = nick
        self.key = nick.lower()  # nicks are ASCII, so lower() is the case-insensitive key
        self.guest = guest  # the guest number this connection holds until it leaves
        self.room = room
        self.address = ""
        self.connected_at = now
        self.fresh = True  # no line received yet (only a first line may be /resume)


class Remote:
    """A client of another server, as far as this one knows (see the cluster merge)."""

    __slots__ = ("cid", "key", "nick", "node", "room")

    def __init__(self, cid: int, nick: str, node: int, room: Room) -> None:
        self.cid = cid
        self.nick = nick
        self.key = nick.lower()
        self.node = node
        self.room = room


class Room:
    """A room: its members here and on other servers, its topic and its history."""

    __slots__ = ("history", "members", "name", "names", "remote", "topic")

    def __init__(self, name: str, history: RoomHistory | None) -> None:
        self.name = name
        #: cid -> member, in join order. The keys are what ChatCore.members() exposes.
        self.members: dict[int, Member] = {}
        #: cid -> member on another server (the directory): counted, never delivered to.
        self.remote: dict[int, Remote] = {}
        #: (lower-case nick, nick, cid) of everybody in the room, local and remote, sorted:
        #: the "peers here" line of each join lists the first names without sorting the
        #: room (a burst of joins would cost the square of the room's size).
        self.names: list[tuple[str, str, int]] = []
        self.history = history
        self.topic: str | None = None

    @property
    def size(self) -> int:
        """Everybody in the room, here and on other servers."""
        return len(self.names)

    def add_name(self, who: Member | Remote) -> None:
        """``who`` (just put in ``members`` or ``remote``) is listed by its nick."""
        bisect.insort(self.names, (who.key, who.nick, who.cid))

    def remove_name(self, who: Member | Remote) -> None:
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

"""The directory of the clients of other servers, for a chat spread over several servers.

When servers share a chat through a bus, each is authoritative for its own clients and learns
about those of the others from what they publish. :class:`Directory` is what one
:class:`~twoway.sansio.chat.ChatCore` keeps of them: a :class:`~twoway.sansio.chat.rooms.Remote`
record per client of another server, indexed by id, by nick and by server (node).

Two servers may briefly both grant one nick, each checking only what it knows: a nick's
holders are kept lowest id first, the tie-break every server applies, so that they agree
without talking.

This module holds data only and returns no effects: the core's ``remote_*`` methods check what
the bus brings, keep the rooms, settle nick collisions with local clients and announce the
changes.
"""

from __future__ import annotations

from twoway.sansio.chat.rooms import Remote, Room

__all__ = ["Directory"]


class Directory:
    """The clients of other servers: by id (``cids``), by nick (``nicks``) and by server
    (``nodes``).

    The three mappings are for reading; only the methods change them, keeping them
    consistent. ``nicks`` maps a lower-case nick to its holders, lowest id first (the one a
    ``/msg`` reaches); ``nodes`` maps a server to its clients, in the order they became
    known. No entry of ``nicks`` or ``nodes`` is ever empty.
    """

    __slots__ = ("cids", "nicks", "nodes")

    def __init__(self) -> None:
        self.cids: dict[int, Remote] = {}
        # A list because two servers may briefly both grant one nick (see
        # ChatCore.remote_presence).
        self.nicks: dict[str, list[Remote]] = {}
        self.nodes: dict[int, dict[int, Remote]] = {}

    def add(self, cid: int, nick: str, node: int, room: Room) -> Remote:
        """Record the new client ``cid`` of server ``node``, ``nick`` in ``room``; return it.

        ``cid`` must not be in the directory already. The room's own membership is the
        caller's to update.
        """
        r = Remote(cid, nick, node, room)
        self.cids[cid] = r
        self.nodes.setdefault(node, {})[cid] = r
        self._index_nick(r)
        return r

    def move_node(self, r: Remote, node: int) -> None:
        """``r`` is now said to be a client of server ``node``."""
        self._unindex_node(r)
        r.node = node
        self.nodes.setdefault(node, {})[r.cid] = r

    def rename(self, r: Remote, nick: str) -> bool:
        """``r`` is now ``nick``. True if no remote client holds its previous nick any more."""
        freed = self._unindex_nick(r)
        r.nick, r.key = nick, nick.lower()
        self._index_nick(r)
        return freed

    def remove(self, r: Remote) -> bool:
        """Forget ``r``. True if no remote client holds its nick any more."""
        del self.cids[r.cid]
        self._unindex_node(r)
        return self._unindex_nick(r)

    def _index_nick(self, r: Remote) -> None:
        holders = self.nicks.setdefault(r.key, [])
        holders.append(r)
        if len(holders) > 1:
            holders.sort(key=lambda h: h.cid)

    def _unindex_nick(self, r: Remote) -> bool:
        holders = self.nicks[r.key]
        holders.remove(r)
        if holders:
            return False
        del self.nicks[r.key]
        return True

    def _unindex_node(self, r: Remote) -> None:
        members = self.nodes[r.node]
        del members[r.cid]
        if not members:
            del self.nodes[r.node]

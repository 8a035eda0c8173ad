"""Sanctions of a chat server: kick, ban, mute, and their audit.

:class:`ChatSanctions` keeps the bans and mutes in force (written through to the
:class:`~twoway.store.records.Records` and told to the other servers), answers ``/kick``,
``/ban``, ``/unban``, ``/banned``, ``/mute`` and ``/unmute``, applies what other servers
decided, and checks a client when it connects (address bans) and when it gets a name (name
bans and mutes), never per line. It is handed what it asks of identity and of room
ownership as callbacks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twoway.sansio.bus import Moderated
from twoway.sansio.chat import NOTICE
from twoway.sansio.chat.rules import quote
from twoway.sansio.moderation import (
    Sanction,
    Sanctions,
    format_duration,
    parse_duration,
    parse_mask,
)
from twoway.services.chataudit import audit, peer_host, refuse
from twoway.store.records import Records

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.services.chat import ChatService

__all__ = ["ChatSanctions"]


def _until_text(until: float | None, now: float) -> str:
    return "permanently" if until is None else f"for {format_duration(until - now)}"


class ChatSanctions:
    """The bans and mutes of one chat server (see the module docstring).

    ``watched`` is the set of clients whose plain lines moderation sees (a muted client is
    in it); ``account_of``, ``is_operator``, ``is_pending`` and ``who`` answer from identity,
    ``owns(cid, room)`` whether ``cid`` owns ``room``.
    """

    def __init__(
        self,
        chat: ChatService,
        records: Records,
        watched: set[int],
        *,
        account_of: Callable[[int], str | None],
        is_operator: Callable[[int], bool],
        is_pending: Callable[[int], bool],
        who: Callable[[int], str],
        owns: Callable[[int, str | None], bool],
    ) -> None:
        self.chat = chat
        self.records = records
        self.watched = watched
        self.account_of = account_of
        self.is_operator = is_operator
        self.is_pending = is_pending
        self.who = who
        self.owns = owns
        self.bans = Sanctions()
        self.mutes = Sanctions()
        self._muted: dict[int, float | None] = {}  # cid -> until (wall clock)

    def load(self) -> None:
        """The bans and mutes kept in the records."""
        for kind, sanctions in (("ban", self.bans), ("mute", self.mutes)):
            for value in self.records.load(kind).values():
                s = Sanction.from_record(value)
                if s is not None:
                    sanctions.add(s)

    def bus_item(self, item: Moderated) -> None:
        """What another server decided: applied here (and persisted here)."""
        mask = parse_mask(item.mask)
        if mask is None:
            return
        sanction = Sanction(mask, item.until, item.reason, item.by)
        if item.action == "ban":
            self.bans.add(sanction)
            self.records.put("ban", mask.text, sanction.record())
            self._enforce_ban(sanction)
        elif item.action == "unban":
            self.bans.remove(mask.text)
            self.records.delete("ban", mask.text)
        elif item.action == "mute":
            self.mutes.add(sanction)
            self.records.put("mute", mask.text, sanction.record())
            self._enforce_mute(sanction)
        elif item.action == "unmute":
            self.mutes.remove(mask.text)
            self.records.delete("mute", mask.text)
            self._lift_mute(mask.text)
        elif item.action == "kick":
            self._kick_matching(sanction, "kicked")

    def address_ban(self, ip: str, now: float) -> str | None:
        """The notice for a client connecting from ``ip`` if a ban covers the address, or
        None (expired bans are forgotten on the way)."""
        expired: list[str] = []
        ban = self.bans.find(None, None, ip, now, addresses_only=True, expired=expired)
        for key in expired:
            self.records.delete("ban", key)
        return None if ban is None else self._ban_notice(ban, now)

    def is_muted(self, cid: int) -> bool:
        """Whether ``cid`` is muted now (a mute past its time is lifted)."""
        return cid in self._muted and self._still_muted(cid)

    def left(self, cid: int) -> None:
        """The client is gone: forget its mute."""
        self._muted.pop(cid, None)

    def _still_muted(self, cid: int) -> bool:
        until = self._muted.get(cid)
        if until is not None and until <= time.time():
            self._lift_mute_cid(cid)
            return False
        return True

    def _refuse(self, conn: Conn, cid: int | None, text: str) -> None:
        # The error line to the client, and to the log (rate-limited): see chataudit.refuse.
        refuse(self.chat.core, conn, cid, text)

    # ------------------------------------------------------------------ kick

    def cmd_kick(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/kick NICK [reason]``: an operator anywhere, a room owner from their room."""
        parts = arg.split(None, 1)
        if not parts:
            self._refuse(conn, cid, "error: usage: /kick NICK [reason]")
            return True
        nick, reason = parts[0], (parts[1] if len(parts) > 1 else "")
        core = self.chat.core
        target = core.cid_of(nick)
        if target is None:
            self._refuse(conn, cid, f"error: no such nick {quote(nick)}")
            return True
        who = self.who(cid)
        name = core.nick(target) or nick
        if self.is_operator(cid):
            audit(who, "kicked", name, reason)
            if self.chat.conn_of(target) is not None:
                self._kick_cid(target, "kicked", who, reason)
            else:
                self.chat.bus.publish(Moderated("kick", name, None, reason, who))
            conn.send_line(f"{NOTICE}kicked {name}")
            return True
        room = core.room_of(cid)
        target_conn = self.chat.conn_of(target)
        if self.owns(cid, room) and target_conn is not None and core.room_of(target) == room:
            audit(who, f"kicked from {room}", name, reason)
            why = f": {reason}" if reason else ""
            target_conn.send_line(f"{NOTICE}you were kicked from {room} by {who}{why}")
            self.chat.core_line(target_conn, "/part", asyncio.get_running_loop().time())
            return True
        self._refuse(conn, cid, "error: not permitted")
        return True

    def _kick_cid(self, cid: int, what: str, who: str, reason: str) -> None:
        why = f": {reason}" if reason else ""
        self.chat.kick(cid, f"error: you were {what} by {who}{why}", f"{what} by {who}{why}")

    def _kick_matching(self, s: Sanction, what: str) -> int:
        """Disconnect the local clients ``s`` covers; how many."""
        count = 0
        core = self.chat.core
        for cid in self.chat.local_cids():
            nick = core.nick(cid)
            conn = self.chat.conn_of(cid)
            ip = peer_host(conn.peer) if conn is not None else None
            if s.mask.matches(nick, self.account_of(cid), ip):
                self._kick_cid(cid, what, s.by, s.reason)
                count += 1
        return count

    # ------------------------------------------------------------------ ban

    def _ban_notice(self, ban: Sanction, now: float) -> str:
        why = f": {ban.reason}" if ban.reason else ""
        until = "" if ban.until is None else f" (for {format_duration(ban.until - now)} more)"
        return f"error: you are banned by {ban.by}{until}{why}"

    def _enforce_ban(self, ban: Sanction) -> int:
        count = 0
        now = time.time()
        core = self.chat.core
        for cid in self.chat.local_cids():
            conn = self.chat.conn_of(cid)
            ip = peer_host(conn.peer) if conn is not None else None
            if ban.mask.matches(core.nick(cid), self.account_of(cid), ip):
                why = f": {ban.reason}" if ban.reason else ""
                self.chat.kick(cid, self._ban_notice(ban, now), f"banned by {ban.by}{why}")
                count += 1
        return count

    def recheck(self, cid: int) -> None:
        """Name bans and mutes, after the client got a (new) name."""
        core = self.chat.core
        conn = self.chat.conn_of(cid)
        if conn is None:
            return
        nick, account, ip = core.nick(cid), self.account_of(cid), peer_host(conn.peer)
        now = time.time()
        ban = self.bans.find(nick, account, ip, now)
        if ban is not None:
            why = f": {ban.reason}" if ban.reason else ""
            self.chat.kick(cid, self._ban_notice(ban, now), f"banned by {ban.by}{why}")
            return
        mute = self.mutes.find(nick, account, ip, now)
        if mute is not None and cid not in self._muted:
            self._muted[cid] = mute.until
            self.watched.add(cid)

    def _parse_sanction(
        self, conn: Conn, cid: int, arg: str, usage: str
    ) -> tuple[Sanction, str] | None:
        parts = arg.split(None, 1)
        if not parts:
            self._refuse(conn, cid, f"error: usage: {usage}")
            return None
        mask = parse_mask(parts[0])
        if mask is None:
            self._refuse(
                conn, cid, f"error: invalid mask {quote(parts[0])} (a nick, an IP or a CIDR)"
            )
            return None
        rest = parts[1] if len(parts) > 1 else ""
        words = rest.split(None, 1)
        until: float | None = None
        if words and (seconds := parse_duration(words[0])) is not None:
            until = time.time() + seconds
            rest = words[1] if len(words) > 1 else ""
        return Sanction(mask, until, rest.strip(), self.who(cid)), parts[0]

    def cmd_ban(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/ban MASK [DURATION] [reason]`` (operators)."""
        if not self.is_operator(cid):
            self._refuse(conn, cid, "error: not permitted")
            return True
        parsed = self._parse_sanction(conn, cid, arg, "/ban MASK [DURATION] [reason]")
        if parsed is None:
            return True
        ban, _ = parsed
        now = time.time()
        self.bans.add(ban)
        self.records.put("ban", ban.mask.text, ban.record())
        self.chat.bus.publish(Moderated("ban", ban.mask.text, ban.until, ban.reason, ban.by))
        audit(ban.by, f"banned {_until_text(ban.until, now)}", ban.mask.text, ban.reason)
        count = self._enforce_ban(ban)
        conn.send_line(
            f"{NOTICE}banned {ban.mask.text} {_until_text(ban.until, now)}"
            f" ({count} disconnected here)"
        )
        return True

    def cmd_unban(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/unban MASK`` (operators)."""
        if not self.is_operator(cid):
            self._refuse(conn, cid, "error: not permitted")
            return True
        mask = parse_mask(arg)
        if mask is None or self.bans.remove(mask.text) is None:
            self._refuse(conn, cid, f"error: no ban on {quote(arg)}")
            return True
        self.records.delete("ban", mask.text)
        who = self.who(cid)
        self.chat.bus.publish(Moderated("unban", mask.text, None, "", who))
        audit(who, "unbanned", mask.text, "")
        conn.send_line(f"{NOTICE}unbanned {mask.text}")
        return True

    def cmd_banned(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/banned``: the bans in force (operators)."""
        if not self.is_operator(cid):
            self._refuse(conn, cid, "error: not permitted")
            return True
        now = time.time()
        expired: list[str] = []
        bans = self.bans.active(now, expired)
        for key in expired:
            self.records.delete("ban", key)
        if not bans:
            conn.send_line(f"{NOTICE}no bans")
        for b in bans:
            why = f": {b.reason}" if b.reason else ""
            conn.send_line(f"{NOTICE}ban {b.mask.text} by {b.by} {_until_text(b.until, now)}{why}")
        return True

    # ------------------------------------------------------------------ mute

    def cmd_mute(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/mute NICK [DURATION] [reason]``: an operator anywhere (a mask), a room owner
        someone in their room, here."""
        parsed = self._parse_sanction(conn, cid, arg, "/mute NICK [DURATION] [reason]")
        if parsed is None:
            return True
        mute, target = parsed
        core = self.chat.core
        if not self.is_operator(cid):
            # A room owner may mute someone who is in their room, here.
            tcid = core.cid_of(target)
            room = core.room_of(cid)
            ok = tcid is not None and self.owns(cid, room) and core.room_of(tcid) == room
            if not ok or tcid is None:
                self._refuse(conn, cid, "error: not permitted")
                return True
            self._muted[tcid] = mute.until
            self.watched.add(tcid)
            self._tell(tcid, mute, "muted")
            audit(mute.by, f"muted in {room}", target, mute.reason)
            conn.send_line(f"{NOTICE}muted {target}")
            return True
        now = time.time()
        self.mutes.add(mute)
        self.records.put("mute", mute.mask.text, mute.record())
        self.chat.bus.publish(Moderated("mute", mute.mask.text, mute.until, mute.reason, mute.by))
        audit(mute.by, f"muted {_until_text(mute.until, now)}", mute.mask.text, mute.reason)
        count = self._enforce_mute(mute)
        conn.send_line(
            f"{NOTICE}muted {mute.mask.text} {_until_text(mute.until, now)} ({count} here)"
        )
        return True

    def _tell(self, cid: int, s: Sanction, what: str) -> None:
        conn = self.chat.conn_of(cid)
        if conn is not None:
            why = f": {s.reason}" if s.reason else ""
            conn.send_line(
                f"{NOTICE}you were {what} by {s.by} {_until_text(s.until, time.time())}{why}"
            )

    def _enforce_mute(self, mute: Sanction) -> int:
        count = 0
        core = self.chat.core
        for cid in self.chat.local_cids():
            conn = self.chat.conn_of(cid)
            ip = peer_host(conn.peer) if conn is not None else None
            if mute.mask.matches(core.nick(cid), self.account_of(cid), ip):
                self._muted[cid] = mute.until
                self.watched.add(cid)
                self._tell(cid, mute, "muted")
                count += 1
        return count

    def _lift_mute_cid(self, cid: int) -> None:
        self._muted.pop(cid, None)
        if not self.is_pending(cid):
            self.watched.discard(cid)
        conn = self.chat.conn_of(cid)
        if conn is not None:
            conn.send_line(f"{NOTICE}you may speak again")

    def _lift_mute(self, mask_text: str) -> int:
        mask = parse_mask(mask_text)
        count = 0
        if mask is None:
            return 0
        core = self.chat.core
        for cid in list(self._muted):
            conn = self.chat.conn_of(cid)
            ip = peer_host(conn.peer) if conn is not None else None
            if mask.matches(core.nick(cid), self.account_of(cid), ip):
                self._lift_mute_cid(cid)
                count += 1
        return count

    def cmd_unmute(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/unmute NICK``: an operator (a mask, everywhere), a room owner in their room."""
        core = self.chat.core
        mask = parse_mask(arg) if arg else None
        if mask is None:
            self._refuse(conn, cid, "error: usage: /unmute NICK")
            return True
        if not self.is_operator(cid):
            tcid = core.cid_of(arg)
            room = core.room_of(cid)
            if tcid is None or not self.owns(cid, room) or core.room_of(tcid) != room:
                self._refuse(conn, cid, "error: not permitted")
                return True
            self._lift_mute_cid(tcid)
            conn.send_line(f"{NOTICE}unmuted {arg}")
            return True
        self.mutes.remove(mask.text)
        self.records.delete("mute", mask.text)
        who = self.who(cid)
        self.chat.bus.publish(Moderated("unmute", mask.text, None, "", who))
        audit(who, "unmuted", mask.text, "")
        count = self._lift_mute(mask.text)
        conn.send_line(f"{NOTICE}unmuted {mask.text} ({count} here)")
        return True

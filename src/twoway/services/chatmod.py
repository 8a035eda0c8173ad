"""Chat governance: accounts, the server password, operators, room owners, kick, ban, mute,
a lockable topic and the audit log.

:class:`ChatMod` is the chat's :class:`~twoway.services.chat.Moderator`. The pure parts are in
:mod:`twoway.sansio.moderation` (skeletons, masks, durations, sanctions, throttles, password
hashes); this module holds the state that goes with connections, runs password hashing in a
thread (scrypt takes ~50 ms: never on the event loop), writes through to the
:class:`~twoway.store.records.Records` and tells the other servers on the bus.

What costs per line: nothing for a plain line of a client that is neither muted nor waiting
for ``/pass`` (the chat checks one set, :attr:`ChatMod.watched`). Bans are checked when a
client connects, takes a nick or identifies, never per line.

Every moderation action is one line on the ``twoway.audit`` logger: who, what, whom, why.
Passwords are never logged nor echoed: command lines are not kept in history, and no log line
carries their arguments.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twoway.config import Settings
from twoway.errors import ConfigError
from twoway.sansio.bus import Moderated, RecordSet
from twoway.sansio.chat import NOTICE
from twoway.sansio.chat.rules import COMMAND, NAME, guest_number, quote, room_key
from twoway.sansio.moderation import (
    AttemptThrottle,
    JoinThrottle,
    Sanction,
    Sanctions,
    format_duration,
    hash_password,
    is_password_hash,
    nick_key,
    parse_duration,
    parse_mask,
    verify_password,
)
from twoway.store.records import MemoryRecords, Records

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.services.chat import ChatService

__all__ = ["DEFAULT_IDENTIFY_GRACE", "JOIN_BURST", "ChatMod", "attach_moderation"]

log = logging.getLogger("twoway.chat")
audit_log = logging.getLogger("twoway.audit")

#: Seconds to identify after taking a registered nick.
DEFAULT_IDENTIFY_GRACE = 30.0
#: Connections from one address at once before ``--join-rate`` applies.
JOIN_BURST = 10
# A password shorter than this is refused at /register: it would fall to the first guesses.
_MIN_PASSWORD = 6
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_GRACE_WHY = "registered nick not identified"


def _fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as lower-case hex without colons, or None."""
    t = text.replace(":", "").lower()
    return t if _FINGERPRINT.fullmatch(t) else None


def _host(peer: str) -> str:
    """The host of ``host:port`` / ``[v6]:port``."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


def _until_text(until: float | None, now: float) -> str:
    return "permanently" if until is None else f"for {format_duration(until - now)}"


class ChatMod:
    """Governance of one chat server (see the module docstring).

    ``records`` is where accounts, bans, mutes and room owners persist (default: memory);
    ``operators`` maps operator names to a password hash or a certificate fingerprint;
    ``password`` is the server password (plain or a hash), None for an open server.
    """

    def __init__(
        self,
        chat: ChatService,
        *,
        records: Records | None = None,
        operators: dict[str, str] | None = None,
        password: str | None = None,
        identify_grace: float = DEFAULT_IDENTIFY_GRACE,
        join_rate: float = 0.0,
    ) -> None:
        self.chat = chat
        self.records: Records = records if records is not None else MemoryRecords()
        self.operators = dict(operators or {})
        self.password = password
        self.identify_grace = identify_grace
        self.joins = JoinThrottle(join_rate, JOIN_BURST)
        self.attempts = AttemptThrottle()
        #: Clients whose plain lines we must see: muted, or not past /pass yet.
        self.watched: set[int] = set()
        self._pending: set[int] = set()  # waiting for /pass
        self._muted: dict[int, float | None] = {}  # cid -> until (wall clock)
        self._identified: dict[int, str] = {}  # cid -> account name
        self._opers: dict[int, str] = {}  # cid -> operator name
        self._graces: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.bans = Sanctions()
        self.mutes = Sanctions()
        # Accounts by lower-case name: {"name", "hash", "cert"}; and by skeleton key.
        self._accounts: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, str] = {}
        self._rooms: dict[str, dict[str, Any]] = {}  # room -> {"owner", "locked"}
        self._load()

    # ------------------------------------------------------------------ records

    def _load(self) -> None:
        for key, value in self.records.load("account").items():
            if isinstance(value, dict):
                self._set_account(key, value)
        for kind, sanctions in (("ban", self.bans), ("mute", self.mutes)):
            for value in self.records.load(kind).values():
                s = Sanction.from_record(value)
                if s is not None:
                    sanctions.add(s)
        for key, value in self.records.load("room").items():
            if isinstance(value, dict):
                self._rooms[key] = value

    def _set_account(self, key: str, value: dict[str, Any] | None) -> None:
        old = self._accounts.pop(key, None)
        if old is not None:
            self._by_key.pop(nick_key(old["name"]), None)
        if value is not None and isinstance(value.get("name"), str):
            self._accounts[key] = value
            self._by_key[nick_key(value["name"])] = key

    def _put(self, kind: str, key: str, value: Any) -> None:
        """Write through, and tell the other servers."""
        if value is None:
            self.records.delete(kind, key)
        else:
            self.records.put(kind, key, value)
        text = "" if value is None else json.dumps(value)
        self.chat.bus.publish(RecordSet(kind, key, text))

    def bus_item(self, item: Moderated | RecordSet) -> None:
        """A moderation item of another server: applied here (and persisted here)."""
        if isinstance(item, RecordSet):
            value = json.loads(item.value) if item.value else None
            if value is None:
                self.records.delete(item.kind, item.key)
            else:
                self.records.put(item.kind, item.key, value)
            if item.kind == "account":
                self._set_account(item.key, value)
            elif item.kind == "room":
                if value is None:
                    self._rooms.pop(item.key, None)
                else:
                    self._rooms[item.key] = value
            return
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

    # ------------------------------------------------------------------ lifecycle

    def admit(self, conn: Conn, cid: int) -> bool:
        """A client connected: the join throttle, the address bans, the server password."""
        ip = _host(conn.peer)
        now = time.time()
        if not self.joins.allow(ip, asyncio.get_running_loop().time()):
            self._refuse(conn, cid, "error: too many connections from your address, try later")
            return False
        expired: list[str] = []
        ban = self.bans.find(None, None, ip, now, addresses_only=True, expired=expired)
        for key in expired:
            self.records.delete("ban", key)
        if ban is not None:
            self._refuse(conn, cid, self._ban_notice(ban, now), "banned")
            return False
        if self.password is not None:
            self._pending.add(cid)
            self.watched.add(cid)
            conn.send_line(f"{NOTICE}this server needs a password: /pass PASSWORD")
            return False
        return True

    def _refuse(self, conn: Conn, cid: int, notice: str, reason: str = "refused") -> None:
        self.chat.kick(cid, notice, reason)

    def joined(self, conn: Conn, cid: int) -> None:
        """In the chat: identify by certificate, apply name bans and mutes."""
        cert = getattr(conn, "peer_certificate", None)
        if cert is not None:
            for account in self._accounts.values():
                if account.get("cert") == cert.fingerprint:
                    self._claim(conn, cid, account["name"], "certificate")
                    break
        self._recheck(cid)

    def left(self, cid: int) -> None:
        """The client is gone: forget what was kept for it."""
        self.watched.discard(cid)
        self._pending.discard(cid)
        self._muted.pop(cid, None)
        self._identified.pop(cid, None)
        self._opers.pop(cid, None)
        timer = self._graces.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def is_operator(self, cid: int) -> bool:
        """Whether ``cid`` became an operator with ``/oper``."""
        return cid in self._opers

    def account_of(self, cid: int) -> str | None:
        """The account ``cid`` identified as, or None."""
        return self._identified.get(cid)

    # ------------------------------------------------------------------ lines

    def line(self, conn: Conn, cid: int, line: str, now: float) -> bool:
        """See :class:`~twoway.services.chat.Moderator`."""
        if cid in self._pending:
            self._pass(conn, cid, line)
            return True
        muted = cid in self._muted and self._still_muted(cid)
        if line[:1] != "/" or line[:2] == "//":
            if muted:
                conn.send_line("error: you are muted")
                return True
            return False
        m = COMMAND.fullmatch(line)
        assert m is not None
        word, arg = m.group(1).lower(), m.group(2).strip()
        if muted and word in ("me", "msg", "topic"):
            conn.send_line("error: you are muted")
            return True
        handler = _COMMANDS.get(word)
        if handler is None:
            return False
        return handler(self, conn, cid, arg) is not False

    def _still_muted(self, cid: int) -> bool:
        until = self._muted.get(cid)
        if until is not None and until <= time.time():
            self._lift_mute_cid(cid)
            return False
        return True

    def _reply(self, conn: Conn, text: str) -> None:
        conn.send_line(text)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # ------------------------------------------------------------------ /pass

    def _pass(self, conn: Conn, cid: int, line: str) -> None:
        m = COMMAND.fullmatch(line) if line[:1] == "/" else None
        if m is None or m.group(1).lower() != "pass":
            if line.strip().lower() == "quit":
                self.chat.kick(cid, "Bye Bye!", "quit")
                return
            conn.send_line("error: this server needs a password first: /pass PASSWORD")
            return
        self._spawn(self._check_pass(conn, cid, m.group(2).strip()))

    async def _check_pass(self, conn: Conn, cid: int, given: str) -> None:
        ip = _host(conn.peer)
        loop = asyncio.get_running_loop()
        wait = self.attempts.wait("ip " + ip, loop.time())
        if wait > 0:
            conn.send_line(f"error: too many attempts, try again in {wait:.0f} s")
            return
        secret = self.password or ""
        if is_password_hash(secret):
            ok = bool(await self._in_thread(verify_password, given, secret))
        else:
            ok = hmac.compare_digest(given.encode(), secret.encode())
        if cid not in self._pending or conn.is_closing:
            return
        if not ok:
            self.attempts.failed("ip " + ip, loop.time())
            log.warning("%s: wrong server password", conn.peer)
            self.chat.kick(cid, "error: wrong password, disconnecting", "wrong password")
            return
        self.attempts.succeeded("ip " + ip)
        self._pending.discard(cid)
        self.watched.discard(cid)
        self.chat.enter_chat(conn, cid)

    # ------------------------------------------------------------------ identity

    def _nick_of(self, cid: int) -> str:
        return self.chat.core.nick(cid) or "?"

    def _lookalike(self, cid: int, nick: str) -> str | None:
        """Why ``cid`` may not take ``nick`` because it looks like somebody else's, or None."""
        key = nick_key(nick)
        lower = nick.lower()
        for other, name in self.chat.core.known_nicks():
            if other != cid and name.lower() != lower and nick_key(name) == key:
                return f"nick {quote(nick)} is too like {quote(name)}, who is here"
        owner = self._by_key.get(key)
        if owner is not None:
            name = self._accounts[owner]["name"]
            if name.lower() != lower and self._identified.get(cid) != name:
                return f"nick {quote(nick)} is too like the registered nick {quote(name)}"
        return None

    def _nick(self, conn: Conn, cid: int, arg: str) -> bool:
        parts = arg.split()
        if not parts or not NAME.fullmatch(parts[0]):
            return False  # the core's usage and validity errors
        if len(parts) > 1 and parts[0].lower() not in self._accounts:
            return False  # "/nick two words": the core's error
        nick = parts[0]
        refusal = self._lookalike(cid, nick)
        if refusal is not None:
            conn.send_line("error: " + refusal)
            return True
        if len(parts) > 1:
            self._spawn(self._identify(conn, cid, nick, " ".join(parts[1:])))
            return True
        self._take_nick(conn, cid, nick)
        return True

    def _take_nick(self, conn: Conn, cid: int, nick: str) -> None:
        """``/nick nick`` through the core, then the registered-nick grace and the bans."""
        before = self._nick_of(cid)
        self.chat.core_line(conn, "/nick " + nick, asyncio.get_running_loop().time())
        after = self._nick_of(cid)
        if after != before:
            self._after_rename(conn, cid)

    def _after_rename(self, conn: Conn, cid: int) -> None:
        nick = self._nick_of(cid)
        timer = self._graces.pop(cid, None)
        if timer is not None:
            timer.cancel()
        account = self._accounts.get(nick.lower())
        if account is not None and self._identified.get(cid) != account["name"]:
            grace = self.identify_grace
            conn.send_line(
                f"{NOTICE}{nick} is registered: /identify PASSWORD within {grace:g} s "
                "or you will be renamed"
            )
            loop = asyncio.get_running_loop()
            self._graces[cid] = loop.call_later(grace, self._grace_over, cid, nick)
        self._recheck(cid)

    def _grace_over(self, cid: int, nick: str) -> None:
        self._graces.pop(cid, None)
        if self._nick_of(cid) == nick and self._identified.get(cid) is None:
            self.chat.apply(self.chat.core.force_guest(cid, _GRACE_WHY))

    def _claim(self, conn: Conn, cid: int, name: str, how: str) -> None:
        """``cid`` proved it owns the account ``name``: it takes the nick (a local client
        holding it without having identified is renamed) and is identified."""
        self._identified[cid] = name
        timer = self._graces.pop(cid, None)
        if timer is not None:
            timer.cancel()
        core = self.chat.core
        if self._nick_of(cid).lower() != name.lower():
            holder = core.cid_of(name)
            if holder is not None and holder != cid and self.chat.conn_of(holder) is not None:
                self.chat.apply(core.force_guest(holder, "nick claimed by its owner"))
            self.chat.core_line(conn, "/nick " + name, asyncio.get_running_loop().time())
        conn.send_line(f"{NOTICE}you are identified as {name} ({how})")
        self._recheck(cid)

    async def _identify(self, conn: Conn, cid: int, name: str, password: str) -> None:
        account = self._accounts.get(name.lower())
        if account is None or not account.get("hash"):
            conn.send_line(f"error: nick {quote(name)} is not registered with a password")
            return
        if not await self._verify(conn, account["name"], password, account["hash"]):
            return
        if not conn.is_closing:
            self._claim(conn, cid, account["name"], "password")

    async def _verify(self, conn: Conn, name: str, password: str, phc: str) -> bool:
        """Check ``password`` under the attempt throttle (per address and per name)."""
        loop = asyncio.get_running_loop()
        keys = ("ip " + _host(conn.peer), "name " + name.lower())
        wait = max(self.attempts.wait(k, loop.time()) for k in keys)
        if wait > 0:
            conn.send_line(f"error: too many attempts, try again in {wait:.0f} s")
            return False
        ok = bool(await self._in_thread(verify_password, password, phc))
        if not ok:
            for k in keys:
                self.attempts.failed(k, loop.time())
            log.warning("%s: wrong password for %s", conn.peer, name)
            conn.send_line("error: wrong password")
            return False
        for k in keys:
            self.attempts.succeeded(k)
        return True

    def _cmd_identify(self, conn: Conn, cid: int, arg: str) -> bool:
        if not arg:
            conn.send_line("error: usage: /identify PASSWORD")
            return True
        self._spawn(self._identify(conn, cid, self._nick_of(cid), arg))
        return True

    def _cmd_register(self, conn: Conn, cid: int, arg: str) -> bool:
        words = arg.split()
        cert = "--cert" in words
        password = " ".join(w for w in words if w != "--cert")
        nick = self._nick_of(cid)
        if not words:
            conn.send_line("error: usage: /register PASSWORD [--cert]")
        elif guest_number(nick.lower()) is not None:
            conn.send_line("error: take a nick first (/nick NAME): guest nicks are not kept")
        elif nick.lower() in self._accounts:
            conn.send_line(f"error: nick {quote(nick)} is already registered")
        elif password and len(password) < _MIN_PASSWORD:
            conn.send_line(f"error: password too short (at least {_MIN_PASSWORD} characters)")
        else:
            fingerprint = None
            if cert:
                pc = getattr(conn, "peer_certificate", None)
                if pc is None:
                    conn.send_line("error: --cert needs a TLS client certificate")
                    return True
                fingerprint = pc.fingerprint
            self._spawn(self._register(conn, cid, nick, password, fingerprint))
        return True

    async def _register(
        self, conn: Conn, cid: int, nick: str, password: str, cert: str | None
    ) -> None:
        phc = ""
        if password:
            phc = str(await self._in_thread(hash_password, password, os.urandom(16)))
        if self._nick_of(cid) != nick or nick.lower() in self._accounts or conn.is_closing:
            return
        value = {"name": nick, "hash": phc, "cert": cert}
        self._set_account(nick.lower(), value)
        self._put("account", nick.lower(), value)
        self._identified[cid] = nick
        how = " and your certificate" if cert else ""
        conn.send_line(f"{NOTICE}{nick} is registered to you{how}")
        _audit(nick, "registered", nick, "")

    def _cmd_password(self, conn: Conn, cid: int, arg: str) -> bool:
        parts = arg.split()
        name = self._identified.get(cid)
        if len(parts) != 2:
            conn.send_line("error: usage: /password OLD NEW")
        elif name is None:
            conn.send_line("error: identify first (/identify PASSWORD)")
        elif len(parts[1]) < _MIN_PASSWORD:
            conn.send_line(f"error: password too short (at least {_MIN_PASSWORD} characters)")
        else:
            self._spawn(self._change_password(conn, name, parts[0], parts[1]))
        return True

    async def _change_password(self, conn: Conn, name: str, old: str, new: str) -> None:
        account = self._accounts.get(name.lower())
        if account is None:
            return
        if account.get("hash") and not await self._verify(conn, name, old, account["hash"]):
            return
        phc = str(await self._in_thread(hash_password, new, os.urandom(16)))
        value = dict(account, hash=phc)
        self._set_account(name.lower(), value)
        self._put("account", name.lower(), value)
        conn.send_line(f"{NOTICE}password changed")

    def _cmd_unregister(self, conn: Conn, cid: int, arg: str) -> bool:
        name = self._identified.pop(cid, None)
        if name is None:
            conn.send_line("error: identify first (/identify PASSWORD)")
            return True
        self._set_account(name.lower(), None)
        self._put("account", name.lower(), None)
        conn.send_line(f"{NOTICE}{name} is no longer registered")
        _audit(name, "unregistered", name, "")
        return True

    # ------------------------------------------------------------------ operators

    def _cmd_oper(self, conn: Conn, cid: int, arg: str) -> bool:
        parts = arg.split(None, 1)
        if not parts:
            conn.send_line("error: usage: /oper NAME [PASSWORD]")
            return True
        name = parts[0]
        secret = self.operators.get(name)
        fingerprint = _fingerprint(secret) if secret else None
        if fingerprint is not None:
            pc = getattr(conn, "peer_certificate", None)
            if pc is not None and pc.fingerprint == fingerprint:
                self._oper_up(conn, cid, name)
            else:
                conn.send_line("error: not permitted")
            return True
        if secret is None or len(parts) < 2:
            # Same answer whether or not the name exists: no hint for a guesser.
            self._spawn(self._oper_check(conn, cid, name, parts[1] if len(parts) > 1 else "", ""))
            return True
        self._spawn(self._oper_check(conn, cid, name, parts[1], secret))
        return True

    async def _oper_check(self, conn: Conn, cid: int, name: str, password: str, phc: str) -> None:
        if not phc:
            loop = asyncio.get_running_loop()
            self.attempts.failed("ip " + _host(conn.peer), loop.time())
            conn.send_line("error: wrong password")
            return
        if await self._verify(conn, "oper " + name, password, phc):
            self._oper_up(conn, cid, name)

    def _oper_up(self, conn: Conn, cid: int, name: str) -> None:
        self._opers[cid] = name
        conn.send_line(f"{NOTICE}you are an operator ({name})")
        _audit(self._nick_of(cid), "became operator", name, "")

    def _who(self, cid: int) -> str:
        nick = self._nick_of(cid)
        oper = self._opers.get(cid)
        return nick if oper is None or oper == nick else f"{nick} (operator {oper})"

    def _owns(self, cid: int, room: str | None) -> bool:
        account = self._identified.get(cid)
        if account is None or room is None:
            return False
        info = self._rooms.get(room)
        return info is not None and info.get("owner") == account

    # ------------------------------------------------------------------ kick, ban, mute

    def _cmd_kick(self, conn: Conn, cid: int, arg: str) -> bool:
        parts = arg.split(None, 1)
        if not parts:
            conn.send_line("error: usage: /kick NICK [reason]")
            return True
        nick, reason = parts[0], (parts[1] if len(parts) > 1 else "")
        core = self.chat.core
        target = core.cid_of(nick)
        if target is None:
            conn.send_line(f"error: no such nick {quote(nick)}")
            return True
        who = self._who(cid)
        name = core.nick(target) or nick
        if cid in self._opers:
            _audit(who, "kicked", name, reason)
            if self.chat.conn_of(target) is not None:
                self._kick_cid(target, "kicked", who, reason)
            else:
                self.chat.bus.publish(Moderated("kick", name, None, reason, who))
            conn.send_line(f"{NOTICE}kicked {name}")
            return True
        room = core.room_of(cid)
        target_conn = self.chat.conn_of(target)
        if self._owns(cid, room) and target_conn is not None and core.room_of(target) == room:
            _audit(who, f"kicked from {room}", name, reason)
            why = f": {reason}" if reason else ""
            target_conn.send_line(f"{NOTICE}you were kicked from {room} by {who}{why}")
            self.chat.core_line(target_conn, "/part", asyncio.get_running_loop().time())
            return True
        conn.send_line("error: not permitted")
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
            ip = _host(conn.peer) if conn is not None else None
            if s.mask.matches(nick, self._identified.get(cid), ip):
                self._kick_cid(cid, what, s.by, s.reason)
                count += 1
        return count

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
            ip = _host(conn.peer) if conn is not None else None
            if ban.mask.matches(core.nick(cid), self._identified.get(cid), ip):
                why = f": {ban.reason}" if ban.reason else ""
                self.chat.kick(cid, self._ban_notice(ban, now), f"banned by {ban.by}{why}")
                count += 1
        return count

    def _recheck(self, cid: int) -> None:
        """Name bans and mutes, after the client got a (new) name."""
        core = self.chat.core
        conn = self.chat.conn_of(cid)
        if conn is None:
            return
        nick, account, ip = core.nick(cid), self._identified.get(cid), _host(conn.peer)
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
            conn.send_line(f"error: usage: {usage}")
            return None
        mask = parse_mask(parts[0])
        if mask is None:
            conn.send_line(f"error: invalid mask {quote(parts[0])} (a nick, an IP or a CIDR)")
            return None
        rest = parts[1] if len(parts) > 1 else ""
        words = rest.split(None, 1)
        until: float | None = None
        if words and (seconds := parse_duration(words[0])) is not None:
            until = time.time() + seconds
            rest = words[1] if len(words) > 1 else ""
        return Sanction(mask, until, rest.strip(), self._who(cid)), parts[0]

    def _cmd_ban(self, conn: Conn, cid: int, arg: str) -> bool:
        if cid not in self._opers:
            conn.send_line("error: not permitted")
            return True
        parsed = self._parse_sanction(conn, cid, arg, "/ban MASK [DURATION] [reason]")
        if parsed is None:
            return True
        ban, _ = parsed
        now = time.time()
        self.bans.add(ban)
        self.records.put("ban", ban.mask.text, ban.record())
        self.chat.bus.publish(Moderated("ban", ban.mask.text, ban.until, ban.reason, ban.by))
        _audit(ban.by, f"banned {_until_text(ban.until, now)}", ban.mask.text, ban.reason)
        count = self._enforce_ban(ban)
        conn.send_line(
            f"{NOTICE}banned {ban.mask.text} {_until_text(ban.until, now)}"
            f" ({count} disconnected here)"
        )
        return True

    def _cmd_unban(self, conn: Conn, cid: int, arg: str) -> bool:
        if cid not in self._opers:
            conn.send_line("error: not permitted")
            return True
        mask = parse_mask(arg)
        if mask is None or self.bans.remove(mask.text) is None:
            conn.send_line(f"error: no ban on {quote(arg)}")
            return True
        self.records.delete("ban", mask.text)
        who = self._who(cid)
        self.chat.bus.publish(Moderated("unban", mask.text, None, "", who))
        _audit(who, "unbanned", mask.text, "")
        conn.send_line(f"{NOTICE}unbanned {mask.text}")
        return True

    def _cmd_banned(self, conn: Conn, cid: int, arg: str) -> bool:
        if cid not in self._opers:
            conn.send_line("error: not permitted")
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

    def _cmd_mute(self, conn: Conn, cid: int, arg: str) -> bool:
        parsed = self._parse_sanction(conn, cid, arg, "/mute NICK [DURATION] [reason]")
        if parsed is None:
            return True
        mute, target = parsed
        core = self.chat.core
        if cid not in self._opers:
            # A room owner may mute someone who is in their room, here.
            tcid = core.cid_of(target)
            room = core.room_of(cid)
            ok = tcid is not None and self._owns(cid, room) and core.room_of(tcid) == room
            if not ok or tcid is None:
                conn.send_line("error: not permitted")
                return True
            self._muted[tcid] = mute.until
            self.watched.add(tcid)
            self._tell(tcid, mute, "muted")
            _audit(mute.by, f"muted in {room}", target, mute.reason)
            conn.send_line(f"{NOTICE}muted {target}")
            return True
        now = time.time()
        self.mutes.add(mute)
        self.records.put("mute", mute.mask.text, mute.record())
        self.chat.bus.publish(Moderated("mute", mute.mask.text, mute.until, mute.reason, mute.by))
        _audit(mute.by, f"muted {_until_text(mute.until, now)}", mute.mask.text, mute.reason)
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
            ip = _host(conn.peer) if conn is not None else None
            if mute.mask.matches(core.nick(cid), self._identified.get(cid), ip):
                self._muted[cid] = mute.until
                self.watched.add(cid)
                self._tell(cid, mute, "muted")
                count += 1
        return count

    def _lift_mute_cid(self, cid: int) -> None:
        self._muted.pop(cid, None)
        if cid not in self._pending:
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
            ip = _host(conn.peer) if conn is not None else None
            if mask.matches(core.nick(cid), self._identified.get(cid), ip):
                self._lift_mute_cid(cid)
                count += 1
        return count

    def _cmd_unmute(self, conn: Conn, cid: int, arg: str) -> bool:
        core = self.chat.core
        mask = parse_mask(arg) if arg else None
        if mask is None:
            conn.send_line("error: usage: /unmute NICK")
            return True
        if cid not in self._opers:
            tcid = core.cid_of(arg)
            room = core.room_of(cid)
            if tcid is None or not self._owns(cid, room) or core.room_of(tcid) != room:
                conn.send_line("error: not permitted")
                return True
            self._lift_mute_cid(tcid)
            conn.send_line(f"{NOTICE}unmuted {arg}")
            return True
        self.mutes.remove(mask.text)
        self.records.delete("mute", mask.text)
        who = self._who(cid)
        self.chat.bus.publish(Moderated("unmute", mask.text, None, "", who))
        _audit(who, "unmuted", mask.text, "")
        count = self._lift_mute(mask.text)
        conn.send_line(f"{NOTICE}unmuted {mask.text} ({count} here)")
        return True

    # ------------------------------------------------------------------ rooms

    def _cmd_join(self, conn: Conn, cid: int, arg: str) -> bool:
        name = room_key(arg) if arg else None
        core = self.chat.core
        if name is None or core.has_room(name):
            return False
        self.chat.core_line(conn, "/join " + arg, asyncio.get_running_loop().time())
        account = self._identified.get(cid)
        if core.room_of(cid) == name and account is not None and name not in self._rooms:
            value = {"owner": account, "locked": False}
            self._rooms[name] = value
            self._put("room", name, value)
            conn.send_line(f"{NOTICE}you own {name}")
        return True

    def _cmd_topic(self, conn: Conn, cid: int, arg: str) -> bool:
        room = self.chat.core.room_of(cid)
        if room is None or not arg:
            return False
        word = arg.lower()
        allowed = cid in self._opers or self._owns(cid, room)
        if word in ("lock", "unlock"):
            if not allowed:
                conn.send_line("error: not permitted")
                return True
            value = dict(self._rooms.get(room) or {"owner": None}, locked=word == "lock")
            self._rooms[room] = value
            self._put("room", room, value)
            _audit(self._who(cid), f"{word}ed the topic of", room, "")
            conn.send_line(f"{NOTICE}the topic of {room} is {word}ed")
            return True
        info = self._rooms.get(room)
        if info is not None and info.get("locked") and not allowed:
            conn.send_line(f"error: the topic of {room} is locked")
            return True
        return False


def _audit(who: str, what: str, whom: str, why: str) -> None:
    """One line per moderation action: who, what, whom, why."""
    audit_log.info("%s %s %s%s", who, what, whom, f" ({why})" if why else "")


_Handler = Callable[[ChatMod, "Conn", int, str], bool]
_COMMANDS: dict[str, _Handler] = {
    "nick": ChatMod._nick,
    "register": ChatMod._cmd_register,
    "identify": ChatMod._cmd_identify,
    "password": ChatMod._cmd_password,
    "unregister": ChatMod._cmd_unregister,
    "oper": ChatMod._cmd_oper,
    "kick": ChatMod._cmd_kick,
    "ban": ChatMod._cmd_ban,
    "unban": ChatMod._cmd_unban,
    "banned": ChatMod._cmd_banned,
    "mute": ChatMod._cmd_mute,
    "unmute": ChatMod._cmd_unmute,
    "join": ChatMod._cmd_join,
    "topic": ChatMod._cmd_topic,
}


def check_operators(operators: dict[str, str]) -> None:
    """Every ``[operators]`` entry is a hash or a fingerprint; raises :class:`ConfigError`."""
    for name, value in operators.items():
        if not is_password_hash(value) and _fingerprint(value) is None:
            raise ConfigError(
                f"operators.{name}: not a password hash (make one with twoway hash-password) "
                "nor a SHA-256 certificate fingerprint"
            )


def attach_moderation(
    chat: ChatService, settings: Settings, records: Records | None = None
) -> ChatMod:
    """Give ``chat`` its moderation, configured from ``settings``."""
    operators = dict(settings.operators)
    check_operators(operators)
    mod = ChatMod(
        chat,
        records=records,
        operators=operators,
        password=settings.password,
        identify_grace=settings.identify_grace,
        join_rate=settings.join_rate,
    )
    chat.mod = mod
    return mod

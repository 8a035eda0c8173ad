"""Chat governance: accounts, the server password, operators, room owners, kick, ban, mute,
a lockable topic and the audit log.

:class:`ChatMod` is the chat's :class:`~twoway.services.chat.Moderator`: it admits clients,
dispatches the moderation commands and keeps room ownership. Who a client is (``/pass``,
accounts, ``/oper``) is :mod:`twoway.services.chatidentity`; bans, mutes and kicks are
:mod:`twoway.services.chatsanctions`. The pure parts are in :mod:`twoway.sansio.moderation`
(skeletons, masks, durations, sanctions, throttles, password hashes); these modules hold the
state that goes with connections, run password hashing in a thread (scrypt takes ~50 ms:
never on the event loop), write through to the :class:`~twoway.store.records.Records` and
tell the other servers on the bus.

What costs per line: nothing for a plain line of a client that is neither muted nor waiting
for ``/pass`` (the chat checks one set, :attr:`ChatMod.watched`). Bans are checked when a
client connects, takes a nick or identifies, never per line.

Every moderation action is one line on the ``twoway.audit`` logger: who, what, whom, why.
Passwords are never logged nor echoed: command lines are not kept in history, and no log line
carries their arguments.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twoway.config import Settings
from twoway.errors import ConfigError
from twoway.sansio.bus import Moderated, RecordSet
from twoway.sansio.chat import NOTICE
from twoway.sansio.chat.rules import COMMAND, room_key
from twoway.sansio.moderation import JoinThrottle, is_password_hash
from twoway.services.chataudit import audit, peer_host, refuse
from twoway.services.chatidentity import DEFAULT_IDENTIFY_GRACE, Identity, fingerprint
from twoway.services.chatsanctions import ChatSanctions
from twoway.store.records import MemoryRecords, Records

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.services.chat import ChatService

__all__ = ["DEFAULT_IDENTIFY_GRACE", "JOIN_BURST", "ChatMod", "attach_moderation"]

#: Connections from one address at once before ``--join-rate`` applies.
JOIN_BURST = 10

# A moderation command: (conn, cid, argument) -> True if handled (False: the core's).
_Handler = Callable[["Conn", int, str], bool]


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
        self.joins = JoinThrottle(join_rate, JOIN_BURST)
        #: Clients whose plain lines we must see: muted, or not past /pass yet.
        self.watched: set[int] = set()
        #: Accounts, the server password, operators.
        self.identity = identity = Identity(
            chat,
            put=self.put,
            recheck=self._recheck,
            watched=self.watched,
            operators=dict(operators or {}),
            password=password,
            identify_grace=identify_grace,
        )
        #: Bans, mutes, kicks.
        self.sanctions = sanctions = ChatSanctions(
            chat,
            self.records,
            self.watched,
            account_of=identity.account_of,
            is_operator=identity.is_operator,
            is_pending=identity.is_pending,
            who=identity.who,
            owns=self.owns,
        )
        self._rooms: dict[str, dict[str, Any]] = {}  # room -> {"owner", "locked"}
        self._commands: dict[str, _Handler] = {
            "nick": identity.cmd_nick,
            "register": identity.cmd_register,
            "identify": identity.cmd_identify,
            "password": identity.cmd_password,
            "unregister": identity.cmd_unregister,
            "oper": identity.cmd_oper,
            "kick": sanctions.cmd_kick,
            "ban": sanctions.cmd_ban,
            "unban": sanctions.cmd_unban,
            "banned": sanctions.cmd_banned,
            "mute": sanctions.cmd_mute,
            "unmute": sanctions.cmd_unmute,
            "join": self._cmd_join,
            "topic": self._cmd_topic,
        }
        self._load()

    # ------------------------------------------------------------------ records

    def _load(self) -> None:
        for key, value in self.records.load("account").items():
            if isinstance(value, dict):
                self.identity.set_account(key, value)
        self.sanctions.load()
        for key, value in self.records.load("room").items():
            if isinstance(value, dict):
                self._rooms[key] = value

    def put(self, kind: str, key: str, value: Any) -> None:
        """Write the record ``kind``/``key`` through (None: delete it), and tell the other
        servers."""
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
                self.identity.set_account(item.key, value)
            elif item.kind == "room":
                if value is None:
                    self._rooms.pop(item.key, None)
                else:
                    self._rooms[item.key] = value
            return
        self.sanctions.bus_item(item)

    def _recheck(self, cid: int) -> None:
        self.sanctions.recheck(cid)

    # ------------------------------------------------------------------ lifecycle

    def admit(self, conn: Conn, cid: int) -> bool:
        """A client connected: the join throttle, the address bans, the server password."""
        ip = peer_host(conn.peer)
        now = time.time()
        if not self.joins.allow(ip, asyncio.get_running_loop().time()):
            self.chat.kick(
                cid, "error: too many connections from your address, try later", "refused"
            )
            return False
        notice = self.sanctions.address_ban(ip, now)
        if notice is not None:
            self.chat.kick(cid, notice, "banned")
            return False
        if self.identity.password is not None:
            self.identity.ask_password(conn, cid)
            return False
        return True

    def joined(self, conn: Conn, cid: int) -> None:
        """In the chat: identify by certificate, apply name bans and mutes."""
        self.identity.joined(conn, cid)
        self.sanctions.recheck(cid)

    def left(self, cid: int) -> None:
        """The client is gone: forget what was kept for it."""
        self.watched.discard(cid)
        self.identity.left(cid)
        self.sanctions.left(cid)

    def is_operator(self, cid: int) -> bool:
        """Whether ``cid`` became an operator with ``/oper``."""
        return self.identity.is_operator(cid)

    def account_of(self, cid: int) -> str | None:
        """The account ``cid`` identified as, or None."""
        return self.identity.account_of(cid)

    def _refuse(self, conn: Conn, cid: int | None, text: str) -> None:
        # The error line to the client, and to the log (rate-limited): see chataudit.refuse.
        refuse(self.chat.core, conn, cid, text)

    # ------------------------------------------------------------------ lines

    def line(self, conn: Conn, cid: int, line: str, now: float) -> bool:
        """See :class:`~twoway.services.chat.Moderator`."""
        if self.identity.is_pending(cid):
            self.identity.pass_line(conn, cid, line)
            return True
        muted = self.sanctions.is_muted(cid)
        if line[:1] != "/" or line[:2] == "//":
            if muted:
                self._refuse(conn, cid, "error: you are muted")
                return True
            return False
        m = COMMAND.fullmatch(line)
        assert m is not None
        word, arg = m.group(1).lower(), m.group(2).strip()
        if muted and word in ("me", "msg", "topic"):
            self._refuse(conn, cid, "error: you are muted")
            return True
        handler = self._commands.get(word)
        if handler is None:
            return False
        return handler(conn, cid, arg) is not False

    # ------------------------------------------------------------------ rooms

    def owns(self, cid: int, room: str | None) -> bool:
        """Whether ``cid`` is identified as the owner of ``room``."""
        account = self.identity.account_of(cid)
        if account is None or room is None:
            return False
        info = self._rooms.get(room)
        return info is not None and info.get("owner") == account

    def _cmd_join(self, conn: Conn, cid: int, arg: str) -> bool:
        name = room_key(arg) if arg else None
        core = self.chat.core
        if name is None or core.has_room(name):
            return False
        self.chat.core_line(conn, "/join " + arg, asyncio.get_running_loop().time())
        account = self.identity.account_of(cid)
        if core.room_of(cid) == name and account is not None and name not in self._rooms:
            value = {"owner": account, "locked": False}
            self._rooms[name] = value
            self.put("room", name, value)
            conn.send_line(f"{NOTICE}you own {name}")
        return True

    def _cmd_topic(self, conn: Conn, cid: int, arg: str) -> bool:
        room = self.chat.core.room_of(cid)
        if room is None or not arg:
            return False
        word = arg.lower()
        allowed = self.identity.is_operator(cid) or self.owns(cid, room)
        if word in ("lock", "unlock"):
            if not allowed:
                self._refuse(conn, cid, "error: not permitted")
                return True
            value = dict(self._rooms.get(room) or {"owner": None}, locked=word == "lock")
            self._rooms[room] = value
            self.put("room", room, value)
            audit(self.identity.who(cid), f"{word}ed the topic of", room, "")
            conn.send_line(f"{NOTICE}the topic of {room} is {word}ed")
            return True
        info = self._rooms.get(room)
        if info is not None and info.get("locked") and not allowed:
            self._refuse(conn, cid, f"error: the topic of {room} is locked")
            return True
        return False


def check_operators(operators: dict[str, str]) -> None:
    """Every ``[operators]`` entry is a hash or a fingerprint; raises :class:`ConfigError`."""
    for name, value in operators.items():
        if not is_password_hash(value) and fingerprint(value) is None:
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

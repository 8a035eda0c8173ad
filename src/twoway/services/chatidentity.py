"""Who a chat client is: the server password, accounts, nicks that look alike, operators.

:class:`Identity` holds the state that goes with connections (who identified as which
account, who is an operator, who still owes the server password), answers ``/pass``,
``/nick``, ``/register``, ``/identify``, ``/password``, ``/unregister`` and ``/oper``, and
identifies a client by its TLS certificate. Password hashing (scrypt, ~50 ms) runs in a
thread, never on the event loop; failed attempts are throttled per address and per name.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twoway.sansio.chat import NOTICE
from twoway.sansio.chat.rules import COMMAND, NAME, guest_number, quote
from twoway.sansio.moderation import (
    AttemptThrottle,
    hash_password,
    is_password_hash,
    nick_key,
    verify_password,
)
from twoway.services.chataudit import audit, peer_host, refuse

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.services.chat import ChatService

__all__ = ["DEFAULT_IDENTIFY_GRACE", "Identity", "fingerprint"]

log = logging.getLogger("twoway.chat")

#: Seconds to identify after taking a registered nick.
DEFAULT_IDENTIFY_GRACE = 30.0
# A password shorter than this is refused at /register: it would fall to the first guesses.
_MIN_PASSWORD = 6
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_GRACE_WHY = "registered nick not identified"


def fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as lower-case hex without colons, or None."""
    t = text.replace(":", "").lower()
    return t if _FINGERPRINT.fullmatch(t) else None


class Identity:
    """Accounts, the server password and operators of one chat server.

    ``put`` writes a record through (and tells the other servers); ``recheck`` applies the
    name bans and mutes after a client got a (new) name; ``watched`` is the set of clients
    whose plain lines moderation sees (shared with the sanctions). ``operators`` maps
    operator names to a password hash or a certificate fingerprint; ``password`` is the
    server password (plain or a hash), None for an open server.
    """

    def __init__(
        self,
        chat: ChatService,
        *,
        put: Callable[[str, str, Any], None],
        recheck: Callable[[int], None],
        watched: set[int],
        operators: dict[str, str],
        password: str | None,
        identify_grace: float,
    ) -> None:
        self.chat = chat
        self.put = put
        self.recheck = recheck
        self.watched = watched
        self.operators = operators
        self.password = password
        self.identify_grace = identify_grace
        self.attempts = AttemptThrottle()
        self._pending: set[int] = set()  # waiting for /pass
        self._identified: dict[int, str] = {}  # cid -> account name
        self._opers: dict[int, str] = {}  # cid -> operator name
        self._graces: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Accounts by lower-case name: {"name", "hash", "cert"}; and by skeleton key.
        self._accounts: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, str] = {}

    # ------------------------------------------------------------------ state

    def set_account(self, key: str, value: dict[str, Any] | None) -> None:
        """The account ``key`` (a lower-case name) is now ``value`` (None: deleted)."""
        old = self._accounts.pop(key, None)
        if old is not None:
            self._by_key.pop(nick_key(old["name"]), None)
        if value is not None and isinstance(value.get("name"), str):
            self._accounts[key] = value
            self._by_key[nick_key(value["name"])] = key

    def is_pending(self, cid: int) -> bool:
        """Whether ``cid`` still owes the server password."""
        return cid in self._pending

    def is_operator(self, cid: int) -> bool:
        """Whether ``cid`` became an operator with ``/oper``."""
        return cid in self._opers

    def account_of(self, cid: int) -> str | None:
        """The account ``cid`` identified as, or None."""
        return self._identified.get(cid)

    def nick_of(self, cid: int) -> str:
        """The nick of ``cid`` (``?`` if it has none)."""
        return self.chat.core.nick(cid) or "?"

    def who(self, cid: int) -> str:
        """``cid`` as the audit log and its targets read it: the nick, and the operator."""
        nick = self.nick_of(cid)
        oper = self._opers.get(cid)
        return nick if oper is None or oper == nick else f"{nick} (operator {oper})"

    def ask_password(self, conn: Conn, cid: int) -> None:
        """``cid`` must give the server password before it enters the chat."""
        self._pending.add(cid)
        self.watched.add(cid)
        conn.send_line(f"{NOTICE}this server needs a password: /pass PASSWORD")

    def joined(self, conn: Conn, cid: int) -> None:
        """In the chat: identify by certificate."""
        cert = getattr(conn, "peer_certificate", None)
        if cert is not None:
            for account in self._accounts.values():
                if account.get("cert") == cert.fingerprint:
                    self._claim(conn, cid, account["name"], "certificate")
                    break

    def left(self, cid: int) -> None:
        """The client is gone: forget what was kept for it."""
        self._pending.discard(cid)
        self._identified.pop(cid, None)
        self._opers.pop(cid, None)
        timer = self._graces.pop(cid, None)
        if timer is not None:
            timer.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _refuse(self, conn: Conn, cid: int | None, text: str) -> None:
        # The error line to the client, and to the log (rate-limited): see chataudit.refuse.
        refuse(self.chat.core, conn, cid, text)

    # ------------------------------------------------------------------ /pass

    def pass_line(self, conn: Conn, cid: int, line: str) -> None:
        """A line of ``cid`` while it owes the server password: ``/pass``, ``quit``, or a
        reminder."""
        m = COMMAND.fullmatch(line) if line[:1] == "/" else None
        if m is None or m.group(1).lower() != "pass":
            if line.strip().lower() == "quit":
                self.chat.kick(cid, "Bye Bye!", "quit")
                return
            self._refuse(conn, cid, "error: this server needs a password first: /pass PASSWORD")
            return
        self._spawn(self._check_pass(conn, cid, m.group(2).strip()))

    async def _check_pass(self, conn: Conn, cid: int, given: str) -> None:
        ip = peer_host(conn.peer)
        loop = asyncio.get_running_loop()
        wait = self.attempts.wait("ip " + ip, loop.time())
        if wait > 0:
            self._refuse(conn, cid, f"error: too many attempts, try again in {wait:.0f} s")
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

    # ------------------------------------------------------------------ nicks and accounts

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

    def cmd_nick(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/nick NAME [PASSWORD]``: look-alikes refused, registered nicks identified."""
        parts = arg.split()
        if not parts or not NAME.fullmatch(parts[0]):
            return False  # the core's usage and validity errors
        if len(parts) > 1 and parts[0].lower() not in self._accounts:
            return False  # "/nick two words": the core's error
        nick = parts[0]
        refusal = self._lookalike(cid, nick)
        if refusal is not None:
            self._refuse(conn, cid, "error: " + refusal)
            return True
        if len(parts) > 1:
            self._spawn(self._identify(conn, cid, nick, " ".join(parts[1:])))
            return True
        self._take_nick(conn, cid, nick)
        return True

    def _take_nick(self, conn: Conn, cid: int, nick: str) -> None:
        """``/nick nick`` through the core, then the registered-nick grace and the bans."""
        before = self.nick_of(cid)
        self.chat.core_line(conn, "/nick " + nick, asyncio.get_running_loop().time())
        after = self.nick_of(cid)
        if after != before:
            self._after_rename(conn, cid)

    def _after_rename(self, conn: Conn, cid: int) -> None:
        nick = self.nick_of(cid)
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
        self.recheck(cid)

    def _grace_over(self, cid: int, nick: str) -> None:
        self._graces.pop(cid, None)
        if self.nick_of(cid) == nick and self._identified.get(cid) is None:
            self.chat.apply(self.chat.core.force_guest(cid, _GRACE_WHY))

    def _claim(self, conn: Conn, cid: int, name: str, how: str) -> None:
        """``cid`` proved it owns the account ``name``: it takes the nick (a local client
        holding it without having identified is renamed) and is identified."""
        self._identified[cid] = name
        timer = self._graces.pop(cid, None)
        if timer is not None:
            timer.cancel()
        core = self.chat.core
        if self.nick_of(cid).lower() != name.lower():
            holder = core.cid_of(name)
            if holder is not None and holder != cid and self.chat.conn_of(holder) is not None:
                self.chat.apply(core.force_guest(holder, "nick claimed by its owner"))
            self.chat.core_line(conn, "/nick " + name, asyncio.get_running_loop().time())
        conn.send_line(f"{NOTICE}you are identified as {name} ({how})")
        self.recheck(cid)

    async def _identify(self, conn: Conn, cid: int, name: str, password: str) -> None:
        account = self._accounts.get(name.lower())
        if account is None or not account.get("hash"):
            self._refuse(conn, cid, f"error: nick {quote(name)} is not registered with a password")
            return
        if not await self._verify(conn, account["name"], password, account["hash"]):
            return
        if not conn.is_closing:
            self._claim(conn, cid, account["name"], "password")

    async def _verify(self, conn: Conn, name: str, password: str, phc: str) -> bool:
        """Check ``password`` under the attempt throttle (per address and per name)."""
        loop = asyncio.get_running_loop()
        keys = ("ip " + peer_host(conn.peer), "name " + name.lower())
        wait = max(self.attempts.wait(k, loop.time()) for k in keys)
        if wait > 0:
            self._refuse(conn, None, f"error: too many attempts, try again in {wait:.0f} s")
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

    def cmd_identify(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/identify PASSWORD``: as the account of the current nick."""
        if not arg:
            self._refuse(conn, cid, "error: usage: /identify PASSWORD")
            return True
        self._spawn(self._identify(conn, cid, self.nick_of(cid), arg))
        return True

    def cmd_register(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/register PASSWORD [--cert]``: the current nick becomes an account."""
        words = arg.split()
        cert = "--cert" in words
        password = " ".join(w for w in words if w != "--cert")
        nick = self.nick_of(cid)
        if not words:
            self._refuse(conn, cid, "error: usage: /register PASSWORD [--cert]")
        elif guest_number(nick.lower()) is not None:
            self._refuse(
                conn, cid, "error: take a nick first (/nick NAME): guest nicks are not kept"
            )
        elif nick.lower() in self._accounts:
            self._refuse(conn, cid, f"error: nick {quote(nick)} is already registered")
        elif password and len(password) < _MIN_PASSWORD:
            self._refuse(
                conn, cid, f"error: password too short (at least {_MIN_PASSWORD} characters)"
            )
        else:
            cert_print = None
            if cert:
                pc = getattr(conn, "peer_certificate", None)
                if pc is None:
                    self._refuse(conn, cid, "error: --cert needs a TLS client certificate")
                    return True
                cert_print = pc.fingerprint
            self._spawn(self._register(conn, cid, nick, password, cert_print))
        return True

    async def _register(
        self, conn: Conn, cid: int, nick: str, password: str, cert: str | None
    ) -> None:
        phc = ""
        if password:
            phc = str(await self._in_thread(hash_password, password, os.urandom(16)))
        if self.nick_of(cid) != nick or nick.lower() in self._accounts or conn.is_closing:
            return
        value = {"name": nick, "hash": phc, "cert": cert}
        self.set_account(nick.lower(), value)
        self.put("account", nick.lower(), value)
        self._identified[cid] = nick
        how = " and your certificate" if cert else ""
        conn.send_line(f"{NOTICE}{nick} is registered to you{how}")
        audit(nick, "registered", nick, "")

    def cmd_password(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/password OLD NEW``: change the password of the account identified as."""
        parts = arg.split()
        name = self._identified.get(cid)
        if len(parts) != 2:
            self._refuse(conn, cid, "error: usage: /password OLD NEW")
        elif name is None:
            self._refuse(conn, cid, "error: identify first (/identify PASSWORD)")
        elif len(parts[1]) < _MIN_PASSWORD:
            self._refuse(
                conn, cid, f"error: password too short (at least {_MIN_PASSWORD} characters)"
            )
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
        self.set_account(name.lower(), value)
        self.put("account", name.lower(), value)
        conn.send_line(f"{NOTICE}password changed")

    def cmd_unregister(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/unregister``: delete the account identified as."""
        name = self._identified.pop(cid, None)
        if name is None:
            self._refuse(conn, cid, "error: identify first (/identify PASSWORD)")
            return True
        self.set_account(name.lower(), None)
        self.put("account", name.lower(), None)
        conn.send_line(f"{NOTICE}{name} is no longer registered")
        audit(name, "unregistered", name, "")
        return True

    # ------------------------------------------------------------------ operators

    def cmd_oper(self, conn: Conn, cid: int, arg: str) -> bool:
        """``/oper NAME [PASSWORD]``: by password, or by the client's certificate."""
        parts = arg.split(None, 1)
        if not parts:
            self._refuse(conn, cid, "error: usage: /oper NAME [PASSWORD]")
            return True
        name = parts[0]
        secret = self.operators.get(name)
        wanted = fingerprint(secret) if secret else None
        if wanted is not None:
            pc = getattr(conn, "peer_certificate", None)
            if pc is not None and pc.fingerprint == wanted:
                self._oper_up(conn, cid, name)
            else:
                self._refuse(conn, cid, "error: not permitted")
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
            self.attempts.failed("ip " + peer_host(conn.peer), loop.time())
            self._refuse(conn, cid, "error: wrong password")
            return
        if await self._verify(conn, "oper " + name, password, phc):
            self._oper_up(conn, cid, name)

    def _oper_up(self, conn: Conn, cid: int, name: str) -> None:
        self._opers[cid] = name
        conn.send_line(f"{NOTICE}you are an operator ({name})")
        audit(self.nick_of(cid), "became operator", name, "")

"""Session resume for plain line clients: the token table.

Every client holds one *token* (given in its welcome, replaced by ``/token``). While it is
connected the token names its connection; when the connection is lost the token becomes a
:class:`Ticket` — the nick (held meanwhile so nobody else takes it), the room and the
position in that room's history — valid for ``window`` seconds. A new connection whose first
line is ``/resume TOKEN`` takes the ticket back (:meth:`TokenTable.claim`): once, and only
within the window. A token used, replaced or expired is remembered for a while so the refusal
can say why; one never issued is ``unknown token``.

Tokens come from the caller (``secrets.token_urlsafe``: unguessable, and bound to nothing a
client can forge). A ticket is known by its token's *key* (:func:`token_key`, a hash): what a
store keeps, so a copy of the database or of Redis holds no token a client could use, and a
log never shows one.

**Outliving the process.** A :class:`SessionSink` (see :attr:`TokenTable.sink`) is told of
each ticket made (:meth:`~SessionSink.saved`) and of each one that ends (claimed, expired:
:meth:`~SessionSink.dropped`): a durable store writes them, and the tickets it kept are
given back at the next start with :meth:`TokenTable.restore` (their age, not their time: the
clock of the new process has another origin). :func:`ticket_record` and
:func:`ticket_from_record` are the record both sides agree on.

The table keeps no clock: times are passed in. Pure, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

__all__ = [
    "Claim",
    "Refused",
    "SessionSink",
    "Ticket",
    "TokenTable",
    "ticket_from_record",
    "ticket_record",
    "token_key",
]


def token_key(token: str) -> str:
    """The key a ticket is known by: the first 128 bits of the token's SHA-256, in hex (a
    token has 144 random bits: the key names it, and cannot be turned back into it)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A departed client's session: ``nick`` in ``room``, having had every line up to
    ``last`` of that room's ``epoch``; it left at ``left_at``.

    ``key`` is its token's :func:`token_key`; ``held``: its nick is kept for it meanwhile
    (not when the client closed the connection itself); ``cid``: the id its connection had
    (a server of a cluster finds its departure in the shared log by it)."""

    key: str
    nick: str
    room: str
    epoch: str
    last: int
    left_at: float
    held: bool = True
    cid: int = 0


class SessionSink(Protocol):
    """Told of the tickets made and ended, to keep them where they outlive the process."""

    def saved(self, ticket: Ticket) -> None:
        """``ticket`` was made (a client's connection was lost): keep it. Must not block."""

    def dropped(self, key: str) -> None:
        """The ticket ``key`` ended (claimed, expired): forget it. Must not block."""


def ticket_record(ticket: Ticket, left: float) -> dict[str, Any]:
    """What a store keeps of ``ticket`` (a JSON object), ``left`` being the wall-clock time
    it was made (seconds since the epoch). The key is stored beside it, not in it."""
    return {
        "nick": ticket.nick,
        "room": ticket.room,
        "epoch": ticket.epoch,
        "last": ticket.last,
        "left": left,
        "held": ticket.held,
        "cid": ticket.cid,
    }


def ticket_from_record(key: str, record: Any, wall: float) -> Ticket | None:
    """The ticket a store kept under ``key`` (see :func:`ticket_record`) when the wall clock
    reads ``wall``, its ``left_at`` on a clock that reads 0 now (minus its age: what
    :meth:`TokenTable.restore` takes); None if the record is not one (a store is outside
    input: anything malformed is skipped, never raised)."""
    if not isinstance(record, dict):
        return None
    nick, room, epoch = record.get("nick"), record.get("room"), record.get("epoch", "")
    last, left = record.get("last", 0), record.get("left")
    held, cid = record.get("held", True), record.get("cid", 0)
    if not (
        isinstance(key, str)
        and key
        and isinstance(nick, str)
        and nick
        and isinstance(room, str)
        and room
        and isinstance(epoch, str)
        and type(last) is int
        and last >= 0
        and isinstance(left, int | float)
        and not isinstance(left, bool)
        and math.isfinite(left)
        and type(held) is bool
        and type(cid) is int
    ):
        return None
    age = max(wall - float(left), 0.0)
    return Ticket(key, nick, room, epoch, last, -age, held, cid)


@dataclass(frozen=True, slots=True)
class Refused:
    """A refused claim: ``reason`` is ``expired``, ``unknown token`` or ``already used``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A token that names a connection still open (the client came back before the server
    saw the old one go): the caller departs ``cid`` and claims again."""

    cid: int


class TokenTable:
    """Tokens of connected clients, tickets of departed ones, and the spent tokens.

    ``window``: seconds a ticket stays valid after its client left. Spent tokens (used,
    replaced, expired) are remembered for ``memory`` more seconds (default: ten windows),
    then forgotten. ``sink``, if set, is told of every ticket made and ended.
    """

    __slots__ = ("_by_cid", "_live", "_restored", "_spent", "memory", "sink", "tickets", "window")

    def __init__(self, window: float, memory: float | None = None) -> None:
        if window <= 0:
            raise ValueError(f"resume window must be > 0 (got {window})")
        self.window = window
        self.memory = 10 * window if memory is None else memory
        self.sink: SessionSink | None = None
        self._live: dict[str, int] = {}  # token -> cid
        self._by_cid: dict[int, str] = {}  # cid -> its token
        #: key -> ticket, oldest departure first (dict order).
        self.tickets: dict[str, Ticket] = {}
        # key -> (reason, when): used, replaced or expired; oldest first.
        self._spent: dict[str, tuple[str, float]] = {}
        # Tickets given back by a store, their times counted from the next call's ``now``.
        self._restored: list[Ticket] = []

    def __len__(self) -> int:
        return len(self._live) + len(self.tickets) + len(self._restored)

    def token_of(self, cid: int) -> str | None:
        """The token of the connected client ``cid``."""
        return self._by_cid.get(cid)

    def restore(self, tickets: list[Ticket]) -> None:
        """Tickets a store kept (the previous process's departed clients), each ``left_at``
        counted from the time of the next call (0: then; see :func:`ticket_from_record`).
        Their sink records exist already: they are not saved again."""
        self._restored += tickets

    def _settle(self, now: float) -> None:
        restored, self._restored = self._restored, []
        merged = [*self.tickets.values()]
        for t in restored:
            if t.key not in self.tickets:
                merged.append(replace(t, left_at=now + t.left_at))
        merged.sort(key=lambda t: t.left_at)
        self.tickets = {t.key: t for t in merged}

    def issue(self, cid: int, token: str, now: float) -> None:
        """``token`` is now ``cid``'s (its previous one, if any, is spent). ``token`` must be
        new (the caller makes it random)."""
        old = self._by_cid.get(cid)
        if old is not None:
            del self._live[old]
            self._spent[token_key(old)] = ("already used", now)
        self._live[token] = cid
        self._by_cid[cid] = token

    def forget(self, cid: int, now: float) -> None:
        """``cid`` left for good (``/quit``): its token is spent, no ticket."""
        token = self._by_cid.pop(cid, None)
        if token is not None:
            del self._live[token]
            self._spent[token_key(token)] = ("already used", now)

    def depart(
        self,
        cid: int,
        nick: str,
        room: str,
        epoch: str,
        last: int,
        now: float,
        *,
        held: bool = True,
    ) -> Ticket:
        """``cid``'s connection was lost: its token becomes a ticket (returned, and given to
        the sink) valid for ``window`` seconds. ``cid`` must hold a token."""
        if self._restored:
            self._settle(now)
        token = self._by_cid.pop(cid)
        del self._live[token]
        ticket = Ticket(token_key(token), nick, room, epoch, last, now, held, cid)
        self.tickets[ticket.key] = ticket
        if self.sink is not None:
            self.sink.saved(ticket)
        return ticket

    def claim(self, token: str, now: float) -> Ticket | Claim | Refused:
        """The ticket of ``token``, now spent; or :class:`Claim` if its connection is still
        open; or why not."""
        if self._restored:
            self._settle(now)
        key = token_key(token)
        ticket = self.tickets.pop(key, None)
        if ticket is not None:
            if self.sink is not None:
                self.sink.dropped(key)
            if now - ticket.left_at > self.window:
                self._spent[key] = ("expired", now)
                return Refused("expired")
            self._spent[key] = ("already used", now)
            return ticket
        cid = self._live.get(token)
        if cid is not None:
            return Claim(cid)
        spent = self._spent.get(key)
        return Refused(spent[0] if spent is not None else "unknown token")

    def expire(self, now: float) -> list[Ticket]:
        """Tickets whose window has passed, removed and returned (their nicks are free
        again); spent tokens older than ``memory`` are forgotten. Call now and then."""
        if self._restored:
            self._settle(now)
        gone: list[Ticket] = []
        tickets = self.tickets
        sink = self.sink
        while tickets:
            key, ticket = next(iter(tickets.items()))
            if now - ticket.left_at <= self.window:
                break
            del tickets[key]
            self._spent[key] = ("expired", now)
            if sink is not None:
                sink.dropped(key)
            gone.append(ticket)
        spent = self._spent
        while spent:
            key, (_, when) = next(iter(spent.items()))
            if now - when <= self.memory:
                break
            del spent[key]
        return gone

    def cid_of(self, token: str) -> int | None:
        """The connected client holding ``token``, if any."""
        return self._live.get(token)

    def discard(self, key: str, now: float) -> Ticket | None:
        """The ticket ``key`` was claimed through a shared store (on this server or another):
        remove it here without telling the sink (the store removed it); returned if known."""
        if self._restored:
            self._settle(now)
        ticket = self.tickets.pop(key, None)
        self._spent[key] = ("already used", now)
        return ticket

    def refusal(self, key: str, now: float) -> str:
        """Why the ticket ``key`` cannot be had, as this table knows it: a ticket still here
        that a shared store no longer has was used elsewhere (or expired there)."""
        if self._restored:
            self._settle(now)
        ticket = self.tickets.get(key)
        if ticket is not None:
            return "expired" if now - ticket.left_at > self.window else "already used"
        spent = self._spent.get(key)
        return spent[0] if spent is not None else "unknown token"

    def live(self) -> list[tuple[int, str]]:
        """``(cid, token)`` of every connected client holding one."""
        return list(self._by_cid.items())

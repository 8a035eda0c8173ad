"""Session resume for plain line clients: the token table.

Every client holds one *token* (given in its welcome, replaced by ``/token``). While it is
connected the token names its connection; when the connection is lost the token becomes a
:class:`Ticket` — the nick (held meanwhile so nobody else takes it), the room and the
position in that room's history — valid for ``window`` seconds. A new connection whose first
line is ``/resume TOKEN`` takes the ticket back (:meth:`TokenTable.claim`): once, and only
within the window. A token used, replaced or expired is remembered for a while so the refusal
can say why; one never issued is ``unknown token``.

Tokens come from the caller (``secrets.token_urlsafe``: unguessable, and bound to nothing a
client can forge). The table keeps no clock: times are passed in. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Claim", "Refused", "Ticket", "TokenTable"]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A departed client's session: ``nick`` in ``room``, having had every line up to
    ``last`` of that room's ``epoch``; it left at ``left_at``."""

    token: str
    nick: str
    room: str
    epoch: str
    last: int
    left_at: float


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
    then forgotten.
    """

    __slots__ = ("_by_cid", "_live", "_spent", "memory", "tickets", "window")

    def __init__(self, window: float, memory: float | None = None) -> None:
        if window <= 0:
            raise ValueError(f"resume window must be > 0 (got {window})")
        self.window = window
        self.memory = 10 * window if memory is None else memory
        self._live: dict[str, int] = {}  # token -> cid
        self._by_cid: dict[int, str] = {}  # cid -> its token
        #: token -> ticket, oldest departure first (dict order).
        self.tickets: dict[str, Ticket] = {}
        # token -> (reason, when): used, replaced or expired; oldest first.
        self._spent: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._live) + len(self.tickets)

    def token_of(self, cid: int) -> str | None:
        """The token of the connected client ``cid``."""
        return self._by_cid.get(cid)

    def issue(self, cid: int, token: str, now: float) -> None:
        """``token`` is now ``cid``'s (its previous one, if any, is spent). ``token`` must be
        new (the caller makes it random)."""
        old = self._by_cid.get(cid)
        if old is not None:
            del self._live[old]
            self._spent[old] = ("already used", now)
        self._live[token] = cid
        self._by_cid[cid] = token

    def forget(self, cid: int, now: float) -> None:
        """``cid`` left for good (``/quit``): its token is spent, no ticket."""
        token = self._by_cid.pop(cid, None)
        if token is not None:
            del self._live[token]
            self._spent[token] = ("already used", now)

    def depart(self, cid: int, nick: str, room: str, epoch: str, last: int, now: float) -> Ticket:
        """``cid``'s connection was lost: its token becomes a ticket (returned) valid for
        ``window`` seconds. ``cid`` must hold a token."""
        token = self._by_cid.pop(cid)
        del self._live[token]
        ticket = Ticket(token, nick, room, epoch, last, now)
        self.tickets[token] = ticket
        return ticket

    def claim(self, token: str, now: float) -> Ticket | Claim | Refused:
        """The ticket of ``token``, now spent; or :class:`Claim` if its connection is still
        open; or why not."""
        ticket = self.tickets.pop(token, None)
        if ticket is not None:
            if now - ticket.left_at > self.window:
                self._spent[token] = ("expired", now)
                return Refused("expired")
            self._spent[token] = ("already used", now)
            return ticket
        cid = self._live.get(token)
        if cid is not None:
            return Claim(cid)
        spent = self._spent.get(token)
        return Refused(spent[0] if spent is not None else "unknown token")

    def expire(self, now: float) -> list[Ticket]:
        """Tickets whose window has passed, removed and returned (their nicks are free
        again); spent tokens older than ``memory`` are forgotten. Call now and then."""
        gone: list[Ticket] = []
        tickets = self.tickets
        while tickets:
            token, ticket = next(iter(tickets.items()))
            if now - ticket.left_at <= self.window:
                break
            del tickets[token]
            self._spent[token] = ("expired", now)
            gone.append(ticket)
        spent = self._spent
        while spent:
            token, (_, when) = next(iter(spent.items()))
            if now - when <= self.memory:
                break
            del spent[token]
        return gone

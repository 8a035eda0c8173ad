"""Resume across the servers of a cluster: the chat's answer to the core's
:class:`~twoway.sansio.chat.Lookup`.

With ``--bus redis://`` resume tickets live in Redis (:class:`~twoway.bus.sessions.
RedisSessions`), where every server finds them. A ``/resume`` is then answered off the
hot path, once per resume: the client's reading is paused, the ticket is taken from Redis
(``GETDEL``: once, whichever server asks first), and what the client missed is read from
the shared log after the position its server had reached (:class:`~twoway.sansio.bus.replay.
StreamReplay`: every missed line once, in log order, on any server). A ticket made on this
server in this run (the room's numbering is the ticket's) is replayed from memory instead,
as without a bus. Then the core gets the answer (:meth:`ChatCore.resumed`), its effects are
applied and reading goes on.

The desk also tells the core which nicks are held for clients that may resume anywhere
(:meth:`ResumeDesk.hold_nicks`): the held tickets Redis has, read when the server starts
(before anyone connects) and again whenever the bus may have missed items — a server learns
of a hold on the bus (a :class:`~twoway.sansio.chat.Held` item) only if it was there to hear
it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twoway.sansio.bus.replay import StreamReplay
from twoway.sansio.chat import ChatCore, Effect, Lookup
from twoway.sansio.chat.resume import Ticket, ticket_from_record
from twoway.sansio.chat.sequence import MAX_REPLAY

if TYPE_CHECKING:
    from twoway.bus.sessions import RedisSessions
    from twoway.net.conn import Conn

__all__ = ["ResumeDesk"]

log = logging.getLogger("twoway.chat")

#: Log entries read per request when replaying from the shared log, and at most how many
#: requests: a client away for the whole resume window of a busy cluster is a few thousand
#: entries; the bound keeps one resume from reading the whole stream.
_PAGE = 1000
_MAX_PAGES = 100
#: Seconds between two tries to read the held nicks while Redis cannot be read.
_RETRY = 1.0


class ResumeDesk:
    """Answers :class:`~twoway.sansio.chat.Lookup` effects (see the module docstring).

    ``conns`` is the chat's map of local client ids to connections, ``apply`` carries out
    effects, ``now`` is the event loop's clock; ``sessions`` is the shared store (None: no
    lookup can succeed: the client is refused as for an unknown token).
    """

    def __init__(
        self,
        core: ChatCore,
        conns: dict[int, Conn],
        apply: Callable[[list[Effect]], None],
        now: Callable[[], float],
        sessions: RedisSessions | None,
    ) -> None:
        self.core = core
        self.conns = conns
        self.apply = apply
        self.now = now
        self.sessions = sessions
        self._tasks: set[asyncio.Task[None]] = set()
        self._up: Callable[[], bool] = lambda: True
        self._holding: asyncio.Task[None] | None = None  # reading the held nicks

    def lookup(self, effect: Lookup) -> None:
        """Take the ticket ``effect.key`` for ``effect.cid`` (reading from it paused
        meanwhile)."""
        conn = self.conns.get(effect.cid)
        if conn is None:
            return
        conn.pause_reading()
        task = asyncio.get_running_loop().create_task(self._answer(effect, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, effect: Lookup, conn: Conn) -> None:
        ticket: Ticket | None = None
        missed: tuple[list[str], int, int] | None = None
        try:
            if self.sessions is not None:
                record = await self.sessions.take(effect.key)
                if record is not None:
                    ticket, missed = await self._read(effect.key, record)
        except Exception:  # never into the loop: the client is refused, the server goes on
            log.exception("resume: error while looking up a session")
            ticket = None
        finally:
            if self.conns.get(effect.cid) is conn:
                self.apply(self.core.resumed(effect.cid, effect.key, ticket, missed, self.now()))
                if not conn.is_closing:
                    conn.resume_reading()

    async def _read(
        self, key: str, record: dict[str, Any]
    ) -> tuple[Ticket | None, tuple[list[str], int, int] | None]:
        found = ticket_from_record(key, record, time.time())
        if found is None:
            log.warning("resume: session %s… in redis is not a ticket: refused", key[:8])
            return None, None
        ticket = replace(found, left_at=self.now() + found.left_at)
        here = self.core.position(ticket.room)
        if here is not None and here[0] == ticket.epoch:
            return ticket, None  # made here, in this numbering: replay from memory
        node, at, seq = record.get("node"), record.get("at"), record.get("seq")
        if type(node) is not int or not isinstance(at, str) or self.sessions is None:
            return ticket, None  # no position: "history was reset", everything kept
        replay = StreamReplay(
            node, ticket.cid, ticket.room, limit=MAX_REPLAY, seq=seq if type(seq) is int else None
        )
        for page in range(_MAX_PAGES):
            got = await self.sessions.entries_after(at, _PAGE)
            if got is None:
                return ticket, None  # the log cannot be read: as above
            entries, trimmed = got
            if page == 0:
                replay.trimmed = trimmed
            replay.feed(entries)
            if len(entries) < _PAGE or replay.last_id is None:
                break
            at = replay.last_id.decode()
        return ticket, (replay.lines, replay.not_kept, replay.more)

    async def hold_nicks(self, up: Callable[[], bool]) -> None:
        """Hold the nicks Redis keeps tickets for (:meth:`ChatCore.hold_shared`): call at
        start-up, before anyone connects. ``up()`` says whether Redis is reachable (the
        bus's word): if not, or if the read fails, it is tried again in the background
        every second, for one resume window at most (by then every hold made before the
        start has ended). Never raises."""
        self._up = up
        if self.sessions is None:
            return
        if not up() or not await self._hold_once():
            self.reload_holds()

    def reload_holds(self) -> None:
        """Read the held nicks again, in the background: items of the bus may have been
        missed (some :class:`~twoway.sansio.chat.Held` among them). Nothing if a read is
        under way already."""
        if self.sessions is None or self._holding is not None:
            return
        deadline = self.now() + self.sessions.window
        self._holding = asyncio.get_running_loop().create_task(self._hold_until(deadline))

    async def _hold_until(self, deadline: float) -> None:
        try:
            while not (self._up() and await self._hold_once()):
                if self.now() >= deadline:
                    return
                await asyncio.sleep(_RETRY)
        finally:
            self._holding = None

    async def _hold_once(self) -> bool:
        """One read of the held nicks; False if Redis could not be read (to try again)."""
        assert self.sessions is not None
        try:
            tickets = await self.sessions.held()
        except Exception:  # a bug, not an outage: said once, not retried; the server goes on
            log.exception("resume: error while reading the held nicks")
            return True
        if tickets is None:
            return False
        held = self.core.hold_shared(tickets, self.now())
        if held:
            log.info("resume: %d nick(s) held for clients that may resume (from redis)", held)
        return True

    async def close(self) -> None:
        """Stop reading held nicks; wait (briefly) for the lookups in flight."""
        if self._holding is not None:
            self._holding.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

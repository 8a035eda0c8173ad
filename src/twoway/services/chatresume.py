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

    async def close(self) -> None:
        """Wait (briefly) for the lookups in flight."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

"""The chat core's memory methods: history numbering and journaling, and session resume
(their logic is in :mod:`.recall`, :mod:`.resume` and :mod:`.state`). A base of
:class:`~twoway.sansio.chat.core.ChatCore`, kept apart to keep each module small."""

from __future__ import annotations

from collections.abc import Iterable

from twoway.sansio.chat.effects import Effect
from twoway.sansio.chat.recall import expire, hold_shared, remote_held, restore_tickets, resumed
from twoway.sansio.chat.resume import SessionSink, Ticket
from twoway.sansio.chat.rules import MAX_TOPIC, NAME
from twoway.sansio.chat.state import ChatState, Journal, TopicSink
from twoway.sansio.text import escape_controls

__all__ = ["Memory"]


class Memory:
    """History and resume methods of :class:`~twoway.sansio.chat.core.ChatCore` (which
    sets ``_state``)."""

    __slots__ = ()
    _state: ChatState

    def expire(self, now: float) -> None:
        """Forget the sessions whose resume window has passed (their nicks are free again).
        Call now and then (every second is plenty); idempotent."""
        self._state.now = now
        expire(self._state)

    def set_sessions(self, sink: SessionSink | None, *, shared: bool = False) -> None:
        """Tell ``sink`` of every resume ticket made and ended from now on (a store that
        keeps them through a restart; it must queue, never block). ``shared``: the store is
        shared by every server of a cluster and is the authority: each ``/resume`` returns a
        :class:`~twoway.sansio.chat.Lookup` (answered with :meth:`resumed`). Nothing if
        resume is off."""
        if self._state.tokens is not None:
            self._state.tokens.sink = sink
            self._state.shared_sessions = shared

    def resumed(
        self,
        cid: int,
        key: str,
        ticket: Ticket | None,
        missed: tuple[list[str], int, int] | None,
        now: float,
    ) -> list[Effect]:
        """The answer to ``Lookup(cid, key)``: the ticket the shared store gave (None: it
        had none, and ``cid`` is told why), and what the client missed as ``(lines, not
        kept, more)`` read from the shared log, or None to replay this server's history.
        ``[]`` if ``cid`` is gone meanwhile."""
        state = self._state
        member = state.clients.get(cid)
        if member is None or state.tokens is None:
            return []
        state.now = now
        return resumed(state, member, key, ticket, missed)

    def remote_held(self, nick: str, key: str, on: bool, now: float) -> list[Effect]:
        """Another server holds ``nick`` for a departed client (a :class:`Held` item), or
        no longer: nobody here takes it meanwhile (for a window at most)."""
        self._state.now = now
        remote_held(self._state, nick, key, on)
        return []

    def hold_shared(self, tickets: Iterable[Ticket], now: float) -> int:
        """The resume tickets the store every server of a cluster shares holds, read at
        ``now`` (each ``left_at`` minus its age: see
        :func:`~twoway.sansio.chat.resume.ticket_from_record`), made on any server, this
        one's earlier runs included: the nicks held for them are held here too (as if each
        :class:`Held` item had been heard), each until a window after its client left or
        until its client resumes. How a server that was not there when they were published
        learns them: call at start-up (before anyone connects) and whenever items may have
        been missed; idempotent. Returns how many nicks were held (0 if resume is off)."""
        self._state.now = now
        return hold_shared(self._state, tickets)

    def restore_sessions(self, tickets: list[Ticket]) -> int:
        """Resume tickets a store kept through a restart (each ``left_at`` minus its age:
        see :func:`~twoway.sansio.chat.resume.ticket_from_record`): their clients may
        ``/resume`` within what is left of their window, and their nicks are held
        meanwhile. Call before anyone connects. Returns how many were taken (0 if resume is
        off)."""
        return restore_tickets(self._state, tickets)

    def live_sessions(self) -> list[int]:
        """The ids of the connected clients holding a resume token."""
        tokens = self._state.tokens
        return [] if tokens is None else [cid for cid, _ in tokens.live()]

    @property
    def held_nicks(self) -> int:
        """How many nicks are held for departed clients that may resume."""
        return len(self._state.held)

    def set_journal(self, journal: Journal | None, *, keep_rooms: bool = True) -> None:
        """Tell ``journal(room, epoch, seq, text)`` of every line kept from now on (a
        durable store: it must queue, never block). ``keep_rooms`` keeps the history and
        numbering of emptied rooms (what is on disk stays numbered the same)."""
        self._state.journal = journal
        self._state.keep_rooms = keep_rooms

    def set_topics(self, sink: TopicSink | None) -> None:
        """Tell ``sink(room, topic, nick)`` of every topic set by a client here from now on
        (a durable store: it must queue, never block), and ``sink(room, None, "")`` of one
        forgotten. While a sink is set, the topic of a room that empties is kept for when
        the room comes back (as the store keeps it through a restart)."""
        self._state.topic_sink = sink

    def restore_topics(self, topics: Iterable[tuple[str, str]]) -> int:
        """Topics loaded from a store at start-up, as ``(room, topic)``: each room shows its
        topic when it is created (the lobby at once). Call before anyone connects; rooms
        that are not valid are ignored. Returns how many were taken."""
        state = self._state
        taken = 0
        for room, topic in topics:
            if room[:1] != "#" or not NAME.fullmatch(room[1:]) or room != room.lower():
                continue
            text = escape_controls(topic[:MAX_TOPIC])
            r = state.rooms.get(room)
            if r is not None:
                r.topic = text
            else:
                state.keep_topic(room, text)
            taken += 1
        return taken

    def restore(self, room: str, epoch: str, last: int, lines: Iterable[str]) -> None:
        """History loaded from a store at start-up: ``lines`` are the newest of ``room``
        (oldest first), the newest numbered ``last`` in ``epoch``. Delivered to nobody;
        call before anyone connects. A room that is not valid is ignored."""
        state = self._state
        name = room if room[:1] == "#" and NAME.fullmatch(room[1:]) else None
        if name is None or name != name.lower():
            return
        texts = [escape_controls(t) for t in lines]
        r = state.rooms.get(name)
        store = state.histories
        if r is not None:
            if r.history is None:
                return
            store.drop(r.history)
            r.history = store.new(epoch, last - len(texts))
            h = r.history
        else:
            h = store.new(epoch, last - len(texts))
            if h is None:
                return
            state.park(name, h)
        assert h is not None
        for text in texts:
            store.append(h, text)

    def position(self, room: str) -> tuple[str, int] | None:
        """``(epoch, seq of the newest line)`` of ``room``, if it has history in memory."""
        r = self._state.rooms.get(room)
        h = r.history if r is not None else self._state.backfill.get(room)
        return None if h is None else (h.epoch, h.last)

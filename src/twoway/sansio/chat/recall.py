"""What a client can ask of the past: ``/history``, ``/since``, ``/seq``, ``/token`` and
``/resume``.

Room lines are numbered (see :mod:`.sequence`); the server keeps the newest of them in
memory (each room's :class:`~twoway.sansio.chat.history.RoomHistory`), and every replay is
answered from there, so the event loop never waits for a disk. A replayed line reads
``[history] text``, as on joining a room, and every replay ends with one summary line:
``*** replayed 37 lines; 0 missed`` or ``*** replayed 1000 lines; 212 no longer kept``.

* ``/seq`` — ``*** at #room seq N epoch E``: N is the number of the newest line of the room
  (the one you saw last, if you saw it live), E names the numbering;
* ``/since SEQ [EPOCH]`` — the lines after SEQ (at most :data:`MAX_REPLAY`; ``*** more:
  /since M`` says where to go on); with an EPOCH that is no longer the room's, the history
  was reset: ``*** history of #room was reset`` and everything kept is replayed;
* ``/history [N]`` — the last N lines (default: what a join replays);
* ``/token`` — a fresh resume token (the old one is spent);
* ``/resume TOKEN`` as the first line of a connection — the session of a departed client
  (see :mod:`.resume`): its nick, its room and the lines it missed.
"""

from __future__ import annotations

from collections.abc import Iterable

from twoway.sansio.chat.effects import Close, Effect, Held, Log, Lookup, Presence, Send, ToRoom
from twoway.sansio.chat.resume import Claim, Refused, Ticket, token_key
from twoway.sansio.chat.rooms import Member, Room
from twoway.sansio.chat.rules import NOTICE, quote
from twoway.sansio.chat.sequence import MAX_REPLAY, select, summary
from twoway.sansio.chat.state import ChatState

__all__ = [
    "RECALL_COMMANDS",
    "depart_resumable",
    "hold_shared",
    "replay",
    "restore_tickets",
    "resume",
    "token_line",
]

_TOKEN_LINE = NOTICE + "resume token: "


def _error(state: ChatState, member: Member, message: str) -> list[Effect]:
    state.counters.errors += 1
    return [Send(member.cid, "error: " + message)]


def token_line(state: ChatState, member: Member) -> list[Effect]:
    """Give ``member`` a new resume token (its old one is spent): ``*** resume token: T``.
    Nothing if resume is off."""
    tokens = state.tokens
    if tokens is None:
        return []
    token = state.new_token()
    tokens.issue(member.cid, token, state.now)
    return [Send(member.cid, _TOKEN_LINE + token)]


def replay(
    state: ChatState, member: Member, room: Room, after: int, out: list[Effect]
) -> tuple[int, int]:
    """Send ``member`` the kept lines of ``room`` after sequence number ``after`` (at most
    MAX_REPLAY), then the summary line; return ``(replayed, not kept)``."""
    cid = member.cid
    h = room.history
    if h is None:  # history is off: nothing is numbered, nothing kept
        out.append(Send(cid, NOTICE + summary(0, 0)))
        return 0, 0
    sel = select(h.first, h.last, after)
    lines = h.lines
    offset = sel.start - h.first
    for i in range(offset, offset + sel.count):
        out.append(Send(cid, "[history] " + lines[i]))
    if sel.more:
        out.append(Send(cid, f"{NOTICE}more: /since {sel.start + sel.count - 1}"))
    out.append(Send(cid, NOTICE + summary(sel.count, sel.not_kept)))
    return sel.count, sel.not_kept


def depart_resumable(state: ChatState, member: Member, why: str, out: list[Effect]) -> None:
    """``member``'s connection is gone (not by ``/quit``): its token becomes a ticket and the
    room is told as for any departure. Its nick is held for it unless it closed the
    connection itself (``why`` is ``closed``: a client that ends its session cleanly has left,
    and its nick is free at once, as it always was; it may still resume, as whoever its nick
    is free for)."""
    tokens = state.tokens
    if tokens is not None and tokens.token_of(member.cid) is not None:
        h = member.room.history
        epoch, last = ("", 0) if h is None else (h.epoch, h.last)
        held = why != "closed"
        ticket = tokens.depart(
            member.cid, member.nick, member.room.name, epoch, last, state.now, held=held
        )
        state.depart(member, why, out)
        if held:
            state.hold(member.key, ticket.key)
            if state.cluster:  # nobody takes it on another server either
                out.append(Held(member.nick, ticket.key, True))
    else:
        state.depart(member, why, out)


def restore_tickets(state: ChatState, tickets: list[Ticket]) -> int:
    """Tickets a store kept through a restart (see :meth:`TokenTable.restore`): their nicks
    are held again. Returns how many were taken (none if resume is off)."""
    tokens = state.tokens
    if tokens is None:
        return 0
    tokens.restore(tickets)
    for ticket in tickets:
        if ticket.held:
            state.hold(ticket.nick.lower(), ticket.key)
    return len(tickets)


def expire(state: ChatState) -> None:
    """Tickets past their window are gone: their nicks are free again (those held on another
    server's word too, a window after it was given)."""
    tokens = state.tokens
    if tokens is None:
        return
    for ticket in tokens.expire(state.now):
        state.release_hold(ticket.nick.lower(), ticket.key)
    holds = state.remote_holds
    while holds:
        key, (nick, since) = next(iter(holds.items()))
        if state.now - since <= tokens.window:
            break
        del holds[key]
        state.release_hold(nick, key)
    released = state.released
    while released:
        key, when = next(iter(released.items()))
        if state.now - when <= tokens.window:
            break
        del released[key]


def _ended(state: ChatState, key: str) -> None:
    """The hold of the ticket ``key`` ended elsewhere (resumed): it is never held again."""
    state.remote_holds.pop(key, None)
    state.released.pop(key, None)
    state.released[key] = state.now  # (at the end: oldest first)


def remote_held(state: ChatState, nick: str, key: str, on: bool) -> None:
    """Another server holds ``nick`` for the ticket ``key`` (``on``), or no longer."""
    if state.tokens is None or not nick.isascii():
        return
    lower = nick.lower()
    if on:
        if key in state.released:
            return  # its end was heard first (keys are single-use)
        state.remote_holds.pop(key, None)
        state.remote_holds[key] = (lower, state.now)
        state.hold(lower, key)
    else:
        _ended(state, key)
        state.release_hold(lower, key)


def hold_shared(state: ChatState, tickets: Iterable[Ticket]) -> int:
    """The tickets of the store every server shares, read now (each ``left_at`` minus its
    age): the nicks held for them are held here too, each until a window after its client
    left (as :func:`expire` ends a hold heard of on the bus) or until it resumes. Tickets
    not held, this server's own, those whose end was heard of and those past their window
    are skipped. Returns how many nicks were held."""
    tokens = state.tokens
    if tokens is None:
        return 0
    holds = state.remote_holds
    now = state.now
    taken = 0
    for ticket in tickets:
        key = ticket.key
        since = now + ticket.left_at
        if (
            not ticket.held
            or key in tokens.tickets
            or key in state.released
            or now - since > tokens.window
            or not ticket.nick.isascii()
        ):
            continue
        lower = ticket.nick.lower()
        known = holds.get(key)
        holds[key] = (lower, since if known is None else min(since, known[1]))
        state.hold(lower, key)
        taken += 1
    if taken:  # oldest first, as expire() reads them (some were heard of before the read)
        state.remote_holds = dict(sorted(holds.items(), key=lambda kv: kv[1][1]))
    return taken


def resume(state: ChatState, member: Member, token: str) -> list[Effect]:
    """``/resume TOKEN`` as ``member``'s first line (see the module docstring)."""
    tokens = state.tokens
    if tokens is None:
        return _error(state, member, "resume is not offered by this server")
    out: list[Effect] = []
    if state.shared_sessions:
        return _lookup(state, member, token)
    found = tokens.claim(token, state.now)
    if isinstance(found, Claim):
        # The old connection is still open here (the server has not seen it go yet): it
        # ends now, and the session moves to this one.
        old = state.clients.get(found.cid)
        if old is None or old is member:
            found = Refused("already used")
        else:
            out.append(Send(old.cid, "error: resumed elsewhere, disconnecting"))
            depart_resumable(state, old, "resumed elsewhere", out)
            out.append(Close(old.cid, "resumed elsewhere"))
            found = tokens.claim(token, state.now)
    if isinstance(found, Refused):
        return out + _error(state, member, f"resume refused ({found.reason})")
    if isinstance(found, Claim):  # still open after its departure: cannot happen
        return out + _error(state, member, "resume refused (already used)")
    return out + _restore(state, member, found)


def _lookup(state: ChatState, member: Member, token: str) -> list[Effect]:
    """``/resume`` with shared sessions: the ticket is taken from the store every server
    shares (the I/O layer answers with :func:`resumed`), once, wherever it was made."""
    tokens = state.tokens
    assert tokens is not None
    out: list[Effect] = []
    cid = tokens.cid_of(token)
    if cid is not None:
        old = state.clients.get(cid)
        if old is None or old is member:
            return _error(state, member, "resume refused (already used)")
        # The old connection is still open here: it ends now, its ticket goes to the store
        # (in order: the take comes after), and the session moves to this one.
        out.append(Send(old.cid, "error: resumed elsewhere, disconnecting"))
        depart_resumable(state, old, "resumed elsewhere", out)
        out.append(Close(old.cid, "resumed elsewhere"))
    out.append(Lookup(member.cid, token_key(token)))
    return out


def resumed(
    state: ChatState,
    member: Member,
    key: str,
    ticket: Ticket | None,
    missed: tuple[list[str], int, int] | None,
) -> list[Effect]:
    """The answer to a :class:`Lookup`: ``ticket`` as the shared store had it (None: it had
    none), and, when the client left another server (or another run of this one), what it
    missed there as ``(lines, not kept, more)``; None to replay from this server's history
    (the ticket was made here, in this room's numbering)."""
    tokens = state.tokens
    assert tokens is not None
    if ticket is None:
        return _error(state, member, f"resume refused ({tokens.refusal(key, state.now)})")
    if state.now - ticket.left_at > tokens.window:
        tokens.discard(key, state.now)
        return _error(state, member, "resume refused (expired)")
    tokens.discard(key, state.now)
    _ended(state, key)
    out = _restore(state, member, ticket, missed)
    if state.cluster and ticket.held:
        out.append(Held(ticket.nick, key, False))  # the other servers let go of the nick
    return out


def _restore(
    state: ChatState,
    member: Member,
    ticket: Ticket,
    missed: tuple[list[str], int, int] | None = None,
) -> list[Effect]:
    out: list[Effect] = []
    key = ticket.nick.lower()
    state.release_hold(key, ticket.key)
    cid = member.cid
    if member.key != key and key not in state.nicks and key not in state.remote.nicks:
        old = member.nick
        state.rename(member, ticket.nick)
        out.append(ToRoom(member.room.name, f"{NOTICE}{old} is now known as {member.nick}", None))
        if state.cluster:
            out.append(Presence(cid, member.nick, member.room.name))
    name = ticket.room
    limit = state.max_rooms
    if name != member.room.name and (
        name in state.rooms or limit is None or len(state.rooms) < limit
    ):
        out += state.move(member, name, replay=False)
    room = member.room
    out.append(Send(cid, f"{NOTICE}resumed as {member.nick} in {room.name}"))
    if missed is not None and room.name == ticket.room:
        replayed, lost = _replay_lines(member, room, missed, out)
        out += token_line(state, member)
        out.append(Log(f"{member.nick} resumed in {room.name}: {replayed} replayed, {lost} missed"))
        return out
    after = ticket.last
    h = room.history
    if room.name != ticket.room or h is None or h.epoch != ticket.epoch:
        if h is not None and h.last:
            out.append(Send(cid, f"{NOTICE}history of {room.name} was reset"))
        after = 0
    replayed, lost = replay(state, member, room, after, out)
    out += token_line(state, member)
    out.append(Log(f"{member.nick} resumed in {room.name}: {replayed} replayed, {lost} missed"))
    return out


def _replay_lines(
    member: Member, room: Room, missed: tuple[list[str], int, int], out: list[Effect]
) -> tuple[int, int]:
    """Replay lines read from the shared log (see :class:`~twoway.sansio.bus.StreamReplay`)
    and the summary; ``(replayed, not kept)``."""
    lines, not_kept, more = missed
    cid = member.cid
    out.extend(Send(cid, "[history] " + text) for text in lines)
    # Past the limit, the rest cannot be asked for with /since (numbers are this server's):
    # counted as not kept, so the summary never says "0 missed" when lines were left out.
    lost = not_kept + more
    out.append(Send(cid, NOTICE + summary(len(lines), lost)))
    return len(lines), lost


def _seq(state: ChatState, member: Member, arg: str) -> list[Effect]:
    room = member.room
    h = room.history
    epoch, last = ("-", 0) if h is None else (h.epoch, h.last)
    return [Send(member.cid, f"{NOTICE}at {room.name} seq {last} epoch {epoch}")]


def _since(state: ChatState, member: Member, arg: str) -> list[Effect]:
    parts = arg.split()
    if not parts or len(parts) > 2 or not parts[0].isdigit() or not parts[0].isascii():
        return _error(state, member, "usage: /since SEQ [EPOCH] (SEQ from /seq)")
    after = int(parts[0])
    room = member.room
    out: list[Effect] = []
    h = room.history
    if len(parts) == 2 and h is not None and parts[1] != h.epoch:
        out.append(Send(member.cid, f"{NOTICE}history of {room.name} was reset"))
        after = 0
    replay(state, member, room, after, out)
    return out


def _history(state: ChatState, member: Member, arg: str) -> list[Effect]:
    if arg and (not arg.isdigit() or not arg.isascii() or int(arg) < 1):
        return _error(state, member, f"usage: /history [N] (got {quote(arg)})")
    n = min(int(arg) if arg else max(state.replay, 1), MAX_REPLAY)
    room = member.room
    out: list[Effect] = []
    h = room.history
    replay(state, member, room, 0 if h is None else h.last - n, out)
    return out


def _token(state: ChatState, member: Member, arg: str) -> list[Effect]:
    out = token_line(state, member)
    return out or _error(state, member, "resume is not offered by this server")


def _resume_late(state: ChatState, member: Member, arg: str) -> list[Effect]:
    if not arg:
        return _error(state, member, "usage: /resume TOKEN (as the first line)")
    if state.tokens is None:
        return _error(state, member, "resume is not offered by this server")
    return _error(state, member, "resume refused (not the first line)")


#: The commands of this module, by name (merged into the chat's command table).
RECALL_COMMANDS = {
    "seq": _seq,
    "since": _since,
    "history": _history,
    "token": _token,
    "resume": _resume_late,
}

"""What the chat core asks the I/O layer to do: the effects, and the counters it keeps.

Every :class:`~twoway.sansio.chat.ChatCore` method returns a list of effects, to be carried
out in order:

* :class:`Send` — one line to one client;
* :class:`ToRoom` — one line to every member of a room except one;
* :class:`Close` — end a client's connection once the lines already queued are written;
* :class:`Log` — a lifecycle line for the server log.

A core created with ``cluster=True`` also returns what the other servers must learn, for the
I/O layer to publish on the bus: :class:`Presence`, :class:`Gone`, :class:`Said` and
:class:`TopicSet` (and a :class:`Send` to a client of another server). Effects hold only
ints, strings and ``None``, so they can be serialised onto a bus between processes. Their
text never contains a line terminator (the I/O layer appends the client's own) nor any
control character except TAB.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChatCounters",
    "Close",
    "Effect",
    "Gone",
    "Held",
    "Log",
    "Lookup",
    "Presence",
    "Said",
    "Send",
    "ToRoom",
    "TopicSet",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one line, ``text``, to the client ``cid``."""

    cid: int
    text: str


@dataclass(frozen=True, slots=True)
class ToRoom:
    """Send one line, ``text``, to every member of ``room`` except ``exclude`` (if not None)."""

    room: str
    text: str
    exclude: int | None


@dataclass(frozen=True, slots=True)
class Close:
    """End ``cid``'s connection after the lines already queued for it; ``reason`` is for logs.

    The core has already forgotten ``cid``: do not call :meth:`ChatCore.disconnect` for it
    (doing so is harmless, it returns no effects).
    """

    cid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """A lifecycle line for the server log: joins, departures, nick changes."""

    message: str


@dataclass(frozen=True, slots=True)
class Presence:
    """For the bus: the local client ``cid`` is now ``nick`` in ``room``.

    Returned (by a ``cluster=True`` core only) after the client connected, changed its nick,
    changed room or lost a nick collision: other servers pass it to
    :meth:`ChatCore.remote_presence`.
    """

    cid: int
    nick: str
    room: str


@dataclass(frozen=True, slots=True)
class Gone:
    """For the bus: the local client ``cid`` left; ``reason`` is what its room was told
    (``quit``, ``closed``, ``idle``...). Other servers pass it to :meth:`ChatCore.remote_gone`."""

    cid: int
    reason: str


@dataclass(frozen=True, slots=True)
class Said:
    """For the bus: the line ``text`` was said in ``room`` (a message or a ``/me``, exactly
    as the room reads it). Other servers pass it to :meth:`ChatCore.remote_message`."""

    room: str
    text: str


@dataclass(frozen=True, slots=True)
class TopicSet:
    """For the bus: ``nick`` set the topic of ``room`` to ``topic``. Other servers pass it to
    :meth:`ChatCore.remote_topic`."""

    room: str
    topic: str
    nick: str


@dataclass(frozen=True, slots=True)
class Held:
    """For the bus: the nick ``nick`` is held (``on``) for the departed client whose resume
    ticket is ``key`` (see :func:`~twoway.sansio.chat.resume.token_key`), or no longer
    (``on`` False: resumed, expired). Other servers pass it to :meth:`ChatCore.remote_held`:
    nobody takes the nick anywhere meanwhile. Returned by a ``cluster=True`` core only."""

    nick: str
    key: str
    on: bool


@dataclass(frozen=True, slots=True)
class Lookup:
    """A ``cluster=True`` core with shared sessions: ``cid`` sent ``/resume`` with a token
    whose ticket is ``key``; the ticket is in the store every server shares. Take it there
    (once: a take that succeeds removes it), read nothing more from ``cid`` meanwhile, and
    give the answer to :meth:`ChatCore.resumed`."""

    cid: int
    key: str


Effect = Send | ToRoom | Close | Log | Presence | Gone | Said | TopicSet | Held | Lookup


@dataclass(slots=True)
class ChatCounters:
    """Running totals, for metrics. ``joins - parts`` is always the number of clients."""

    lines_in: int = 0  # lines received from connected clients
    messages: int = 0  # room messages and /me actions broadcast
    private_messages: int = 0  # /msg delivered
    commands: int = 0  # command lines, bare "quit" included (valid or not)
    errors: int = 0  # "error: ..." lines sent
    joins: int = 0  # a client entered a room (connecting included)
    parts: int = 0  # a client left a room (disconnecting included)
    nick_changes: int = 0
    remote_messages: int = 0  # room lines from other servers (through the bus)

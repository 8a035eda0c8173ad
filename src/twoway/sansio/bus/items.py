"""What chat servers (*nodes*) tell each other through the bus: the *items*.

Every node is authoritative for its own clients and publishes what the others must know:
the chat effects :class:`~twoway.sansio.chat.Presence`, :class:`~twoway.sansio.chat.Gone`,
:class:`~twoway.sansio.chat.Said`, :class:`~twoway.sansio.chat.TopicSet` and
:class:`~twoway.sansio.chat.Send` (a private message to a client of another node), plus the
bus's own :class:`Hello` (the complete state of a node), :class:`Ask` (please publish your
Hello), :class:`Lost` (lines that could not be published), :class:`Heartbeat` and
:class:`Bye`; and for moderation, :class:`Moderated` (a ban, mute or kick every node applies
to its own clients) and :class:`RecordSet` (a durable record changed: an account, a room's
owner); and for session resume, :class:`~twoway.sansio.chat.Held` (a nick kept for a
departed client that may resume on any node). A node that does not know a kind skips it
(see the codec).
"""

from __future__ import annotations

from dataclasses import dataclass

from twoway.sansio.chat import Gone, Held, Presence, Said, Send, TopicSet

__all__ = [
    "USER_KINDS",
    "Ask",
    "Bye",
    "Heartbeat",
    "Hello",
    "Item",
    "Lost",
    "Moderated",
    "RecordSet",
]


@dataclass(frozen=True, slots=True)
class Hello:
    """The complete state of the publishing node: ``members`` as ``(cid, nick, room)`` and
    the ``topics`` of its rooms as ``(room, topic)``. A reader replaces what it knew of that
    node with it."""

    members: tuple[tuple[int, str, str], ...]
    topics: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Ask:
    """Node ``target`` (0: every node) should publish its :class:`Hello`."""

    target: int = 0


@dataclass(frozen=True, slots=True)
class Lost:
    """Room lines of the publishing node that never reached the log (its buffer overflowed
    while the log was unreachable): ``(room, count)`` pairs."""

    rooms: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The node is alive (published when it had nothing else to say for a while)."""


@dataclass(frozen=True, slots=True)
class Bye:
    """The node is stopping: forget it now rather than after its silence."""


@dataclass(frozen=True, slots=True)
class Moderated:
    """A moderation action for every node to apply to its own clients: ``action`` is
    ``ban``, ``unban``, ``mute``, ``unmute`` or ``kick``; ``mask`` says whom (see
    :mod:`twoway.sansio.moderation.masks`); ``until`` is a wall-clock expiry (None: none);
    ``reason`` and ``by`` are what the people concerned read."""

    action: str
    mask: str
    until: float | None
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class RecordSet:
    """A durable record changed: ``kind`` (``account``, ``owner``...), ``key`` and ``value``
    as JSON text (``""``: deleted). Every node keeps its own copy."""

    kind: str
    key: str
    value: str


Item = (
    Presence
    | Gone
    | Said
    | TopicSet
    | Send
    | Hello
    | Ask
    | Lost
    | Heartbeat
    | Bye
    | Moderated
    | RecordSet
    | Held
)

#: The chat's items: what counts as a "message" in logs and for the buffer limit. The bus's
#: own (Hello, Ask, Lost, Heartbeat, Bye) are never dropped nor counted.
USER_KINDS: frozenset[type] = frozenset(
    {Said, Send, TopicSet, Presence, Gone, Moderated, RecordSet, Held}
)

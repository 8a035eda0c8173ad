"""The chat, sans I/O: rooms, nicks, commands and the cluster merge, as calls in, effects out.

:class:`ChatCore` (:mod:`.core`) is what the I/O layer uses; it returns effects
(:mod:`.effects`): :class:`Send`, :class:`ToRoom`, :class:`Close`, :class:`Log`, and for the
other servers of a cluster :class:`Presence`, :class:`Gone`, :class:`Said`, :class:`TopicSet`.
Inside, :mod:`.state` holds the rooms, members, the remote directory (:mod:`.directory`) and
every transition; :mod:`.commands` is what a client can type; :mod:`.cluster` merges what the
other servers publish; :mod:`.rules` says what a nick, a room, a command and a server line
are; and :mod:`.history` keeps the rooms' history under one budget.
"""

from __future__ import annotations

from twoway.sansio.chat.core import (
    DEFAULT_HISTORY,
    DEFAULT_HISTORY_BYTES,
    DEFAULT_MAX_NAMES,
    DEFAULT_MAX_ROOMS,
    ChatCore,
)
from twoway.sansio.chat.effects import (
    ChatCounters,
    Close,
    Effect,
    Gone,
    Held,
    Log,
    Lookup,
    Presence,
    Said,
    Send,
    TopicSet,
    ToRoom,
)
from twoway.sansio.chat.rules import MAX_TOPIC, NOTICE, is_command

__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_MAX_NAMES",
    "DEFAULT_MAX_ROOMS",
    "MAX_TOPIC",
    "NOTICE",
    "ChatCore",
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
    "is_command",
]

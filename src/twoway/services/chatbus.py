"""What the other servers of a chat published, turned into the chat core's effects.

:class:`BusIntake` maps each bus event (an item received, a gap, messages missed, a server
lost, the outbox overflowing, a history backfill) and each item (said, presence, gone, a
private message, a topic, a server's hello or its lost lines, moderation) to the core's
directory and returns the effects for the local clients; the chat applies them. It is handed
the core, the chat's open connections, its counters and where moderation items go, never
the chat itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twoway.bus import Backfill, BusEvent, Missed, NodeLost, Overflow
from twoway.sansio.bus import Hello, Lost, Moderated, Received, RecordSet, RoomGap
from twoway.sansio.chat import ChatCore, Effect, Gone, Held, Presence, Said, Send, TopicSet
from twoway.sansio.text import escape_controls

if TYPE_CHECKING:
    from twoway.net.conn import Conn
    from twoway.services.chatfigures import ChatStats

__all__ = ["BusIntake"]


class BusIntake:
    """Bus events of other servers in, the core's effects out (see the module docstring).

    ``conns`` is the chat's map of local client id to connection (a private message is only
    for a local client); ``stats`` counts the gap notices; ``moderated`` gets the moderation
    items (accounts, bans, mutes...); ``now`` is the event loop's clock (a nick held for a
    resume elsewhere is held for a window from when it is heard of).
    """

    def __init__(
        self,
        core: ChatCore,
        conns: dict[int, Conn],
        stats: ChatStats,
        moderated: Callable[[Moderated | RecordSet], None],
        now: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.core = core
        self.now = now
        self.conns = conns
        self.stats = stats
        self.moderated = moderated
        #: Called when items may have been missed (a gap, a trimmed or emptied log): what
        #: the items say can be read elsewhere (the held nicks, from the shared sessions).
        self.on_missed: Callable[[], None] | None = None
        # What to do with each kind of bus event, and with each kind of item received.
        self._event_handlers: dict[type[Any], Callable[[Any], list[Effect]]] = {
            Received: self._received,
            RoomGap: self._room_gap,
            Missed: self._missed,
            NodeLost: self._node_lost,
            Overflow: self._overflow,
            Backfill: self._backfill,
        }
        self._item_handlers: dict[type[Any], Callable[[int, Any], list[Effect]]] = {
            Said: self._said,
            Presence: self._presence_of,
            Gone: self._gone,
            Send: self._private,
            TopicSet: self._topic_set,
            Hello: self._hello,
            Lost: self._lost,
            Moderated: self._moderated,
            RecordSet: self._moderated,
            Held: self._held,
        }

    def effects(self, events: Sequence[BusEvent]) -> list[Effect]:
        """The effects of ``events``, in order (the core's directory is updated on the way)."""
        handlers = self._event_handlers
        out: list[Effect] = []
        for event in events:
            out += handlers[type(event)](event)
        return out

    def _received(self, event: Received) -> list[Effect]:
        return self._item_handlers[type(event.item)](event.node, event.item)

    def _room_gap(self, event: RoomGap) -> list[Effect]:
        self.stats.gap_notices += 1
        return self.core.notice(missed_notice(event.missed), event.room)

    def _missed(self, event: Missed) -> list[Effect]:
        if self.on_missed is not None:
            self.on_missed()
        self.stats.gap_notices += 1
        n = f"{event.count} " if event.count is not None else ""
        return self.core.notice(f"*** notice: {n}messages from other servers may have been missed")

    def _node_lost(self, event: NodeLost) -> list[Effect]:
        return self.core.drop_node(event.node, event.reason)

    def _overflow(self, event: Overflow) -> list[Effect]:
        return self.core.notice(
            f"*** notice: {event.count} messages could not be sent to other servers"
        )

    def _backfill(self, event: Backfill) -> list[Effect]:
        self.core.backfill(event.lines)
        return []

    def _said(self, node: int, item: Said) -> list[Effect]:
        return self.core.remote_message(item.room, item.text)

    def _presence_of(self, node: int, item: Presence) -> list[Effect]:
        return self.core.remote_presence(item.cid, item.nick, item.room, node)

    def _gone(self, node: int, item: Gone) -> list[Effect]:
        return self.core.remote_gone(item.cid, item.reason)

    def _private(self, node: int, item: Send) -> list[Effect]:
        if item.cid in self.conns:  # (never back to the bus: it was meant for us)
            return [Send(item.cid, escape_controls(item.text))]
        return []

    def _topic_set(self, node: int, item: TopicSet) -> list[Effect]:
        return self.core.remote_topic(item.room, item.topic, item.nick)

    def _moderated(self, node: int, item: Moderated | RecordSet) -> list[Effect]:
        self.moderated(item)
        return []

    def _held(self, node: int, item: Held) -> list[Effect]:
        return self.core.remote_held(item.nick, item.key, item.on, self.now())

    def _hello(self, node: int, item: Hello) -> list[Effect]:
        return self.core.remote_snapshot(node, item.members, item.topics)

    def _lost(self, node: int, item: Lost) -> list[Effect]:
        out: list[Effect] = []
        for room, count in item.rooms:
            out += self.core.notice(missed_notice(count), room)
        return out


def missed_notice(count: int) -> str:
    """The notice that ``count`` messages from other servers may have been missed."""
    return f"*** notice: {count} message{'' if count == 1 else 's'} may have been missed"

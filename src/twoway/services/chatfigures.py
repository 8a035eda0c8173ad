"""The chat's figures: its I/O-side counters, what it reports to the metrics, ``/stats``.

:class:`ChatStats` counts what the chat's I/O side does (the core keeps its own counters in
``core.counters``); :func:`chat_figures` turns both, and the bus's state, into the flat
figures :meth:`Service.figures <twoway.net.service.Service.figures>` returns;
:class:`StatsAnswers` sends the ``/stats`` lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twoway.sansio.chat import ChatCore

if TYPE_CHECKING:
    from twoway.net.conn import Conn

__all__ = ["ChatStats", "StatsAnswers", "chat_figures"]


@dataclass(slots=True)
class ChatStats:
    """I/O-side counters of the chat (the core keeps its own in ``core.counters``)."""

    #: Lines written to clients: room lines (counted by the write groups) and replies.
    lines_out: int = 0
    flood_drops: int = 0
    flood_kicks: int = 0
    #: Notices sent to members that messages from other servers may have been missed.
    gap_notices: int = 0
    flood_slowed: int = 0


def chat_figures(core: ChatCore, stats: ChatStats, bus: object) -> dict[str, float]:
    """Members, rooms, history and traffic, and the state of ``bus`` if it links servers
    (it then has a ``stats`` dict)."""
    counters = core.counters
    out: dict[str, float] = {
        "chat_members": core.connection_count,
        "chat_rooms": len(core.rooms()),
        "chat_history_bytes": core.history_bytes,
        "chat_lines_received_total": counters.lines_in,
        "chat_messages_total": counters.messages,
        "chat_private_messages_total": counters.private_messages,
        "chat_commands_total": counters.commands,
        "chat_lines_sent_total": stats.lines_out,
        "chat_flood_drops_total": stats.flood_drops,
        "chat_flood_kicks_total": stats.flood_kicks,
        "chat_remote_messages_total": counters.remote_messages,
        "chat_gap_notices_total": stats.gap_notices,
    }
    bus_stats = getattr(bus, "stats", None)
    if isinstance(bus_stats, dict):  # a bus to other servers (Redis)
        out["bus_up"] = 1 if getattr(bus, "up", False) else 0
        out["bus_published_total"] = bus_stats.get("published", 0)
        out["bus_read_total"] = bus_stats.get("entries_read", 0)
        out["bus_dropped_total"] = bus_stats.get("dropped", 0)
        out["bus_reconnections_total"] = bus_stats.get("reconnections", 0)
        out["bus_gap_notices_total"] = bus_stats.get("gap_notices", 0)
        out["bus_buffered"] = getattr(bus, "buffered", 0)
    return out


class StatsAnswers:
    """``/stats`` answers: sent now, or once the figures are known (with ``--workers`` they
    come from every worker); the tasks waiting are kept until they are done."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: set[asyncio.Task[None]] = set()

    def send(self, conn: Conn, answer: list[str] | Awaitable[list[str]]) -> None:
        """Send ``answer``'s lines to ``conn``, now or once they are known."""
        if isinstance(answer, list):
            for text in answer:
                conn.send_line(text)
            return

        async def later(pending: Awaitable[list[str]]) -> None:
            lines = await pending
            if not conn.is_closing:  # the asker may have left meanwhile
                for text in lines:
                    conn.send_line(text)

        task = asyncio.get_running_loop().create_task(later(answer))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

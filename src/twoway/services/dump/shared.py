"""What the sinks of one ``twoway serve dump`` service share, made by the service and handed
to each :class:`~twoway.services.dump.sink.Sink`: the settings they follow
(:class:`SinkSettings`, with the ``--fsync`` policies), the figures they count into
(:class:`DiskFigures`) and the splice slots they take (:class:`SpliceSlots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from twoway.sansio.buckets import LATENCY_BOUNDS, Buckets

__all__ = ["FSYNC_POLICIES", "DiskFigures", "FsyncPolicy", "SinkSettings", "SpliceSlots"]

FsyncPolicy = Literal["never", "interval", "close", "always"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("never", "interval", "close", "always")


@dataclass(frozen=True, slots=True)
class SinkSettings:
    """What every sink of one service follows (see :class:`~twoway.services.dump.
    DumpService` for each)."""

    directory: Path
    fsync: FsyncPolicy
    max_bytes: int | None
    buffer_high: int
    buffer_low: int
    lines: bool


class DiskFigures:
    """What the sinks of one service count for the metrics, on the event loop only (a
    worker thread hands its timing back with the write's result): how long each fsync
    took, and the disk errors (a file not created, a write or sync that failed)."""

    __slots__ = ("disk_errors", "fsync")

    def __init__(self) -> None:
        self.fsync = Buckets(LATENCY_BOUNDS)
        self.disk_errors = 0


class SpliceSlots:
    """How many uploads may be spliced at once (``splice_max``): a sink takes a slot when
    its first data arrives and gives it back when its pump stops (or never starts)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        """A slot, if one is free."""
        if self.used < self.limit:
            self.used += 1
            return True
        return False

    def give_back(self) -> None:
        """Return a slot taken with :meth:`take`."""
        self.used -= 1

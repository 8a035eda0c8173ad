"""Records: small keyed documents by kind (``"account"``, ``"ban"``, ``"owner"``...).

The contract moderation is written against: read everything of a kind once at start-up, then
write through as things change. A write returns at once (a durable store queues it to its
writer thread); a reader on the event loop never waits for the disk.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"


class Records(Protocol):
    """Keyed JSON documents by kind; keys are unique within a kind."""

    def load(self, kind: str) -> dict[str, JSONValue]:
        """Every record of ``kind``, by key (a copy: changing it changes nothing stored)."""
        ...

    def put(self, kind: str, key: str, value: JSONValue) -> None:
        """Create or replace one record."""
        ...

    def delete(self, kind: str, key: str) -> None:
        """Remove one record; removing a missing one is not an error."""
        ...

    def close(self) -> None:
        """Finish the writes queued so far (the server is stopping); may block."""
        ...


class MemoryRecords:
    """:class:`Records` kept in memory for the life of the process."""

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, JSONValue]] = {}

    def load(self, kind: str) -> dict[str, JSONValue]:
        """Every record of ``kind``, by key."""
        return dict(self._kinds.get(kind, {}))

    def put(self, kind: str, key: str, value: JSONValue) -> None:
        """Create or replace one record."""
        self._kinds.setdefault(kind, {})[key] = value

    def delete(self, kind: str, key: str) -> None:
        """Remove one record, if it is there."""
        self._kinds.get(kind, {}).pop(key, None)

    def close(self) -> None:
        """Nothing to finish."""
